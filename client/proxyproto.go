package client

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/warren-tunnel/warren/proxyproto"
	"github.com/warren-tunnel/warren/session"
)

// proxyHeader returns the PROXY protocol header of version v for the
// public connection h describes, relayed to backend: Src is the public
// peer, Dst the public address it connected to.
//
// A server older than the stream header's local field sends no Dst; the
// header then names the address the client dialed, backend's remote
// address, which is what the backend would have seen as the destination
// without the header. A peer that does not parse (it always does from a
// warren server) makes the addresses unknown, "PROXY UNKNOWN" or family
// UNSPEC, so the backend falls back on the connection's own addresses
// rather than on made-up ones.
func proxyHeader(v proxyproto.Version, h session.Header, backend net.Conn) ([]byte, error) {
	src, _ := netip.ParseAddrPort(h.Peer)
	dst, err := netip.ParseAddrPort(h.Local)
	if err != nil {
		if a, ok := backend.RemoteAddr().(*net.TCPAddr); ok {
			dst = a.AddrPort()
		}
	}
	return proxyproto.Header{Version: v, Command: proxyproto.Proxy, Src: src, Dst: dst}.Append(nil)
}

// writeProxyHeader writes the PROXY protocol header svc asks for, if any,
// to backend, within timeout. It runs before the relay, so the header is
// the first byte the backend reads.
func writeProxyHeader(svc Service, h session.Header, backend net.Conn, timeout time.Duration) error {
	v, err := proxyproto.ParseVersion(svc.ProxyProtocol)
	if err != nil || v == 0 {
		return err // Validate took out unknown versions
	}
	b, err := proxyHeader(v, h, backend)
	if err != nil {
		return err
	}
	backend.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := backend.Write(b); err != nil {
		return fmt.Errorf("writing the PROXY %v header: %w", v, err)
	}
	return backend.SetWriteDeadline(time.Time{})
}
