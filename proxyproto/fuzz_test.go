package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzRead reads arbitrary bytes as a header. It must not panic; a header
// it accepts must be one Append can write, whose bytes Read takes back to
// the same Header; and Read must consume exactly the header, or nothing
// at all when there is none.
func FuzzRead(f *testing.F) {
	for _, h := range []Header{
		{Version: V1, Src: v4a, Dst: v4b},
		{Version: V1, Src: ffff, Dst: ffff},
		{Version: V1, Src: v4a, Dst: v6b},
		{Version: V1},
		{Version: V2, Src: v4a, Dst: v4b},
		{Version: V2, Src: v6a, Dst: v6b},
		{Version: V2},
		{Version: V2, Command: Local},
	} {
		b, err := h.Append(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append(b, "payload"...))
	}
	for _, s := range []string{
		"PROXY TCP6 ::ffff:192.168.0.1 ::ffff:192.168.0.11 56324 443\r\n",
		"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		sigHex + "21 11 0017 c0a80001 c0a8000b dc04 01bb 01 0002 6832 04 0003 000000",
		sigHex + "21 12 000c c0a80001 c0a8000b dc04 01bb",
		sigHex + "20 11 000c c0a80001 c0a8000b dc04 01bb",
	} {
		if strings.HasPrefix(s, sigHex) {
			f.Add(unhex(f, s))
		} else {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		h, err := Read(r)
		rest, _ := io.ReadAll(r)
		if err != nil {
			if h != nil {
				t.Fatalf("header %+v with error %v", *h, err)
			}
			if errors.Is(err, ErrNoHeader) && !bytes.Equal(rest, in) {
				t.Fatalf("%v, but consumed %d bytes", err, len(in)-len(rest))
			}
			return
		}
		b, err := h.Append(nil)
		if err != nil {
			t.Fatalf("Read gave %+v, which Append refuses: %v", *h, err)
		}
		h2, err := Read(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("Read(Append(%+v)) = %q: %v", *h, b, err)
		}
		if *h2 != *h {
			t.Fatalf("read %+v, wrote %q, read back %+v", *h, b, *h2)
		}
		// Read consumed exactly the header: reading the header alone
		// gives the same result.
		header := in[:len(in)-len(rest)]
		h3, err := Read(bufio.NewReader(bytes.NewReader(header)))
		if err != nil || *h3 != *h {
			t.Fatalf("the %d header bytes alone read as %+v, %v", len(header), h3, err)
		}
	})
}
