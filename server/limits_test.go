package server_test

import (
	"io"
	"net/netip"
	"testing"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
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

// TestTablesFullOfSilentConnections is finding 5 of issue 11: silent
// connections fill the per-IP handshake table (a NAT neighbour sharing the
// client's address) and the entry point's sniffing table. While they are
// young a real client and a real request are refused; once they are 3 s
// old on the server's clock (evictAfter) both get through, each dropping
// the oldest silent entry, long before the silent ones' own timeouts.
func TestTablesFullOfSilentConnections(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	clk := clocktest.New()
	cfg := domainServerConfig(w)
	cfg.Limits.HandshakeTimeout = time.Minute // real time: the silent ones outlive the test
	cfg.Limits.MaxHandshakesPerIP = 8
	cfg.Limits.SniffTimeout = time.Minute
	cfg.Limits.MaxSniffing = 8
	srv := w.StartServer(cfg, server.WithClock(clk))
	for range cfg.Limits.MaxHandshakesPerIP { // from 127.0.0.1, as the client
		silentHandshake(t, w, srv)
	}
	srv.WaitPending(cfg.Limits.MaxHandshakesPerIP)
	for range cfg.Limits.MaxSniffing {
		w.Dial(srv.EntryAddr("http")).Write([]byte("GET / HTTP/1.1\r\n"))
	}
	waitSniffing(t, srv, cfg.Limits.MaxSniffing)

	ccfg := w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "web", Target: httpBackend(w, "A"), Domains: []string{"a.office.example.com"}})
	ccfg.HandshakeTimeout = 2 * time.Second // a refused KCP handshake is noticed at its deadline
	cli := w.StartClient(ccfg)
	srv.Logs.WaitLine(t, "too many connections in their handshake; closing new ones", "limits.max_handshakes_per_ip")
	hc := w.HTTPClient(srv.EntryAddr("http"))
	if _, err := hc.Get("http://a.office.example.com/"); err == nil {
		t.Fatal("a request got through a sniffing table full of young connections")
	}

	clk.Advance(3 * time.Second) // the silent entries are old enough to go
	cli.WaitSession(1)           // after its retries
	srv.Logs.WaitLine(t, "too many connections in their handshake; dropping the oldest", "limits.max_handshakes_per_ip")
	domainGet(t, hc, "http://a.office.example.com/x", "", 200, "backend=A")
	srv.Logs.WaitLine(t, "too many connections that have not named their host yet; dropping the oldest")
	if n := srv.Sniffing(); n != cfg.Limits.MaxSniffing-1 {
		t.Errorf("%d connections sniffing, want %d: the silent ones but the one dropped", n, cfg.Limits.MaxSniffing-1)
	}
	if n := srv.Pending(); n != cfg.Limits.MaxHandshakesPerIP-1 {
		t.Errorf("%d handshakes pending, want %d: the silent ones but the one dropped", n, cfg.Limits.MaxHandshakesPerIP-1)
	}
}

// silentHandshake opens a tunnel connection from 127.0.0.1 that never
// completes its handshake; it is closed when the test ends.
func silentHandshake(t *testing.T, w *harness.World, srv *harness.Server) {
	t.Helper()
	if w.Kind != harness.KCP {
		srv.DialTunnel(netip.Addr{})
		return
	}
	s, err := kcp.DialWithOptions(srv.TunnelAddr(), nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte{0}) // kcp-go makes a session of the first datagram
	t.Cleanup(func() { s.Close() })
}
