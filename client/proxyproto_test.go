package client

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/warren-tunnel/warren/proxyproto"
	"github.com/warren-tunnel/warren/session"
)

// addrConn is a net.Conn that only has addresses.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c addrConn) LocalAddr() net.Addr  { return c.local }
func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func TestProxyHeader(t *testing.T) {
	backend := addrConn{
		local:  net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:40000")),
		remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:8080")),
	}
	ap := netip.MustParseAddrPort
	tests := []struct {
		name     string
		h        session.Header
		src, dst netip.AddrPort // zero: unknown
	}{
		{"ipv4", session.Header{Service: "s", Peer: "203.0.113.7:51234", Local: "198.51.100.1:443"},
			ap("203.0.113.7:51234"), ap("198.51.100.1:443")},
		{"ipv6", session.Header{Service: "s", Peer: "[2001:db8::7]:51234", Local: "[2001:db8::1]:443"},
			ap("[2001:db8::7]:51234"), ap("[2001:db8::1]:443")},
		// Sent mapped (one family per header), read back unmapped.
		{"ipv4 peer on an ipv6 listener", session.Header{Service: "s", Peer: "203.0.113.7:51234", Local: "[2001:db8::1]:443"},
			ap("203.0.113.7:51234"), ap("[2001:db8::1]:443")},
		{"no local, from an older server: the target stands in", session.Header{Service: "s", Peer: "203.0.113.7:51234"},
			ap("203.0.113.7:51234"), ap("127.0.0.1:8080")},
		{"peer unparsable: unknown", session.Header{Service: "s", Peer: "pipe", Local: "198.51.100.1:443"},
			netip.AddrPort{}, netip.AddrPort{}},
	}
	for _, tt := range tests {
		for _, v := range []proxyproto.Version{proxyproto.V1, proxyproto.V2} {
			t.Run(tt.name+"/"+v.String(), func(t *testing.T) {
				b, err := proxyHeader(v, tt.h, backend)
				if err != nil {
					t.Fatal(err)
				}
				r := bufio.NewReader(bytes.NewReader(append(b, "data"...)))
				got, err := proxyproto.Read(r)
				if err != nil {
					t.Fatalf("Read(%q): %v", b, err)
				}
				if got.Version != v || got.Command != proxyproto.Proxy || got.Src != tt.src || got.Dst != tt.dst {
					t.Fatalf("got %+v, want %v PROXY %v -> %v", got, v, tt.src, tt.dst)
				}
				if rest, _ := r.Peek(4); string(rest) != "data" {
					t.Fatalf("after the header: %q", rest)
				}
			})
		}
	}
}
