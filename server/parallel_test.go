package server_test

import (
	"errors"
	"testing"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/session"
)

// TestParallelConnections: a client with connections = 3 keeps three
// sessions that serve its any-port service on one port together, and the
// server spreads public connections evenly over them.
func TestParallelConnections(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	cfg := w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: target})
	cfg.Connections = 3
	cli := w.StartClient(cfg)
	cli.WaitUp(3)
	srv.WaitSessions(3)
	port := cli.Port("echo")
	for _, si := range srv.Sessions() {
		if got := si.Services[0].RemotePort; got != port {
			t.Fatalf("session %s serves port %d, the client's first session %d", si.ID, got, port)
		}
	}

	// Each connection echoes once before the next is dialled, so its
	// stream is open when the server picks a session for the next.
	addr := cli.PublicAddr("echo")
	const conns = 9
	for range conns {
		harness.EchoOn(t, w.Dial(addr))
	}
	counts := map[string]int{}
	for _, si := range srv.Sessions() {
		counts[si.ID] = si.Streams
	}
	lo, hi := conns, 0
	for _, n := range counts {
		lo, hi = min(lo, n), max(hi, n)
	}
	if len(counts) != 3 || hi-lo > 1 {
		t.Fatalf("streams per session %v: want %d connections spread evenly over 3 sessions", counts, conns)
	}
}

// TestParallelSessionsReplaced: a new client process with the same token
// replaces every parallel session of the old one, which stops.
func TestParallelSessionsReplaced(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	cfg := w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: w.Backend(harness.Echo)})
	cfg.Connections = 2
	old := w.StartClient(cfg)
	old.WaitUp(2)
	cfg.Services[0].RemotePort = old.Port("echo")
	nu := w.StartClient(cfg)
	err := old.WaitExit()
	var g *session.GoodbyeError
	if !errors.As(err, &g) || g.Code != session.CodeReplaced {
		t.Fatalf("old client ended with %v, want replaced", err)
	}
	nu.WaitUp(2)
	srv.WaitSessions(2)
	w.RoundTrip(nu.PublicAddr("echo"))
}
