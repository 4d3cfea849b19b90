package server_test

import (
	"errors"
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
// (within shutdown_timeout), refuses new connections meanwhile, and
// returns as soon as the transfer is done; its client hears it go.
func TestServerDrain(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	d := w.StartDownload(11)
	d.Server.Cancel()
	if why := d.Server.WaitNotReady(); why != "shutting down" {
		t.Fatalf("not ready because %q, want shutting down", why)
	}
	if c2, err := w.DialErr(d.Addr); err == nil {
		c2.Close()
		t.Error("a public connection was accepted while the server drained")
	}
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
