package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// unhex decodes hex with spaces in it, for readable byte vectors.
func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

const sigHex = "0d0a0d0a000d0a515549540a"

var (
	ffff = netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
	v4a  = netip.MustParseAddrPort("192.168.0.1:56324")
	v4b  = netip.MustParseAddrPort("192.168.0.11:443")
	v6a  = netip.MustParseAddrPort("[2001:db8::1]:40000")
	v6b  = netip.MustParseAddrPort("[2001:db8::2]:8443")
)

// TestRoundTrip writes headers and payload and reads them back as a
// backend would.
func TestRoundTrip(t *testing.T) {
	mapped := netip.MustParseAddrPort("[::ffff:203.0.113.7]:5000")
	cases := []struct {
		name string
		in   Header
		want Header // with the version of in; in itself if zero
	}{
		{name: "IPv4", in: Header{Src: v4a, Dst: v4b}},
		{name: "IPv6", in: Header{Src: v6a, Dst: v6b}},
		{name: "mixed", in: Header{Src: v4a, Dst: v6b}},
		{name: "mapped", in: Header{Src: mapped, Dst: v4b},
			want: Header{Src: netip.MustParseAddrPort("203.0.113.7:5000"), Dst: v4b}},
		{name: "extremes", in: Header{Src: ffff, Dst: netip.MustParseAddrPort("0.0.0.0:0")}},
		{name: "unknown", in: Header{}},
	}
	for _, v := range []Version{V1, V2} {
		for _, tc := range cases {
			t.Run(v.String()+" "+tc.name, func(t *testing.T) {
				tc.in.Version = v
				want := tc.in
				if tc.want != (Header{}) {
					want = tc.want
					want.Version = v
				}
				b, err := tc.in.Append(nil)
				if err != nil {
					t.Fatal(err)
				}
				r := bufio.NewReader(bytes.NewReader(append(b, "payload"...)))
				got, err := Read(r)
				if err != nil {
					t.Fatalf("Read(%q): %v", b, err)
				}
				if *got != want {
					t.Fatalf("got %+v, want %+v", *got, want)
				}
				if rest, _ := io.ReadAll(r); string(rest) != "payload" {
					t.Fatalf("after the header: %q", rest)
				}
			})
		}
	}
	t.Run("v2 LOCAL", func(t *testing.T) {
		b, _ := Header{Version: V2, Command: Local}.Append(nil)
		got, err := Read(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || *got != (Header{Version: V2, Command: Local}) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
}

func TestParseVersion(t *testing.T) {
	for _, v := range []Version{0, V1, V2} {
		got, err := ParseVersion(v.String())
		if err != nil || got != v {
			t.Errorf("ParseVersion(%q) = %v, %v", v.String(), got, err)
		}
	}
	for _, s := range []string{"1", "V1", "v3", "none"} {
		if _, err := ParseVersion(s); !errors.Is(err, ErrVersion) {
			t.Errorf("ParseVersion(%q): %v", s, err)
		}
	}
}
