package server_test

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
)

// behindLink starts a server with the given reconnect grace on srvClock
// and a client reaching it through a link, serving echo; the client waits
// for its reconnect backoff on cliClock, so it comes back only when the
// test advances that clock.
func behindLink(t *testing.T, w *harness.World, grace time.Duration, srvClock *clocktest.Clock) (srv *harness.Server, link *harness.Link, cli *harness.Client, cliClock *clocktest.Clock) {
	t.Helper()
	target := w.Backend(harness.Echo)
	cfg := w.ServerConfig()
	cfg.ReconnectGrace = grace
	srv = w.StartServer(cfg, server.WithClock(srvClock))
	link = w.Link(srv)
	ccfg := link.Through(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: target}))
	ccfg.HandshakeTimeout = 2 * time.Second
	cliClock = clocktest.New()
	cli = w.StartClient(ccfg, append(link.Options(), client.WithClock(cliClock))...)
	cli.WaitSession(1)
	return srv, link, cli, cliClock
}

// route returns the server's route for key, and whether it has one.
func route(srv *harness.Server, key string) (server.RouteInfo, bool) {
	for _, r := range srv.Routes() {
		if r.Key == key {
			return r, true
		}
	}
	return server.RouteInfo{}, false
}

// waitRoute waits until the route key satisfies ok (gone: ok gets the
// zero RouteInfo and false).
func waitRoute(srv *harness.Server, key, what string, ok func(server.RouteInfo, bool) bool) {
	srv.WaitFor("route "+key+" "+what, func() (bool, string) {
		r, found := route(srv, key)
		return ok(r, found), "route " + key + ": " + describe(r, found)
	})
}

func describe(r server.RouteInfo, found bool) string {
	if !found {
		return "none"
	}
	return strconv.Itoa(r.Sessions) + " sessions, held " + strconv.FormatBool(r.Held) + ", " + strconv.Itoa(r.Waiting) + " waiting"
}

// TestReconnectGrace: the client's connection drops and it cannot come
// back at once. Its port stays held: a public connection made meanwhile
// waits and is served when the client returns.
func TestReconnectGrace(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srvClock := clocktest.New()
	srv, link, cli, cliClock := behindLink(t, w, harness.WaitTimeout, srvClock)
	addr := cli.PublicAddr("echo")
	key := "port:" + strconv.Itoa(cli.Port("echo"))

	link.Kill()
	waitRoute(srv, key, "held", func(r server.RouteInfo, ok bool) bool { return ok && r.Held && r.Sessions == 0 })
	srv.WaitSessions(0)

	c := w.Dial(addr)
	msg := []byte("waited for the client")
	c.Write(msg)
	harness.CloseWrite(c)
	waitRoute(srv, key, "with a connection waiting", func(r server.RouteInfo, ok bool) bool { return ok && r.Waiting == 1 })

	link.Down(false)
	cli.WaitSessionOn(cliClock, 2)
	c.SetReadDeadline(time.Now().Add(harness.WaitTimeout))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("the waiting connection got %q, %v", got, err)
	}
}

// TestReconnectGraceEnds: a client that does not come back within the
// grace loses its port: waiting connections are closed, new ones refused;
// when it does come back it gets the port again.
func TestReconnectGraceEnds(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srvClock := clocktest.New()
	const grace = time.Second
	srv, link, cli, cliClock := behindLink(t, w, grace, srvClock)
	addr := cli.PublicAddr("echo")
	key := "port:" + strconv.Itoa(cli.Port("echo"))

	link.Kill()
	waitRoute(srv, key, "held", func(r server.RouteInfo, ok bool) bool { return ok && r.Held })
	c := w.Dial(addr)
	waitRoute(srv, key, "with a connection waiting", func(r server.RouteInfo, ok bool) bool { return ok && r.Waiting == 1 })
	harness.WaitTimer(t, srvClock, grace)
	srvClock.Advance(grace)
	waitRoute(srv, key, "released", func(_ server.RouteInfo, ok bool) bool { return !ok })
	if err := harness.IsClosed(c, harness.WaitTimeout); err != nil {
		t.Fatalf("the waiting connection is still open after the grace: %v", err)
	}
	if c2, err := w.DialErr(addr); err == nil {
		c2.Close()
		t.Fatal("the port still accepts connections after the grace")
	} else if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial after the grace: %v, want connection refused", err)
	}

	link.Down(false)
	cli.WaitSessionOn(cliClock, 2)
	w.RoundTrip(addr) // the client asked for the same port again
}
