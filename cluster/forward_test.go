package cluster

import (
	"bytes"
	"errors"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Key: "port:2222", Peer: "192.0.2.1:5000", Local: "10.0.0.1:2222"},
		{Key: "https:*.example.com", Peer: "[2001:db8::1]:443", Local: ""},
		{Key: "udp:5353", Peer: "192.0.2.1:5000", Local: "10.0.0.1:5353", Kind: KindDatagram},
	} {
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadHeader(bytes.NewReader(b))
		if err != nil || got != h {
			t.Fatalf("%+v: got %+v, %v", h, got, err)
		}
	}
	for _, bad := range [][]byte{
		{3, 0, 0},                    // version
		{2, 0, 0},                    // no kind
		{2, 0, 2, 7, 0},              // unknown kind
		{2, 0, 2, 0, 0},              // kind 0 is version 1's
		{1, 0xff, 0xff},              // too long
		{1, 0, 3, 0, 0, 0},           // no key
		{1, 0, 4, 1, 'k', 2, 0},      // cut short
		{1, 0, 5, 1, 'k', 1, 'x', 0}, // bad address
	} {
		if _, err := ReadHeader(bytes.NewReader(bad)); !errors.Is(err, ErrHeader) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// TestHeaderKindGated: a connection's header is version 1 as before, and
// a flow's is a version a server of the first cluster release refuses
// (it read version 1 only), so it never relays datagram chunks as bytes.
func TestHeaderKindGated(t *testing.T) {
	b, _ := Header{Key: "port:1"}.Encode()
	if b[0] != 1 {
		t.Fatalf("a connection's header is version %d, want 1", b[0])
	}
	b, _ = Header{Key: "udp:1", Kind: KindDatagram}.Encode()
	if b[0] == 1 {
		t.Fatal("a flow's header is version 1: an older server would take it for a connection")
	}
	if _, err := (Header{Key: "udp:1", Kind: 9}).Encode(); !errors.Is(err, ErrHeader) {
		t.Fatalf("unknown kind encoded: %v", err)
	}
}

// FuzzHeader: whatever a peer sends, ReadHeader returns a header that
// encodes back to the same bytes, or an error; never a panic.
func FuzzHeader(f *testing.F) {
	for _, h := range []Header{{Key: "port:1", Peer: "1.2.3.4:5", Local: "6.7.8.9:10"}, {Key: "http:a.example"}, {Key: "udp:1", Peer: "1.2.3.4:5", Kind: KindDatagram}} {
		b, _ := h.Encode()
		f.Add(b)
	}
	f.Add([]byte{1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		enc, err := h.Encode()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("round trip: %x -> %+v -> %x", b, h, enc)
		}
	})
}

// FuzzReply: a reply decodes or fails, never panics.
func FuzzReply(f *testing.F) {
	f.Add(encodeReply(true, "no session"))
	f.Add(encodeReply(false, ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		readReply(bytes.NewReader(b))
	})
}
