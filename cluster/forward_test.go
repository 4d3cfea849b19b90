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
		{2, 0, 0},                    // version
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

// FuzzHeader: whatever a peer sends, ReadHeader returns a header that
// encodes back to the same bytes, or an error; never a panic.
func FuzzHeader(f *testing.F) {
	for _, h := range []Header{{Key: "port:1", Peer: "1.2.3.4:5", Local: "6.7.8.9:10"}, {Key: "http:a.example"}} {
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
