package server_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

// TestServerDrain: a server told to stop lets an open transfer finish
// (within shutdown_timeout), refuses new connections meanwhile (once
// its public port has served its accept queue), and
// returns as soon as the transfer is done; its client hears it go.
func TestServerDrain(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	d := w.StartDownload(11)
	d.Server.Cancel()
	if why := d.Server.WaitNotReady(); why != "shutting down" {
		t.Fatalf("not ready because %q, want shutting down", why)
	}
	// The public port closes once its accept queue is empty.
	harness.Poll(t, "the public port refusing", func() (bool, string) {
		c2, err := w.DialErr(d.Addr)
		if err == nil {
			c2.Close()
			return false, "a public connection accepted"
		}
		return true, ""
	})
	d.Finish()
	select {
	case <-d.Server.Done():
	case <-time.After(harness.WaitTimeout):
		t.Fatal("the server did not stop after the transfer ended")
	}
	if err := d.Server.Err(); err != nil {
		t.Errorf("server Run: %v", err)
	}
	d.Client.WaitStatus("the server's goodbye", func(st client.Status) bool {
		var g *session.GoodbyeError
		return errors.As(st.LastError, &g) && g.Code == session.CodeShuttingDown
	})
}

// TestServerDrainTimeout: a connection that does not end is cut when
// shutdown_timeout runs out (on the server's clock), and the server stops
// then.
func TestServerDrainTimeout(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	hold := make(chan struct{})
	target := w.Backend(func(c net.Conn) { <-hold })
	defer close(hold)
	cfg := w.ServerConfig()
	cfg.ShutdownTimeout = 500 * time.Millisecond
	clk := clocktest.New()
	srv := w.StartServer(cfg, server.WithClock(clk))
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "idle", Target: target}))
	cli.WaitSession(1)
	c := w.Dial(cli.PublicAddr("idle"))
	c.Write([]byte("x"))
	srv.WaitStreams(1)

	srv.Cancel()
	harness.WaitTimer(t, clk, cfg.ShutdownTimeout)
	clk.Advance(cfg.ShutdownTimeout - time.Millisecond)
	select {
	case <-srv.Done():
		t.Fatalf("the server stopped before its shutdown_timeout %v with a connection open", cfg.ShutdownTimeout)
	default:
	}
	if err := harness.IsClosed(c, 10*time.Millisecond); err == nil {
		t.Fatal("the open connection was closed before the shutdown timeout")
	}
	clk.Advance(time.Millisecond)
	select {
	case <-srv.Done():
	case <-time.After(harness.WaitTimeout):
		t.Fatal("the server did not stop at its shutdown timeout")
	}
	if err := harness.IsClosed(c, harness.WaitTimeout); err != nil {
		t.Fatalf("the open connection was not closed: %v", err)
	}
}

// gatedListen is a ListenFunc whose listeners accept nothing until gate
// closes (their connections wait in the accept queue) and tell deadline
// when their deadline is set.
func gatedListen(listen server.ListenFunc, gate <-chan struct{}, deadline chan<- struct{}) server.ListenFunc {
	return func(network, address string) (net.Listener, error) {
		l, err := listen(network, address)
		if err != nil {
			return nil, err
		}
		return &gatedListener{Listener: l, gate: gate, deadline: deadline}, nil
	}
}

type gatedListener struct {
	net.Listener
	gate     <-chan struct{}
	deadline chan<- struct{}
}

func (g *gatedListener) Accept() (net.Conn, error) {
	<-g.gate
	return g.Listener.Accept()
}

func (g *gatedListener) SetDeadline(t time.Time) error {
	select {
	case g.deadline <- struct{}{}:
	default:
	}
	return g.Listener.(interface{ SetDeadline(time.Time) error }).SetDeadline(t)
}

// TestServerDrainServesQueue: connections a public port's accept queue
// holds when the server stops are served, not reset: shutdown stops the
// port's accept loop by its deadline, and the loop empties the queue
// before it closes the listener.
func TestServerDrainServesQueue(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	back := w.Backend(harness.Echo)
	gate, deadline := make(chan struct{}), make(chan struct{}, 1)
	srv := w.StartServer(w.ServerConfig(), server.WithListen(gatedListen(w.Public.Listen, gate, deadline)))
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: back}))
	cli.WaitSession(1)
	srv.WaitSessions(1)
	addr := cli.PublicAddr("echo")

	// Connections queue: the listener accepts nothing yet.
	const n = 20
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = w.Dial(addr)
		conns[i].Write([]byte("hello " + string(rune('a'+i))))
		harness.CloseWrite(conns[i])
	}
	srv.Cancel()
	select {
	case <-deadline:
	case <-time.After(harness.WaitTimeout):
		t.Fatal("shutdown did not stop the public port's accept loop by its deadline")
	}
	close(gate)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(harness.WaitTimeout))
		got, err := io.ReadAll(c)
		if want := "hello " + string(rune('a'+i)); err != nil || string(got) != want {
			t.Errorf("connection %d, queued at shutdown: %q, %v; want %q", i, got, err, want)
		}
	}
	<-srv.Done()
	if c, err := w.DialErr(addr); err == nil {
		c.Close()
		t.Error("the public port still accepts after shutdown")
	}
}
