package client_test

// A client of several servers at once (high availability), over the
// harness: in memory by default, over real sockets with -warren.tunnel.

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// byName starts n servers of a group and an echo backend, and returns the
// servers, a public port free at all, a resolver for the client, and the
// config of a client serving the backend there through the one entry
// "name:PORT" (PORT the servers' tunnel port), which hosts resolves as the
// test sets it.
func byName(w *harness.World, n int, name string) ([]*harness.Server, int, *harness.Hosts, client.Config) {
	srvs, port, cfg := echoGroup(w, n)
	cfg.Servers = []string{net.JoinHostPort(name, strconv.Itoa(tunnelPort(srvs)))}
	return srvs, port, w.Hosts(), cfg
}

// echoGroup starts n servers of a group and an echo backend, and returns
// the servers, a public port free at all of them, and the config of a
// client serving the backend on that port through every server.
func echoGroup(w *harness.World, n int) ([]*harness.Server, int, client.Config) {
	back := w.Backend(harness.Echo)
	srvs := w.StartGroup(w.GroupConfigs(n))
	port := w.PublicPort(n)
	return srvs, port, w.GroupClientConfig(srvs, harness.TokenOffice, client.Service{Name: "echo", Target: back, RemotePort: port})
}

// tunnelPort is the tunnel port of a group's servers.
func tunnelPort(srvs []*harness.Server) int {
	_, port, _ := net.SplitHostPort(srvs[0].TunnelAddr())
	p, _ := strconv.Atoi(port)
	return p
}

// waitStates waits until the client's servers satisfy ok, and returns them.
func waitStates(cli *harness.Client, what string, ok func([]client.ServerState) bool) []client.ServerState {
	return cli.WaitStatus(what, func(st client.Status) bool { return ok(st.Servers) }).Servers
}

// statesAre reports whether the servers' states are want, in order.
func statesAre(want ...string) func([]client.ServerState) bool {
	return func(ss []client.ServerState) bool {
		if len(ss) != len(want) {
			return false
		}
		for i, s := range ss {
			if s.State != want[i] {
				return false
			}
		}
		return true
	}
}

// TestServersEachServes: a client of three servers keeps a session to
// each, and a public connection to any of them reaches the backend,
// byte-exact.
func TestServersEachServes(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srvs, port, cfg := echoGroup(w, 3)
	cli := w.StartClient(cfg)
	ss := waitStates(cli, "three servers up", statesAre(admin.ServerUp, admin.ServerUp, admin.ServerUp))
	for i, s := range ss {
		if s.Server != srvs[i].TunnelAddr() || s.Address != srvs[i].TunnelAddr() || s.Up != 1 || !s.Held {
			t.Errorf("server %d: %+v", i, s)
		}
	}
	for i, s := range srvs {
		s.WaitSessions(1)
		w.Transfer(harness.PublicAddrAt(i, port), uint64(i), 1<<20)
	}
	if ok, why := cli.AdminSource().Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}
	st := cli.AdminSource().Status()
	if len(st.Servers) != 3 || st.Connections != 3 || st.Session == nil {
		t.Fatalf("status: %+v", st)
	}
	for i, s := range st.Servers {
		if s.Server != srvs[i].TunnelAddr() || s.State != admin.ServerUp || len(s.Sessions) != 1 || s.Sessions[0].Services[0].RemotePort != port {
			t.Errorf("status of server %d: %+v", i, s)
		}
	}
	for _, s := range srvs {
		harness.WaitMetric(t, cli.Metrics, 1, "warren_session_up", "server", s.TunnelAddr())
	}
}

// TestServersByName: a name that resolves to three addresses is three
// servers (resolve = "all", the default for servers); a name is resolved
// again when one of its servers reconnects, so an address added to it is
// served without a restart, and one that leaves it is dropped.
func TestServersByName(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srvs, port, hosts, cfg := byName(w, 3, "ha.test")
	tport := tunnelPort(srvs)
	hosts.Set("ha.test", harness.ServerIP(0), harness.ServerIP(1))
	cli := w.StartClient(cfg, client.WithResolver(hosts))
	ss := waitStates(cli, "two servers up", statesAre(admin.ServerUp, admin.ServerUp))
	for i, s := range ss {
		if want := "ha.test:" + strconv.Itoa(tport) + "@" + harness.ServerIP(i).String(); s.Server != want {
			t.Errorf("server %d is %q, want %q", i, s.Server, want)
		}
	}

	// The name gains the third address and loses the first; the client
	// learns it when a server of the name reconnects.
	hosts.Set("ha.test", harness.ServerIP(1), harness.ServerIP(2))
	srvs[1].Restart()
	name := func(i int) string { return "ha.test:" + strconv.Itoa(tport) + "@" + harness.ServerIP(i).String() }
	waitStates(cli, "the three up", func(ss []client.ServerState) bool {
		// The first's session stays up: leaving the name cuts nothing.
		return len(ss) == 3 && ss[0].Server == name(0) && ss[1].Server == name(1) && ss[2].Server == name(2) &&
			ss[0].State == admin.ServerUp && ss[1].State == admin.ServerUp && ss[2].State == admin.ServerUp
	})
	for i := 1; i < 3; i++ {
		w.Transfer(harness.PublicAddrAt(i, port), uint64(i), 64<<10)
	}
	// The session to the address that left the name is not cut (rule 4),
	// but when it ends the client does not come back.
	srvs[0].WaitSessions(1)
	srvs[0].Stop()
	waitStates(cli, "the first forgotten", func(ss []client.ServerState) bool {
		for _, s := range ss {
			if strings.HasSuffix(s.Server, "@"+harness.ServerIP(0).String()) {
				return false
			}
		}
		return len(ss) == 2
	})
}

// TestServerUnresolved: a name that does not resolve is tried again with
// backoff, not fatal, and served once it resolves.
func TestServerUnresolved(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	_, port, hosts, base := byName(w, 1, "late.test")
	for _, resolve := range []string{client.ResolveFirst, client.ResolveAll} {
		t.Run(resolve, func(t *testing.T) {
			hosts.Set("late.test")
			clk := clocktest.New()
			cfg := base
			cfg.Resolve = resolve
			cli := w.StartClient(cfg, client.WithResolver(hosts), client.WithClock(clk))
			want := admin.ServerRetrying
			if resolve == client.ResolveAll {
				want = admin.ServerUnresolved
			}
			ss := waitStates(cli, "unresolved", statesAre(want))
			if !strings.Contains(ss[0].LastError.Error(), "late.test") {
				t.Errorf("last error %v does not name the host", ss[0].LastError)
			}
			if ok, why := cli.AdminSource().Ready(); ok || !strings.Contains(why, "late.test") {
				t.Errorf("ready = %v, %q; want not ready, naming the host", ok, why)
			}
			hosts.Set("late.test", harness.ServerIP(0))
			cli.WaitSessionOn(clk, 1)
			w.RoundTrip(harness.PublicAddrAt(0, port))
			cli.Stop()
			if err := cli.Err(); err != nil {
				t.Fatalf("client: %v", err)
			}
		})
	}
}

// TestServersRefusals: a server that refuses the client (its token
// unknown there, during a rotation; or a claimed port taken there) is
// retried with backoff while the others serve, shown in status and
// /readyz; the client stops only when every server refuses it.
func TestServersRefusals(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	back := w.Backend(harness.Echo)
	cfgs := w.GroupConfigs(3)
	cfgs[1].Clients[0].Token = "rotated-token-0123456789abcdef" // office's token, changed on this one
	srvs := w.StartGroup(cfgs)
	port := w.PublicPort(3)
	// Another client holds the port on the third server.
	squat := w.StartClient(w.ClientConfig(srvs[2], harness.TokenOther, client.Service{Name: "squat", Target: back, RemotePort: port}))
	squat.WaitSession(1)

	clk := clocktest.New()
	cfg := w.GroupClientConfig(srvs, harness.TokenOffice, client.Service{Name: "echo", Target: back, RemotePort: port})
	cfg.MinServers = 2
	cli := w.StartClient(cfg, client.WithClock(clk))
	ss := waitStates(cli, "one up, two refusing", statesAre(admin.ServerUp, admin.ServerRefused, admin.ServerRefused))
	var rej *session.RejectError
	if !errors.As(ss[1].LastError, &rej) || rej.Code != session.CodeUnknownToken {
		t.Errorf("second server: %v, want unknown_token", ss[1].LastError)
	}
	if !errors.As(ss[2].LastError, &rej) || rej.Code != session.CodePortInUse {
		t.Errorf("third server: %v, want port_in_use", ss[2].LastError)
	}
	ok, why := cli.AdminSource().Ready()
	if ok || !strings.Contains(why, "1 of min_servers = 2") || !strings.Contains(why, "unknown token") || !strings.Contains(why, "held by client") {
		t.Errorf("ready = %v, %q; want not ready, with both refusals", ok, why)
	}
	w.RoundTrip(harness.PublicAddrAt(0, port))

	// The squatter leaves: the retry gets the third server.
	squat.Stop()
	cli.WaitStatusOn(clk, "two up", func(st client.Status) bool { return st.Up == 2 })
	w.RoundTrip(harness.PublicAddrAt(2, port))
	if ok, why := cli.AdminSource().Ready(); !ok {
		t.Errorf("not ready with two servers up: %s", why)
	}
	if err := cli.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestServersAllRefuse: a client every server refuses stops, with every
// server's reason.
func TestServersAllRefuse(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srvs := w.StartGroup(w.GroupConfigs(2))
	cfg := w.GroupClientConfig(srvs, "unknown-token-0123456789abcdef", client.Service{Name: "echo", Target: w.DeadAddr(), RemotePort: w.PublicPort(2)})
	cli := w.StartClient(cfg)
	err := cli.WaitExit()
	var rej *session.RejectError
	if !errors.As(err, &rej) || rej.Code != session.CodeUnknownToken {
		t.Fatalf("client stopped with %v, want unknown_token", err)
	}
	for _, s := range srvs {
		if !strings.Contains(err.Error(), s.TunnelAddr()+": ") {
			t.Errorf("error %q does not name server %s", err, s.TunnelAddr())
		}
	}
}

// TestMaxServers: with max_servers the client holds that many of the
// servers; one that goes away (it drains, then stays unreachable) is
// replaced by one it did not hold.
func TestMaxServers(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srvs, port, cfg := echoGroup(w, 3)
	clk := clocktest.New()
	cfg.MaxServers = 2
	cli := w.StartClient(cfg, client.WithClock(clk))
	held := func(ss []client.ServerState) (up []int, standby int) {
		for i, s := range ss {
			switch s.State {
			case admin.ServerUp:
				up = append(up, i)
			case admin.ServerStandby:
				standby = i
			}
		}
		return up, standby
	}
	ss := waitStates(cli, "two up, one standing by", func(ss []client.ServerState) bool {
		up, _ := held(ss)
		return len(ss) == 3 && len(up) == 2
	})
	up, standby := held(ss)
	// One of the two held goes away for good.
	gone := up[0]
	srvs[gone].Stop()
	cli.WaitStatusOn(clk, "the standby replaces it", func(st client.Status) bool {
		now, _ := held(st.Servers)
		return len(now) == 2 && now[0] != gone && now[1] != gone && st.Servers[standby].State == admin.ServerUp &&
			st.Servers[gone].State == admin.ServerStandby
	})
	for _, i := range []int{up[1], standby} {
		w.RoundTrip(harness.PublicAddrAt(i, port))
	}
	if n := srvs[standby].Sessions(); len(n) != 1 {
		t.Fatalf("standby server has %d sessions", len(n))
	}
}

// TestServersReload: a reload updates the services on the session to
// every server.
func TestServersReload(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srvs, _, cfg := echoGroup(w, 3)
	port2 := w.PublicPort(3)
	cli := w.StartClient(cfg)
	cli.WaitUp(3)
	cfg.Services = append(cfg.Services, client.Service{Name: "echo2", Target: cfg.Services[0].Target, RemotePort: port2})
	if err := cli.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	for i := range srvs {
		w.RoundTrip(harness.PublicAddrAt(i, port2))
	}
	if st := cli.Status(); st.Sessions != 3 || st.Up != 3 {
		t.Errorf("reload cost sessions: %+v", st)
	}
}

// oneOfTwoStopped starts two servers and a client of both on a manual
// clock, then stops server 0 (it drains), and returns once the client
// has only the session to server 1.
func oneOfTwoStopped(t *testing.T) (*harness.World, []*harness.Server, int, *clocktest.Clock, *harness.Client) {
	t.Helper()
	w := harness.NewWorld(t)
	srvs, port, cfg := echoGroup(w, 2)
	clk := clocktest.New()
	cli := w.StartClient(cfg, client.WithClock(clk))
	cli.WaitUp(2)
	srvs[0].WaitSessions(1) // the server has it too: a session it does not hold yet gets no drain notice
	srvs[0].Stop()
	cli.WaitUp(1)
	return w, srvs, port, clk, cli
}

// TestServerRestartedServedSoon: a server that was serving and comes back
// is reconnected to within the capped backoff (2 s), not the up to 30 s
// toward a server never seen.
func TestServerRestartedServedSoon(t *testing.T) {
	leaktest.Check(t)
	w, srvs, port, clk, cli := oneOfTwoStopped(t)
	// Pending: the RTT watch of the session left, and the backoff.
	const waits = 2
	// Ten attempts fail: uncapped, the backoff would reach 30 s by now.
	for range 10 {
		harness.Advance(t, clk, waits, 2*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), harness.WaitTimeout)
	defer cancel()
	if err := clk.WaitPending(ctx, waits); err != nil {
		t.Fatal(err)
	}
	srvs[0] = srvs[0].Again()
	// One capped wait, and it is back.
	clk.Advance(2 * time.Second)
	cli.WaitUp(2)
	w.RoundTrip(harness.PublicAddrAt(0, port))
}

// TestServersVerifiedByName: with a CA, each server of a name that
// resolves to several addresses is verified by the name, not by the
// address dialled; servers listed by address are verified by server_name,
// and without it by the address, which their certificates do not name.
// Real TLS: the harness's in-memory tunnel has none.
func TestServersVerifiedByName(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorldOf(t, harness.TCP)
	srvs, _, base := echoGroup(w, 3)
	// Each server's self-signed certificate (for the name "warren") is a
	// CA of the client's.
	var pems []byte
	for _, s := range srvs {
		pem, err := os.ReadFile(filepath.Join(s.Config.StateDir, "server.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, pem...)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pems, 0o600); err != nil {
		t.Fatal(err)
	}
	hosts := w.Hosts()
	hosts.Set("warren", harness.ServerIP(0), harness.ServerIP(1), harness.ServerIP(2))
	base.TLS = transport.ClientTLS{CA: ca}

	t.Run("by name", func(t *testing.T) {
		cfg := base
		cfg.Servers = []string{net.JoinHostPort("warren", strconv.Itoa(tunnelPort(srvs)))}
		cli := w.StartClient(cfg, client.WithResolver(hosts))
		cli.WaitUp(3)
		cli.Stop()
	})
	t.Run("by address with server_name", func(t *testing.T) {
		cfg := base
		cfg.TLS.ServerName = "warren"
		cli := w.StartClient(cfg)
		cli.WaitUp(3)
		cli.Stop()
	})
	t.Run("by address", func(t *testing.T) {
		cli := w.StartClient(base)
		err := cli.WaitExit()
		var herr x509.HostnameError
		if !errors.As(err, &herr) || !strings.Contains(err.Error(), "every server refused") {
			t.Fatalf("client stopped with %v, want a name mismatch at every server", err)
		}
	})
}

// TestServerDraining: a server that stops tells its clients it drains;
// the client shows it draining, does not count it ready, and with
// max_servers replaces it at once by one it did not hold, while the
// draining server's open connection finishes.
func TestServerDraining(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	back := w.Backend(func(c net.Conn) {
		if _, err := c.Write([]byte("x")); err != nil {
			return
		}
		select {
		case held <- struct{}{}:
		default:
		}
		<-hold
	})
	cfgs := w.GroupConfigs(3)
	for i := range cfgs {
		cfgs[i].ShutdownTimeout = harness.WaitTimeout
	}
	srvs := w.StartGroup(cfgs)
	port := w.PublicPort(3)
	cfg := w.GroupClientConfig(srvs, harness.TokenOffice, client.Service{Name: "svc", Target: back, RemotePort: port})
	cfg.MaxServers = 2
	cli := w.StartClient(cfg)
	ss := waitStates(cli, "two up", func(ss []client.ServerState) bool {
		n := 0
		for _, s := range ss {
			if s.State == admin.ServerUp {
				n++
			}
		}
		return len(ss) == 3 && n == 2
	})
	drain, standby := -1, -1
	for i, s := range ss {
		switch {
		case s.State == admin.ServerStandby:
			standby = i
		case drain < 0:
			drain = i
		}
	}
	srvs[drain].WaitSessions(1)
	c := w.Dial(harness.PublicAddrAt(drain, port))
	<-held // a connection open through the server that will drain
	srvs[drain].Cancel()
	cli.WaitStatus("the drained server replaced", func(st client.Status) bool {
		return st.Servers[drain].State == admin.ServerDraining && st.Servers[standby].State == admin.ServerUp
	})
	select {
	case <-srvs[drain].Done():
		t.Fatal("the draining server stopped with a connection open")
	default:
	}
	c2 := w.Dial(harness.PublicAddrAt(standby, port)) // the server held instead serves
	c2.SetReadDeadline(time.Now().Add(harness.WaitTimeout))
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		t.Fatalf("through the server held instead: %v", err)
	}
	close(hold)
	if err := harness.IsClosed(c, harness.WaitTimeout); err != nil {
		t.Fatal(err)
	}
	c.Close() // its last connection done, the server stops
	<-srvs[drain].Done()
	cli.WaitStatus("the drained server released", func(st client.Status) bool { return st.Servers[drain].State == admin.ServerStandby })
}

// TestDrainedServerReturnAfter: a draining server says when to come back
// (500 ms after its goodbye). The client's first attempt waits that long,
// plus up to half as much of jitter, where its backoff would wait at most
// 500 ms; and only the first: while the server is still down, it retries
// with its backoff, started over.
func TestDrainedServerReturnAfter(t *testing.T) {
	leaktest.Check(t)
	w, srvs, port, clk, cli := oneOfTwoStopped(t) // server 0 said it drains, then goodbye
	ctx, cancel := context.WithTimeout(context.Background(), harness.WaitTimeout)
	defer cancel()
	const back, jitter = 500 * time.Millisecond, 250 * time.Millisecond
	if err := clk.WaitTimerIn(ctx, back+1, back+jitter); err != nil {
		t.Fatalf("no reconnect timer of %v-%v after the drain notice: timers set for %v", back, back+jitter, clk.Durations())
	}
	pending := clk.Pending()

	clk.Advance(back + jitter) // the attempt: the server is down
	var gone *session.GoodbyeError
	cli.WaitStatus("the attempt after the notice refused", func(st client.Status) bool {
		err := st.Servers[0].LastError
		return err != nil && !errors.As(err, &gone)
	})
	if err := clk.WaitPending(ctx, pending); err != nil {
		t.Fatal(err)
	}
	for _, d := range clk.Durations() {
		if d > back {
			t.Fatalf("after the attempt the notice timed, a timer of %v (timers: %v): the notice was used again", d, clk.Durations())
		}
	}

	srvs[0] = srvs[0].Again()
	clk.Advance(back) // the backoff, started over
	cli.WaitUp(2)
	w.RoundTrip(harness.PublicAddrAt(0, port))
}
