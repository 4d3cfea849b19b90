package e2e

import (
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/impair"
	"github.com/warren-tunnel/warren/internal/leaktest"
	"github.com/warren-tunnel/warren/session"
)

// TestParallelConnections: a client with connections = 3 keeps three
// sessions that serve its any-port service on one port together, and the
// server spreads public connections evenly over them.
func TestParallelConnections(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		target := backend(t, echo)
		srv := startServer(t, serverConfig(t, kind))
		cfg := clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: target})
		cfg.Connections = 3
		cli := startClient(t, cfg)
		cli.waitUp(t, 3)
		srv.waitSessions(t, 3)
		port := cli.port(t, "echo")
		for _, si := range srv.Sessions() {
			if got := si.Services[0].RemotePort; got != port {
				t.Fatalf("session %s serves port %d, the client's first session %d", si.ID, got, port)
			}
		}

		// Each connection echoes once before the next is dialled, so its
		// stream is open when the server picks a session for the next.
		addr := cli.publicAddr(t, "echo")
		const conns = 9
		held := make([]*net.TCPConn, conns)
		for i := range held {
			held[i] = dialPublic(t, addr)
			echoOn(t, held[i])
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
	})
}

// TestParallelConnectionLost: when one of a client's parallel sessions is
// cut, the connections on the others carry on, new connections go to the
// sessions left, and the client brings the lost one back.
func TestParallelConnectionLost(t *testing.T) {
	leaktest.Check(t)
	target := backend(t, echo)
	srv := startServer(t, serverConfig(t, "tcp"))
	proxy, err := impair.NewTCPProxy(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	cfg := clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: target})
	cfg.Server = proxy.Addr()
	cfg.Connections = 2
	cli := startClient(t, cfg)
	cli.waitUp(t, 2)
	srv.waitSessions(t, 2)
	addr := cli.publicAddr(t, "echo")
	held := make([]*net.TCPConn, 4)
	for i := range held {
		held[i] = dialPublic(t, addr)
		echoOn(t, held[i])
	}

	if !proxy.CutOne() {
		t.Fatal("no connection through the proxy to cut")
	}
	// The two connections on the cut session end; the other two still
	// echo, and new connections are served meanwhile.
	alive := 0
	for _, c := range held {
		if err := tryEcho(c); err == nil {
			alive++
		}
	}
	if alive != 2 {
		t.Fatalf("%d of 4 connections still echo after one of two sessions was cut, want 2", alive)
	}
	roundTrip(t, addr)
	cli.waitSession(t, 3) // the lost one, established again
	cli.waitUp(t, 2)
	srv.waitSessions(t, 2)
	roundTrip(t, addr)
}

// TestParallelSessionsReplaced: a new client process with the same token
// replaces every parallel session of the old one, which stops.
func TestParallelSessionsReplaced(t *testing.T) {
	leaktest.Check(t)
	srv, old, cfg := startParallel(t, "echo")
	cfg.Services[0].RemotePort = old.port(t, "echo")
	nu := startClient(t, cfg)
	err := old.waitExit(t)
	var g *session.GoodbyeError
	if !errors.As(err, &g) || g.Code != session.CodeReplaced {
		t.Fatalf("old client ended with %v, want replaced", err)
	}
	nu.waitUp(t, 2)
	srv.waitSessions(t, 2)
	roundTrip(t, nu.publicAddr(t, "echo"))
}

// startParallel starts a tcp server and a client with connections = 2
// whose one service, name, is an echo backend, and waits for both
// sessions; it returns the client's config for more clients or reloads.
func startParallel(t *testing.T, name string) (*testServer, *testClient, client.Config) {
	t.Helper()
	srv := startServer(t, serverConfig(t, "tcp"))
	cfg := clientConfig(srv, tokenOffice, client.Service{Name: name, Target: backend(t, echo)})
	cfg.Connections = 2
	cli := startClient(t, cfg)
	cli.waitUp(t, 2)
	return srv, cli, cfg
}

// waitUp waits until n of the client's sessions are up at once.
func (c *testClient) waitUp(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		ch := c.Changed()
		st := c.Status()
		if st.Up == n {
			return
		}
		select {
		case <-ch:
		case <-c.done:
			t.Fatalf("client stopped with %d sessions up, want %d: %v", st.Up, n, c.runErr)
		case <-deadline:
			t.Fatalf("client has %d sessions up after %v, want %d; last error: %v", st.Up, waitTimeout, n, st.LastError)
		}
	}
}

// echoOn sends a byte on c, an echo service's connection, and reads it back.
func echoOn(t *testing.T, c net.Conn) {
	t.Helper()
	if err := tryEcho(c); err != nil {
		t.Fatal(err)
	}
}

func tryEcho(c net.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if b[0] != 'x' {
		return errors.New("echoed a different byte")
	}
	return nil
}

// TestParallelReload: a reload that adds an any-port service updates every
// parallel session, and they serve it on one port.
func TestParallelReload(t *testing.T) {
	leaktest.Check(t)
	srv, cli, cfg := startParallel(t, "a")
	srv.waitSessions(t, 2)
	cfg.Services = append(cfg.Services, client.Service{Name: "b", Target: cfg.Services[0].Target})
	if err := cli.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	ports := map[int]bool{}
	for _, si := range srv.Sessions() {
		if len(si.Services) != 2 {
			t.Fatalf("session %s serves %v after the reload, want a and b", si.ID, si.Services)
		}
		ports[si.Services[1].RemotePort] = true
	}
	if len(ports) != 1 {
		t.Fatalf("service b on ports %v, want one port for both sessions", ports)
	}
	roundTrip(t, cli.publicAddr(t, "b"))
}

// TestParallelRememberedPortTaken: the server restarts and the port it had
// picked for the client's any-port service is taken by then. Both
// parallel sessions are refused it; both ask for any port again instead
// of stopping the client, and end up on one new port.
func TestParallelRememberedPortTaken(t *testing.T) {
	leaktest.Check(t)
	srv, cli, _ := startParallel(t, "echo")
	port := cli.port(t, "echo")
	srv.stop()
	squat, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("taking the port the client had: %v", err)
	}
	defer squat.Close()
	cfg := srv.cfg
	cfg.Listen[0].Address = srv.addr()
	srv2 := startServer(t, cfg)
	cli.waitSession(t, 4) // both sessions back
	cli.waitUp(t, 2)
	srv2.waitSessions(t, 2)
	ports := map[int]bool{}
	for _, si := range srv2.Sessions() {
		ports[si.Services[0].RemotePort] = true
	}
	if len(ports) != 1 || ports[port] {
		t.Fatalf("sessions serve ports %v; want one new port (%d is taken)", ports, port)
	}
	roundTrip(t, cli.publicAddr(t, "echo"))
}
