package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/leaktest"
	"github.com/warren-tunnel/warren/proxyproto"
)

// proxyBackend is a backend that reads a PROXY protocol header, reports
// it, then echoes what follows it.
func proxyBackend(t *testing.T) (addr string, headers <-chan *proxyproto.Header) {
	ch := make(chan *proxyproto.Header, 8)
	addr = backend(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(waitTimeout))
		r := bufio.NewReader(c)
		h, err := proxyproto.Read(r)
		if err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		ch <- h
		io.Copy(c, r) // r holds what came after the header already
		c.(*net.TCPConn).CloseWrite()
	})
	return addr, ch
}

// TestProxyProtocol: a service with proxy_protocol makes the client send
// the backend a header of that version, naming the public peer and the
// public address it dialed, before the public side's bytes, which arrive
// intact.
func TestProxyProtocol(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		target1, headers1 := proxyBackend(t)
		target2, headers2 := proxyBackend(t)
		srv := startServer(t, serverConfig(t, kind))
		cli := startClient(t, clientConfig(srv, tokenOffice,
			client.Service{Name: "pp1", Target: target1, ProxyProtocol: "v1"},
			client.Service{Name: "pp2", Target: target2, ProxyProtocol: "v2"},
		))
		cli.waitSession(t, 1)

		for _, tc := range []struct {
			service string
			version proxyproto.Version
			headers <-chan *proxyproto.Header
		}{
			{"pp1", proxyproto.V1, headers1},
			{"pp2", proxyproto.V2, headers2},
		} {
			t.Run(tc.version.String(), func(t *testing.T) {
				public := cli.publicAddr(t, tc.service)
				c := dialPublic(t, public)
				c.SetDeadline(time.Now().Add(waitTimeout))
				// Sent at once, before the client has dialed the
				// backend: it must still come after the header.
				payload := bytes.Repeat([]byte("PROXY TCP4 not a header\r\n\x00\xff"), 4096)
				go func() {
					c.Write(payload)
					c.CloseWrite()
				}()
				got, err := io.ReadAll(c)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("echo: %d bytes back of %d sent, or different", len(got), len(payload))
				}

				var h *proxyproto.Header
				select {
				case h = <-tc.headers:
				case <-time.After(waitTimeout):
					t.Fatal("backend read no header")
				}
				wantSrc := c.LocalAddr().(*net.TCPAddr).AddrPort()
				wantDst := c.RemoteAddr().(*net.TCPAddr).AddrPort()
				if wantDst.String() != public {
					t.Fatalf("dialed %s, connected to %s", public, wantDst)
				}
				if h.Version != tc.version || h.Command != proxyproto.Proxy {
					t.Errorf("header %v %v, want %v PROXY", h.Version, h.Command, tc.version)
				}
				if h.Src != wantSrc {
					t.Errorf("header Src %v, want the public peer %v", h.Src, wantSrc)
				}
				if h.Dst != wantDst {
					t.Errorf("header Dst %v, want the public address %v", h.Dst, wantDst)
				}
			})
		}
	})
}
