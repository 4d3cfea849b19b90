package server_test

import (
	"io"
	"net/netip"
	"testing"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

// TestHandshakeLimitPerIP: past max_handshakes_per_ip, connections from
// that address are closed at once; other addresses are not affected.
func TestHandshakeLimitPerIP(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	if w.Kind == harness.KCP {
		t.Skip("dials the tunnel port raw: TCP and memory only")
	}
	cfg := w.ServerConfig()
	cfg.Limits.MaxHandshakesPerIP = 4
	srv := w.StartServer(cfg)
	from := netip.MustParseAddr("127.0.2.1")
	for range cfg.Limits.MaxHandshakesPerIP {
		srv.DialTunnel(from)
	}
	srv.WaitPending(cfg.Limits.MaxHandshakesPerIP)
	over := srv.DialTunnel(from)
	if err := harness.IsClosed(over, harness.WaitTimeout); err != nil {
		t.Fatalf("a connection over the per-IP limit was not closed: %v", err)
	}

	// Another address still gets its handshake, and a real client in.
	target := w.Backend(harness.Echo)
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: target}))
	cli.WaitSession(1)
	w.RoundTrip(cli.PublicAddr("echo"))
}

// TestHandshakeLimitDropsOldest: with every handshake slot held by silent
// connections, a real client still gets in: the oldest silent one is
// dropped to make room.
func TestHandshakeLimitDropsOldest(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	if w.Kind == harness.KCP {
		t.Skip("dials the tunnel port raw: TCP and memory only")
	}
	cfg := w.ServerConfig()
	cfg.Limits.MaxHandshakes = 8
	cfg.Limits.HandshakeTimeout = 2 * harness.WaitTimeout // the silent ones never time out here
	srv := w.StartServer(cfg)
	first := srv.DialTunnel(netip.MustParseAddr("127.0.5.1"))
	srv.WaitPending(1)
	for i := 1; i < cfg.Limits.MaxHandshakes; i++ {
		srv.DialTunnel(netip.AddrFrom4([4]byte{127, 0, 5, byte(i + 1)}))
		srv.WaitPending(i + 1)
	}
	target := w.Backend(harness.Echo)
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: target}))
	cli.WaitSession(1)
	w.RoundTrip(cli.PublicAddr("echo"))
	if err := harness.IsClosed(first, harness.WaitTimeout); err != nil {
		t.Fatalf("the oldest silent handshake was not dropped: %v", err)
	}
}

// TestMaxStreamsPerService: a service at limits.max_streams_per_service in
// its session refuses the next public connection, while another service of
// the same client still takes connections.
func TestMaxStreamsPerService(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	cfg := w.ServerConfig()
	cfg.Limits.MaxStreamsPerService = 2
	srv := w.StartServer(cfg)
	target := w.Backend(harness.Echo)
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "a", Target: target},
		client.Service{Name: "b", Target: target}))
	cli.WaitSession(1)
	for range cfg.Limits.MaxStreamsPerService { // held open, each proven by an echo
		c := w.Dial(cli.PublicAddr("a"))
		c.Write([]byte{1})
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	srv.WaitStreams(cfg.Limits.MaxStreamsPerService)
	over := w.Dial(cli.PublicAddr("a"))
	if err := harness.IsClosed(over, harness.WaitTimeout); err != nil {
		t.Fatalf("a connection over the per-service limit was not closed: %v", err)
	}
	srv.Logs.WaitLine(t, "limits.max_streams_per_service", "service=a")
	w.RoundTrip(cli.PublicAddr("b"))
}
