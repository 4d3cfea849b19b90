package client_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

// startParallel starts a server and a client with connections = 2 whose
// one service, name, is an echo backend, and waits for both sessions; it
// returns the client's config for more clients or reloads.
func startParallel(t *testing.T, w *harness.World, name string, opts ...client.Option) (*harness.Server, *harness.Client, client.Config) {
	t.Helper()
	srv := w.StartServer(w.ServerConfig())
	cfg := w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: name, Target: w.Backend(harness.Echo)})
	cfg.Connections = 2
	cli := w.StartClient(cfg, opts...)
	cli.WaitUp(2)
	return srv, cli, cfg
}

// TestParallelConnectionLost: when one of a client's parallel sessions is
// cut, the connections on the others carry on, new connections go to the
// sessions left, and the client brings the lost one back.
func TestParallelConnectionLost(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	if w.Kind == harness.KCP {
		t.Skip("cuts one connection of a link: KCP has none to cut")
	}
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	link := w.Link(srv)
	cfg := link.Through(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: target}))
	cfg.Connections = 2
	cli := w.StartClient(cfg, link.Options()...)
	cli.WaitUp(2)
	srv.WaitSessions(2)
	addr := cli.PublicAddr("echo")
	held := make([]net.Conn, 4)
	for i := range held {
		held[i] = w.Dial(addr)
		if err := tryEcho(held[i]); err != nil {
			t.Fatal(err)
		}
	}

	if !link.CutOne() {
		t.Fatal("no connection through the link to cut")
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
	w.RoundTrip(addr)
	cli.WaitSession(3) // the lost one, established again
	cli.WaitUp(2)
	srv.WaitSessions(2)
	w.RoundTrip(addr)
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
	w := harness.NewWorld(t)
	srv, cli, cfg := startParallel(t, w, "a")
	srv.WaitSessions(2)
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
	w.RoundTrip(cli.PublicAddr("b"))
}

// TestParallelRememberedPortTaken: the server restarts and the port it had
// picked for the client's any-port service is taken by then. Both
// parallel sessions are refused it; both ask for any port again instead
// of stopping the client, and end up on one new port.
func TestParallelRememberedPortTaken(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv, cli, _ := startParallel(t, w, "echo")
	port := cli.Port("echo")
	srv.Stop()
	squat, err := w.Public.Listen("tcp", harness.PublicAddr(port))
	if err != nil {
		t.Fatalf("taking the port the client had: %v", err)
	}
	defer squat.Close()
	srv2 := srv.Again()
	cli.WaitSession(4) // both sessions back
	cli.WaitUp(2)
	srv2.WaitSessions(2)
	ports := map[int]bool{}
	for _, si := range srv2.Sessions() {
		ports[si.Services[0].RemotePort] = true
	}
	if len(ports) != 1 || ports[port] {
		t.Fatalf("sessions serve ports %v; want one new port (%d is taken)", ports, port)
	}
	w.RoundTrip(cli.PublicAddr("echo"))
}
