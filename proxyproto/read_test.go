package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRead reads headers other senders may write that Append does not.
func TestRead(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want Header
	}{
		{"v1 UNKNOWN with addresses, the specification's longest",
			[]byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			Header{Version: V1}},
		{"v1 TCP6 with dotted mapped addresses",
			[]byte("PROXY TCP6 ::ffff:192.168.0.1 ::FFFF:192.168.0.11 56324 443\r\n"),
			Header{Version: V1, Src: v4a, Dst: v4b}},
		{"v1 TCP6 upper case hex", []byte("PROXY TCP6 2001:DB8::1 2001:db8::2 40000 8443\r\n"),
			Header{Version: V1, Src: v6a, Dst: v6b}},
		{"v2 TCP4 with TLVs", unhex(t, sigHex+"21 11 0017 c0a80001 c0a8000b dc04 01bb 01 0002 6832 04 0003 000000"),
			Header{Version: V2, Src: v4a, Dst: v4b}},
		{"v2 TCP6 with mapped addresses", unhex(t, sigHex+"21 21 0024 00000000000000000000ffffc0a80001 00000000000000000000ffffc0a8000b dc04 01bb"),
			Header{Version: V2, Src: v4a, Dst: v4b}},
		{"v2 UDP4, undecoded", unhex(t, sigHex+"21 12 000c c0a80001 c0a8000b dc04 01bb"), Header{Version: V2}},
		{"v2 UDP6, undecoded", unhex(t, sigHex+"21 22 0024"+strings.Repeat("00", 36)), Header{Version: V2}},
		{"v2 Unix stream, undecoded", unhex(t, sigHex+"21 31 00d8"+strings.Repeat("00", 216)), Header{Version: V2}},
		{"v2 UNSPEC with TLVs", unhex(t, sigHex+"21 00 0003 04 0000"), Header{Version: V2}},
		{"v2 LOCAL with addresses", unhex(t, sigHex+"20 11 000c c0a80001 c0a8000b dc04 01bb"), Header{Version: V2, Command: Local}},
		{"v2 LOCAL with unknown family", unhex(t, sigHex+"20 ff 0001 00"), Header{Version: V2, Command: Local}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReader(io.MultiReader(bytes.NewReader(tc.in), strings.NewReader("payload")))
			got, err := Read(r)
			if err != nil {
				t.Fatal(err)
			}
			if *got != tc.want {
				t.Fatalf("got %+v, want %+v", *got, tc.want)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "payload" {
				t.Fatalf("after the header: %q", rest)
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	v2 := func(s string) string { return string(unhex(t, sigHex+s)) }
	cases := []struct {
		name string
		in   string
		err  error
	}{
		{"empty", "", io.EOF},
		{"HTTP", "GET / HTTP/1.1\r\n\r\n", ErrNoHeader},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ErrNoHeader},
		{"lower case", "proxy TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", ErrNoHeader},
		{"v2 signature differs", "\r\n\r\n\x00\r\nQUIT\r", ErrNoHeader},
		{"v1 signature cut", "PROX", io.ErrUnexpectedEOF},
		{"v2 signature cut", "\r\n\r\n\x00", io.ErrUnexpectedEOF},

		{"v1 without CR", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n", ErrMalformed},
		{"v1 without line end", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443", io.ErrUnexpectedEOF},
		{"v1 longer than 107 bytes", "PROXY UNKNOWN " + strings.Repeat("x", 93) + "\r\n", ErrMalformed},
		{"v1 no space", "PROXYTCP4 192.168.0.1 192.168.0.11 56324 443\r\n", ErrMalformed},
		{"v1 two spaces", "PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n", ErrMalformed},
		{"v1 trailing space", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n", ErrMalformed},
		{"v1 unknown protocol", "PROXY UDP4 192.168.0.1 192.168.0.11 56324 443\r\n", ErrMalformed},
		{"v1 protocol lower case", "PROXY tcp4 192.168.0.1 192.168.0.11 56324 443\r\n", ErrMalformed},
		{"v1 UNKNOWN glued", "PROXY UNKNOWNX\r\n", ErrMalformed},
		{"v1 missing port", "PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n", ErrMalformed},
		{"v1 extra field", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n", ErrMalformed},
		{"v1 TCP4 with IPv6", "PROXY TCP4 2001:db8::1 192.168.0.11 56324 443\r\n", ErrMalformed},
		{"v1 TCP6 with IPv4", "PROXY TCP6 192.168.0.1 2001:db8::1 56324 443\r\n", ErrMalformed},
		{"v1 TCP4 with mapped", "PROXY TCP4 ::ffff:192.168.0.1 192.168.0.11 56324 443\r\n", ErrMalformed},
		{"v1 leading zero in address", "PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n", ErrMalformed},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 2001:db8::1 56324 443\r\n", ErrMalformed},
		{"v1 leading zero in port", "PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n", ErrMalformed},
		{"v1 port too large", "PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n", ErrMalformed},
		{"v1 port signed", "PROXY TCP4 192.168.0.1 192.168.0.11 +1 443\r\n", ErrMalformed},
		{"v1 port empty", "PROXY TCP4 192.168.0.1 192.168.0.11  443\r\n", ErrMalformed},
		{"v1 port hex", "PROXY TCP4 192.168.0.1 192.168.0.11 0x10 443\r\n", ErrMalformed},

		{"v2 version 1", v2("11 11 000c c0a80001 c0a8000b dc04 01bb"), ErrMalformed},
		{"v2 version 3", v2("31 11 000c c0a80001 c0a8000b dc04 01bb"), ErrMalformed},
		{"v2 command 2", v2("22 11 000c c0a80001 c0a8000b dc04 01bb"), ErrMalformed},
		{"v2 unknown protocol", v2("21 13 000c c0a80001 c0a8000b dc04 01bb"), ErrMalformed},
		{"v2 unknown family", v2("21 41 000c c0a80001 c0a8000b dc04 01bb"), ErrMalformed},
		{"v2 TCP4 length short", v2("21 11 000b c0a80001 c0a8000b dc04 01"), ErrMalformed},
		{"v2 TCP6 length of TCP4", v2("21 21 000c c0a80001 c0a8000b dc04 01bb"), ErrMalformed},
		{"v2 Unix length short", v2("21 31 0024" + strings.Repeat("00", 36)), ErrMalformed},
		{"v2 cut in fixed part", v2("21 11 00"), io.ErrUnexpectedEOF},
		{"v2 cut in addresses", v2("21 11 000c c0a80001 c0a8"), io.ErrUnexpectedEOF},
		{"v2 cut in TLVs", v2("21 11 0010 c0a80001 c0a8000b dc04 01bb 04 00"), io.ErrUnexpectedEOF},
		{"v2 LOCAL cut", v2("20 00 0010 00"), io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReader(strings.NewReader(tc.in))
			h, err := Read(r)
			if !errors.Is(err, tc.err) || h != nil {
				t.Fatalf("got %+v, %v; want %v", h, err, tc.err)
			}
			if errors.Is(err, ErrNoHeader) {
				if rest, _ := io.ReadAll(r); string(rest) != tc.in {
					t.Fatalf("consumed %d bytes", len(tc.in)-len(rest))
				}
			}
		})
	}
}

// TestReadOverConn plays the backend on a connection whose sender, like
// the warren client, writes the header and then waits for the backend to
// speak first (as with SMTP): Read must return without more bytes.
func TestReadOverConn(t *testing.T) {
	for _, v := range []Version{V1, V2} {
		t.Run(v.String(), func(t *testing.T) {
			client, backend := net.Pipe()
			defer client.Close()
			defer backend.Close()
			backend.SetDeadline(time.Now().Add(5 * time.Second))
			want := Header{Version: v, Src: v6a, Dst: v6b}
			go func() {
				b, _ := want.Append(nil)
				client.Write(b)
				greeting := make([]byte, 3)
				io.ReadFull(client, greeting)
				client.Write(append([]byte("EHLO "), greeting...))
			}()
			r := bufio.NewReader(backend)
			got, err := Read(r)
			if err != nil || *got != want {
				t.Fatalf("got %+v, %v", got, err)
			}
			backend.Write([]byte("220"))
			line := make([]byte, 8)
			if _, err := io.ReadFull(r, line); err != nil || string(line) != "EHLO 220" {
				t.Fatalf("after the header: %q, %v", line, err)
			}
		})
	}
}
