package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

// tlsHelloStart is the start of a TLS ClientHello record, cut short: a
// client that begins a handshake and never finishes it.
var tlsHelloStart = []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}

// TestHostileTunnelInput sends garbage, an HTTP request and a TLS hello
// that never finishes to the tunnel port while a real client transfers
// data. Each intruder is dropped within the handshake deadline and the real
// session never notices.
func TestHostileTunnelInput(t *testing.T) {
	leaktest.Check(t)
	inputs := []struct {
		name string
		data []byte
	}{
		{"garbage", nil}, // random bytes
		{"http request", []byte("GET / HTTP/1.1\r\nHost: tunnel.example.com\r\n\r\n")},
		{"unfinished TLS hello", tlsHelloStart},
		{"silence", []byte{}},
	}
	forEachTransport(t, func(t *testing.T, kind string) {
		target := backend(t, echo)
		cfg := serverConfig(t, kind)
		cfg.Limits.HandshakeTimeout = time.Second
		srv := startServer(t, cfg)
		cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: target}))
		cli.waitSession(t, 1)

		// A transfer runs through the real session the whole time.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		addr := cli.publicAddr(t, "echo")
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := echoOnce(addr); err != nil {
					t.Errorf("real session: %v", err)
					return
				}
			}
		})

		for _, in := range inputs {
			t.Run(in.name, func(t *testing.T) {
				data := in.data
				if data == nil {
					data = make([]byte, 4096)
					rand.Read(data)
				}
				start := time.Now()
				failed := harness.Metric(t, srv.metrics, "warren_handshake_failures_total")
				if kind == "tcp" {
					intrudeTCP(t, srv.addr(), data)
				} else {
					intrudeKCP(t, srv.addr(), data)
				}
				// The real session is up: a failed handshake is the
				// intruder's.
				harness.WaitMetric(t, srv.metrics, failed+1, "warren_handshake_failures_total")
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("intruder held on for %v with a 1 s handshake deadline", d)
				}
			})
		}
		if kind == "kcp" {
			t.Run("udp garbage", func(t *testing.T) { udpGarbage(t, srv.addr()) })
		}

		close(stop)
		wg.Wait()
		if st := cli.Status(); st.Sessions != 1 || !st.Connected {
			t.Fatalf("the real session was disturbed: %+v", st)
		}
		srv.waitSessions(t, 1)
	})
}

// intrudeTCP connects, sends data and waits for the server to hang up.
func intrudeTCP(t *testing.T, addr string, data []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(data)
	if err := isClosed(c, 10*time.Second); err != nil {
		t.Fatalf("server kept the connection: %v", err)
	}
}

// intrudeKCP opens a raw KCP session (no TLS) and sends data over it. KCP
// has no FIN, so the server dropping it shows only as a failed handshake
// in its metrics; the caller checks that. Until then the server may send
// nothing but a TLS alert.
func intrudeKCP(t *testing.T, addr string, data []byte) {
	s, err := kcp.DialWithOptions(addr, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.SetStreamMode(true)
	if len(data) == 0 {
		data = []byte{0} // the server sees a KCP peer only once it sends
	}
	s.Write(data)
	t.Cleanup(func() { s.Close() })
	go func() {
		var got bytes.Buffer
		io.Copy(&got, s)
		if got.Len() > 0 && got.Bytes()[0] != 0x15 { // 0x15: a TLS alert record
			t.Errorf("server answered an unauthenticated peer with %q", got.Bytes())
		}
	}()
}

// udpGarbage fires random datagrams at the KCP port from many source
// ports; they must not break the server (the caller checks the real
// session afterwards).
func udpGarbage(t *testing.T, addr string) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1200)
	for range 50 {
		c, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			rand.Read(b)
			c.Write(b[:24+int(b[0])*4])
		}
		c.Close()
	}
	io.Discard.Write(b)
}
