package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := Auth{MAC: []byte{1, 2, 3}, Instance: "i", Services: []Service{{Name: "ssh", RemotePort: 22}}}
	if err := writeFrame(&buf, typeAuth, in); err != nil {
		t.Fatal(err)
	}
	typ, payload, err := readFrame(&buf, 1024)
	if err != nil || typ != typeAuth {
		t.Fatalf("readFrame = %d, %v", typ, err)
	}
	var out Auth
	if err := decodeFrame(typ, payload, &out); err != nil {
		t.Fatal(err)
	}
	if out.Instance != "i" || len(out.Services) != 1 || out.Services[0].RemotePort != 22 {
		t.Fatalf("got %+v", out)
	}
}

func TestReadFrameErrors(t *testing.T) {
	frame := func(ver, typ byte, n uint32, payload string) []byte {
		b := []byte{ver, typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[2:], n)
		return append(b, payload...)
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{1, 2, 0}, io.ErrUnexpectedEOF},
		{"other version", frame(9, typeAuth, 2, "{}"), ErrVersion},
		{"version zero", frame(0, typeAuth, 2, "{}"), ErrVersion},
		{"over the cap", frame(1, typeAuth, 1025, ""), ErrProtocol},
		{"huge length", frame(1, typeAuth, 0xffffffff, ""), ErrProtocol},
		{"payload cut short", frame(1, typeAuth, 10, "{}"), io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readFrame(bytes.NewReader(tc.in), 1024)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeFrameMalformed(t *testing.T) {
	var a Auth
	err := decodeFrame(typeAuth, []byte(`{"mac": 5}`), &a)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want ErrProtocol", err)
	}
}

// FuzzReadFrame: any bytes give a frame or an error, never a panic or an
// allocation beyond the cap; a frame that decodes re-encodes to itself.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	writeFrame(&buf, typeChallenge, Challenge{Version: 1, Nonce: make([]byte, 32)})
	f.Add(buf.Bytes())
	buf.Reset()
	writeFrame(&buf, typeAuth, Auth{Services: []Service{{Name: "a", Domains: []string{"x.example"}}}})
	f.Add(buf.Bytes())
	f.Add([]byte{1, 5, 0, 0, 0, 2, '{', '}'})
	f.Add([]byte{1, 7, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		typ, payload, err := readFrame(bytes.NewReader(in), 4096)
		if err != nil {
			return
		}
		if len(payload) > 4096 {
			t.Fatalf("payload of %d bytes passed a 4096 cap", len(payload))
		}
		msgs := []any{&ClientHello{}, &Challenge{}, &Auth{}, &Welcome{}, &Reject{}, &Ping{}, &Pong{}, &Goodbye{}}
		for _, m := range msgs {
			if decodeFrame(typ, payload, m) != nil {
				continue
			}
			var out bytes.Buffer
			if err := writeFrame(&out, typ, m); err != nil {
				t.Fatalf("re-encoding %T: %v", m, err)
			}
		}
	})
}

func TestHeaderRoundTrip(t *testing.T) {
	long := func(c byte) string { return string(bytes.Repeat([]byte{c}, 255)) }
	cases := []struct {
		name string
		h    Header
	}{
		{"typical", Header{Service: "ssh", Peer: "203.0.113.7:51234", Local: "198.51.100.1:2222"}},
		{"ipv6", Header{Service: "web", Peer: "[2001:db8::1]:443", Local: "[2001:db8::2]:8443"}},
		{"no local", Header{Service: "ssh", Peer: "203.0.113.7:51234"}},
		{"no peer", Header{Service: "x", Local: "198.51.100.1:80"}},
		{"service only", Header{Service: "x"}},
		{"longest", Header{Service: long('s'), Peer: long('p'), Local: long('l')}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.h.encode()
			if err != nil {
				t.Fatal(err)
			}
			r := bytes.NewReader(append(b, "rest"...))
			got, err := readHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.h {
				t.Fatalf("got %+v", got)
			}
			if r.Len() != len("rest") {
				t.Fatal("readHeader read past the header")
			}
		})
	}
	if _, err := (Header{}).encode(); err == nil {
		t.Fatal("empty service encoded")
	}
	if _, err := (Header{Service: string(make([]byte, 256))}).encode(); err == nil {
		t.Fatal("256-byte service encoded")
	}
	if _, err := (Header{Service: "x", Local: string(make([]byte, 256))}).encode(); err == nil {
		t.Fatal("256-byte local encoded")
	}
}

// TestHeaderWire pins the payload layout, the two-field form older servers
// send, and what is rejected.
func TestHeaderWire(t *testing.T) {
	ok := []struct {
		name string
		in   []byte
		want Header
	}{
		{"three fields", []byte("\x01\x00\x0a\x03ssh\x03p:1\x01l"), Header{Service: "ssh", Peer: "p:1", Local: "l"}},
		{"empty local", []byte("\x01\x00\x09\x03ssh\x03p:1\x00"), Header{Service: "ssh", Peer: "p:1"}},
		{"two fields, from an older server", []byte("\x01\x00\x08\x03ssh\x03p:1"), Header{Service: "ssh", Peer: "p:1"}},
		{"two fields, empty peer", []byte("\x01\x00\x05\x03ssh\x00"), Header{Service: "ssh"}},
		{"udp flow (protocol.md 12.4)", []byte("\x01\x00\x29\x03dns\x10203.0.113.7:5353\x0f198.51.100.1:53\x03udp"),
			Header{Service: "dns", Peer: "203.0.113.7:5353", Local: "198.51.100.1:53", Kind: KindDatagram}},
		{"empty kind", []byte("\x01\x00\x0b\x03ssh\x03p:1\x01l\x00"), Header{Service: "ssh", Peer: "p:1", Local: "l"}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readHeader(bytes.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if b, _ := (Header{Service: "ssh", Peer: "p:1", Local: "l"}).encode(); !bytes.Equal(b, ok[0].in) {
		t.Fatalf("encode: %q, want %q", b, ok[0].in)
	}
	if b, _ := ok[4].want.encode(); !bytes.Equal(b, ok[4].in) {
		t.Fatalf("encode a flow's header: %q, want %q", b, ok[4].in)
	}
	if b, _ := (Header{Service: "ssh", Peer: "p:1"}).encode(); !bytes.Equal(b, ok[1].in) {
		t.Fatalf("encode without local: %q, want %q (the local field is always written)", b, ok[1].in)
	}

	bad := []struct {
		name string
		in   []byte
	}{
		{"service only", []byte("\x01\x00\x04\x03ssh")},
		{"empty service", []byte("\x01\x00\x03\x00\x00\x00")},
		{"peer overruns", []byte("\x01\x00\x06\x03ssh\x03p")},
		{"local overruns", []byte("\x01\x00\x0a\x03ssh\x03p:1\x02l")},
		{"stray byte after local", []byte("\x01\x00\x0b\x03ssh\x03p:1\x01lX")},
		{"stray bytes after local", []byte("\x01\x00\x0b\x03ssh\x03p:1\x00\x01x")},
		{"too long", append([]byte{1, 0x04, 0x01}, make([]byte, 1025)...)},
		{"unknown kind", []byte("\x01\x00\x0f\x03ssh\x03p:1\x01l\x04sctp")},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			h, err := readHeader(bytes.NewReader(tc.in))
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %+v, %v; want ErrProtocol", h, err)
			}
		})
	}
}

// FuzzHeader checks that whatever readHeader accepts encodes back to a
// header that reads the same, and to the very input bytes unless they were
// the two-field form (which encode writes with an empty local field).
func FuzzHeader(f *testing.F) {
	b, _ := Header{Service: "ssh", Peer: "1.2.3.4:5", Local: "6.7.8.9:10"}.encode()
	f.Add(b)
	f.Add([]byte("\x01\x00\x0c\x03ssh\x071.2.3.4"))
	f.Add([]byte{1, 0, 2, 0, 0})
	f.Add([]byte{1, 0, 3, 1, 'x', 0})
	f.Add([]byte{1, 0xff, 0xff})
	b, _ = Header{Service: "dns", Peer: "1.2.3.4:5", Local: "6.7.8.9:53", Kind: KindDatagram}.encode()
	f.Add(b)
	b, _ = Header{Target: "db.internal:5432"}.encode()
	f.Add(b)
	b, _ = Header{Kind: KindDatagram, Target: "10.0.0.53:53"}.encode()
	f.Add(b)
	f.Add([]byte("\x01\x00\x05\x01x\x00\x00\x00"))
	f.Add([]byte("\x01\x00\x06\x01x\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := readHeader(r)
		if err != nil {
			return
		}
		consumed := in[:len(in)-r.Len()]
		enc, err := h.encode()
		if err != nil {
			t.Fatalf("decoded header %+v does not encode: %v", h, err)
		}
		again, err := readHeader(bytes.NewReader(enc))
		if err != nil || again != h {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", h, again, err)
		}
		if bytes.Equal(enc, consumed) {
			return
		}
		// Only the two-field form may differ (enc is it plus an empty
		// local field, one byte longer), and the four-field form with an
		// empty kind (enc is it less that byte).
		legacy := append([]byte(nil), enc[:len(enc)-1]...)
		binary.BigEndian.PutUint16(legacy[1:], uint16(len(legacy)-headerPrefixLen))
		emptyKind := append(append([]byte(nil), enc...), 0)
		binary.BigEndian.PutUint16(emptyKind[1:], uint16(len(emptyKind)-headerPrefixLen))
		switch {
		case h.Local == "" && h.Kind == "" && bytes.Equal(legacy, consumed):
		case h.Kind == "" && bytes.Equal(emptyKind, consumed):
		default:
			t.Fatalf("re-encoding differs: %x vs %x", enc, consumed)
		}
	})
}

// FuzzDialReply checks that whatever readDialReply accepts encodes back to
// the very bytes it read.
func FuzzDialReply(f *testing.F) {
	f.Add(encodeDialReply(DialOK, "10.0.0.5:5432"))
	f.Add(encodeDialReply(DialRefused, "not allowed"))
	f.Add(encodeDialReply(DialFailed, ""))
	f.Add([]byte{1, 3, 0, 0})
	f.Add([]byte{2, 0, 0, 0})
	f.Add([]byte{1, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		status, msg, err := readDialReply(r)
		if err != nil {
			return
		}
		consumed := in[:len(in)-r.Len()]
		if enc := encodeDialReply(status, msg); !bytes.Equal(enc, consumed) {
			t.Fatalf("re-encoding differs: %x vs %x", enc, consumed)
		}
	})
}

// TestDialHeader: a dial stream's header carries its kind (field 4, as a
// UDP flow's does) and target (field 5), and the forms that mix a service
// with a target, or leave the target out, are refused.
func TestDialHeader(t *testing.T) {
	for _, h := range []Header{
		{Target: "[fd00::1]:5432"},
		{Kind: KindStream, Target: "db.internal:5432"},
		{Kind: KindDatagram, Target: "10.0.0.53:53"},
	} {
		b, err := h.encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := readHeader(bytes.NewReader(b))
		if err != nil || got != h || !got.Dial() {
			t.Fatalf("dial header %+v read back as %+v, %v", h, got, err)
		}
		if want := map[bool]string{true: "udp", false: "tcp"}[h.Kind == KindDatagram]; got.Network() != want {
			t.Errorf("%+v: Network() = %q, want %q", h, got.Network(), want)
		}
	}
	for _, bad := range []Header{{Service: "x", Target: "a:1"}, {Kind: KindStream}, {}} {
		if _, err := bad.encode(); err == nil {
			t.Errorf("%+v encoded", bad)
		}
	}
	for name, in := range map[string]string{
		"kind alone":       "\x01\x00\x08\x00\x00\x00\x03tcp\x00",
		"empty target":     "\x01\x00\x06\x01x\x00\x00\x00\x00",
		"service and dial": "\x01\x00\x0c\x01x\x00\x00\x03tcp\x03a:1",
		"unknown kind":     "\x01\x00\x0b\x00\x00\x00\x03sct\x03a:1",
	} {
		if h, err := readHeader(strings.NewReader(in)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %+v, %v; want ErrProtocol", name, h, err)
		}
	}
}

// chunks builds a data-stream direction from parts: []byte is a data chunk,
// "end" an end chunk, "abort:reason" an abort.
func chunks(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		var h [chunkHeaderLen]byte
		switch p := p.(type) {
		case []byte:
			putChunkHeader(h[:], chunkData, len(p))
			b = append(append(b, h[:]...), p...)
		case string:
			if p == "end" {
				putChunkHeader(h[:], chunkEnd, 0)
				b = append(b, h[:]...)
			} else {
				reason := p[len("abort:"):]
				putChunkHeader(h[:], chunkAbort, len(reason))
				b = append(append(b, h[:]...), reason...)
			}
		}
	}
	return b
}

// decodeAll runs the decoder over in, offered in pieces of the given sizes
// (cycled), and returns the payload and the terminal error.
func decodeAll(in []byte, sizes []int) ([]byte, error) {
	var d decoder
	var out []byte
	for i := 0; ; i++ {
		size := len(in)
		if len(sizes) > 0 {
			size = max(1, sizes[i%len(sizes)])
		}
		piece := in[:min(size, len(in))]
		for len(piece) > 0 {
			data, n, err := d.feed(piece)
			out = append(out, data...)
			piece = piece[n:]
			in = in[n:]
			if err != nil {
				if len(piece) > 0 || len(in) > 0 {
					_, _, err = d.feed(in)
				}
				return out, err
			}
		}
		if len(in) == 0 {
			return out, nil // needs more input
		}
	}
}

func TestDecoder(t *testing.T) {
	cases := []struct {
		name    string
		in      []byte
		payload string
		want    error // io.EOF, *AbortError (any), ErrProtocol, or nil (incomplete)
	}{
		{"data then end", chunks([]byte("hello "), []byte("world"), "end"), "hello world", io.EOF},
		{"end only", chunks("end"), "", io.EOF},
		{"abort with reason", chunks([]byte("x"), "abort:dial refused"), "x", &AbortError{Reason: "dial refused"}},
		{"abort without reason", chunks("abort:"), "", &AbortError{Reason: "no reason given"}},
		{"incomplete", chunks([]byte("abc"))[:5], "a", nil},
		{"zero-length data", []byte{0, 0, 0, 0}, "", ErrProtocol},
		{"end with length", []byte{1, 0, 0, 1, 'x'}, "", ErrProtocol},
		{"unknown kind", []byte{7, 0, 0, 0}, "", ErrProtocol},
		{"abort reason too long", []byte{2, 0, 4, 1}, "", ErrProtocol},
		{"bytes after end", append(chunks("end"), 0), "", ErrProtocol},
	}
	for _, tc := range cases {
		for _, sizes := range [][]int{nil, {1}, {3, 1, 2}} {
			payload, err := decodeAll(tc.in, sizes)
			if string(payload) != tc.payload {
				t.Errorf("%s %v: payload %q, want %q", tc.name, sizes, payload, tc.payload)
			}
			var ab *AbortError
			switch want := tc.want.(type) {
			case *AbortError:
				if !errors.As(err, &ab) || ab.Reason != want.Reason {
					t.Errorf("%s %v: err %v, want %v", tc.name, sizes, err, want)
				}
			default:
				if !errors.Is(err, want) || (want == nil && err != nil) {
					t.Errorf("%s %v: err %v, want %v", tc.name, sizes, err, want)
				}
			}
		}
	}
}

// FuzzDecoder: how the bytes are split must not change what is decoded.
func FuzzDecoder(f *testing.F) {
	f.Add(chunks([]byte("hello"), "end"), []byte{1})
	f.Add(chunks([]byte("a"), []byte("bc"), "abort:no"), []byte{2, 5})
	f.Add([]byte{0, 0, 0, 3, 1, 2}, []byte{})
	f.Fuzz(func(t *testing.T, in []byte, splits []byte) {
		whole, wholeErr := decodeAll(in, nil)
		sizes := make([]int, len(splits))
		for i, s := range splits {
			sizes[i] = int(s)
		}
		split, splitErr := decodeAll(in, sizes)
		if !bytes.Equal(whole, split) {
			t.Fatalf("payload differs by split: %x vs %x", whole, split)
		}
		if (wholeErr == nil) != (splitErr == nil) || (wholeErr != nil && wholeErr.Error() != splitErr.Error()) {
			t.Fatalf("end differs by split: %v vs %v", wholeErr, splitErr)
		}
	})
}

// TestProofVector pins the MAC construction to the test vector published
// in docs/protocol.md (section 12.2).
func TestProofVector(t *testing.T) {
	nonce := make([]byte, 32)
	binding := make([]byte, 32)
	for i := range 32 {
		nonce[i] = byte(i)
		binding[i] = byte(32 + i)
	}
	token := []byte("example-token-0123456789")
	cases := []struct {
		name    string
		binding []byte
		want    string
	}{
		{"tls", binding, "e8895df05e8d7b4c1c7178f6bb8d8865638412ea8462e1d7112c4dc939beaf0a"},
		{"plaintext", nil, "c33e76ff726038ed9a4017a237cf514aa50e45a55d7b98196605ac3710a59fab"},
	}
	for _, tc := range cases {
		if got := fmt.Sprintf("%x", proof(token, nonce, tc.binding)); got != tc.want {
			t.Errorf("%s: proof = %s, docs/protocol.md says %s", tc.name, got, tc.want)
		}
	}
}
