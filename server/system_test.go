package server_test

// The server's policy, run over the harness: in memory by default, over
// real sockets with -warren.tunnel=tcp or kcp. (Moved from e2e, where
// they ran over both real transports.)

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

// TestSystemPair runs one tunnel over the in-memory edges and over real
// TCP+TLS sockets: the twin and the real thing answer alike.
func TestSystemPair(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range []string{harness.Memory, harness.TCP} {
		t.Run(kind, func(t *testing.T) {
			w := harness.NewWorldOf(t, kind)
			target := w.Backend(harness.Echo)
			srv := w.StartServer(w.ServerConfig())
			cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: target}))
			cli.WaitSession(1)
			w.RoundTrip(cli.PublicAddr("echo"))
			srv.WaitSessions(1)
		})
	}
}

// TestRejections: the server refuses bad claims with a reason the client
// reports, and the client gives up instead of retrying.
func TestRejections(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target := w.Backend(harness.Echo)
	cfg := w.ServerConfig()
	cfg.Clients[1].Ports = []server.PortRange{{Lo: 20000, Hi: 20010}}
	srv := w.StartServer(cfg)

	holder := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "held", Target: target}))
	holder.WaitSession(1)
	foreign, err := w.Public.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	foreignPort := foreign.Addr().(*net.TCPAddr).Port

	cases := []struct {
		name    string
		token   string
		svc     client.Service
		code    string
		message []string
	}{
		{"wrong token", "not-a-token-the-server-knows", client.Service{Name: "x", Target: target}, session.CodeUnknownToken, []string{"auth rejected: unknown token"}},
		{"port not allowed", harness.TokenOther, client.Service{Name: "x", Target: target, RemotePort: 20011}, session.CodePortNotAllowed, []string{"port not allowed", "remote_port 20011", "20000-20010"}},
		{"port in use by another process", harness.TokenOffice, client.Service{Name: "x", Target: target, RemotePort: foreignPort}, session.CodePortInUse, []string{"port in use", "address already in use"}},
		{"domain not allowed", harness.TokenOffice, client.Service{Name: "x", Target: target, Domains: []string{"evil.example.com"}}, session.CodeDomainNotAllowed, []string{"domain not allowed", "evil.example.com"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := w.StartClient(w.ClientConfig(srv, tc.token, tc.svc))
			err := c.WaitExit()
			rej := wantRejected(t, err, tc.code, tc.message...)
			harness.WaitMetric(t, srv.Metrics, 1, "warren_handshake_failures_total", "reason", rej.Code)
		})
	}
	if len(srv.Sessions()) != 1 {
		t.Errorf("server has %d sessions, want only the holder's", len(srv.Sessions()))
	}
}

// wantRejected fails t unless err is a rejection with code whose message
// names every one of msgs; it returns the rejection.
func wantRejected(t *testing.T, err error, code string, msgs ...string) *session.RejectError {
	t.Helper()
	var rej *session.RejectError
	if !errors.As(err, &rej) || rej.Code != code {
		t.Fatalf("client ended with %v, want rejection %s", err, code)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("client error %q lacks %q", err, m)
		}
	}
	return rej
}

// TestPortHeldByAnotherClient: a second client cannot take a port that
// another client holds, and learns who holds it.
func TestPortHeldByAnotherClient(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	holder := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "held", Target: target}))
	port := holder.WaitSession(1).Session.Services[0].RemotePort

	c := w.StartClient(w.ClientConfig(srv, harness.TokenOther, client.Service{Name: "x", Target: target, RemotePort: port}))
	wantRejected(t, c.WaitExit(), session.CodePortInUse, `held by client "office"`)
	if holder.Status().Sessions != 1 || !holder.Status().Connected {
		t.Fatal("the holder was disturbed")
	}
}

// TestClientRestart: a client that stops releases its ports; started
// again, it gets them back and serves.
func TestClientRestart(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	first := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "svc", Target: target}))
	port := first.WaitSession(1).Session.Services[0].RemotePort
	addr := first.PublicAddr("svc")
	w.RoundTrip(addr)
	first.Stop()
	srv.WaitSessions(0)
	if c, err := w.DialErr(addr); err == nil {
		c.Close()
		t.Fatal("public port still open after its client left")
	}

	second := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "svc", Target: target, RemotePort: port}))
	second.WaitSession(1)
	w.RoundTrip(second.PublicAddr("svc"))
}

// TestServerRestart: the client notices the server go (it says goodbye)
// and come back, and reconnects by itself; its port comes back.
func TestServerRestart(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "svc", Target: target}))
	cli.WaitSession(1)
	addr := cli.PublicAddr("svc")
	w.RoundTrip(addr)

	srv.Stop()
	cli.WaitStatus("the server's goodbye", func(st client.Status) bool {
		var g *session.GoodbyeError
		return errors.As(st.LastError, &g) && g.Code == session.CodeShuttingDown && g.Peer == "server"
	})
	srv2 := srv.Again()
	cli.WaitSession(2)
	if got := cli.PublicAddr("svc"); got != addr {
		t.Fatalf("the service is on %s after the restart, was on %s", got, addr)
	}
	w.RoundTrip(addr)
	srv2.WaitSessions(1)
}

// TestNewSessionReplacesOld: a second client with the same token and port
// takes over (the first was probably dead); the first is told and gives up.
func TestNewSessionReplacesOld(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	old := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "svc", Target: target}))
	port := old.WaitSession(1).Session.Services[0].RemotePort
	srv.WaitSessions(1) // the server holds the claim: a new session replaces it, not races it

	nu := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "svc", Target: target, RemotePort: port}))
	nu.WaitSession(1)
	err := old.WaitExit()
	var g *session.GoodbyeError
	if !errors.As(err, &g) || g.Code != session.CodeReplaced {
		t.Fatalf("old client ended with %v, want replaced", err)
	}
	w.RoundTrip(nu.PublicAddr("svc"))
	srv.WaitSessions(1)
}
