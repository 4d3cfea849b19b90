package proxyproto

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// TestAppend checks exact bytes: the specification's examples where it
// gives them, a header HAProxy wrote, and the mapping rules.
func TestAppend(t *testing.T) {
	cases := []struct {
		name string
		h    Header
		want string // text for version 1, hex for version 2
	}{
		{"v1 TCP4, the specification's example", Header{Version: V1, Src: v4a, Dst: v4b},
			"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"},
		{"v1 TCP6, the specification's longest", Header{Version: V1, Src: ffff, Dst: ffff},
			"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"},
		{"v1 TCP6", Header{Version: V1, Src: v6a, Dst: v6b},
			"PROXY TCP6 2001:db8::1 2001:db8::2 40000 8443\r\n"},
		{"v1 unknown", Header{Version: V1}, "PROXY UNKNOWN\r\n"},
		{"v1 one address unknown", Header{Version: V1, Src: v4a}, "PROXY UNKNOWN\r\n"},
		{"v1 both mapped, written as IPv4", Header{Version: V1,
			Src: netip.MustParseAddrPort("[::ffff:192.168.0.1]:56324"),
			Dst: netip.MustParseAddrPort("[::ffff:192.168.0.11]:443")},
			"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"},
		{"v1 mixed, IPv4 mapped in hex", Header{Version: V1, Src: netip.MustParseAddrPort("192.0.2.1:1"), Dst: v6b},
			"PROXY TCP6 ::ffff:c000:201 2001:db8::2 1 8443\r\n"},
		{"v1 zone dropped", Header{Version: V1, Src: netip.MustParseAddrPort("[fe80::1%eth0]:1"), Dst: v6b},
			"PROXY TCP6 fe80::1 2001:db8::2 1 8443\r\n"},
		{"v1 ports 0", Header{Version: V1, Src: netip.MustParseAddrPort("0.0.0.0:0"), Dst: netip.MustParseAddrPort("0.0.0.0:0")},
			"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"},

		{"v2 TCP4, as HAProxy wrote it", Header{Version: V2,
			Src: netip.MustParseAddrPort("172.19.0.1:42578"), Dst: netip.MustParseAddrPort("172.19.0.3:80")},
			sigHex + "21 11 000c ac130001 ac130003 a652 0050"},
		{"v2 TCP6", Header{Version: V2, Src: v6a, Dst: v6b},
			sigHex + "21 21 0024 20010db8000000000000000000000001 20010db8000000000000000000000002 9c40 20fb"},
		{"v2 both mapped, written as IPv4", Header{Version: V2,
			Src: netip.MustParseAddrPort("[::ffff:192.168.0.1]:56324"), Dst: v4b},
			sigHex + "21 11 000c c0a80001 c0a8000b dc04 01bb"},
		{"v2 mixed, IPv4 mapped", Header{Version: V2, Src: v4a, Dst: v6b},
			sigHex + "21 21 0024 00000000000000000000ffffc0a80001 20010db8000000000000000000000002 dc04 20fb"},
		{"v2 unknown", Header{Version: V2}, sigHex + "21 00 0000"},
		{"v2 LOCAL", Header{Version: V2, Command: Local}, sigHex + "20 00 0000"},
		{"v2 LOCAL drops addresses", Header{Version: V2, Command: Local, Src: v4a, Dst: v4b}, sigHex + "20 00 0000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := []byte(tc.want)
			if tc.h.Version == V2 {
				want = unhex(t, tc.want)
			}
			got, err := tc.h.Append([]byte("prefix"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Fatalf("got  %q\nwant %q", got, want)
			}
			if tc.h.Version == V1 && len(want) > maxV1 {
				t.Fatalf("%d bytes, more than %d", len(want), maxV1)
			}
		})
	}
}

func TestAppendInvalid(t *testing.T) {
	cases := []struct {
		name string
		h    Header
		err  error
	}{
		{"no version", Header{Src: v4a, Dst: v4b}, ErrVersion},
		{"version 3", Header{Version: 3, Src: v4a, Dst: v4b}, ErrVersion},
		{"v1 LOCAL", Header{Version: V1, Command: Local}, ErrCommand},
		{"unknown command", Header{Version: V2, Command: 7}, ErrCommand},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.h.Append([]byte("x"))
			if !errors.Is(err, tc.err) || string(b) != "x" {
				t.Fatalf("got %q, %v; want %v", b, err, tc.err)
			}
		})
	}
}
