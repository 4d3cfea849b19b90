package server_test

// UDP services over the harness: in memory by default, over real sockets
// with -warren.tunnel=tcp or kcp. The flow table's rules (udp.go), one
// test or more each.

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
)

// exchange sends b from c and fails the test unless the same bytes come
// back within a few resends.
func exchange(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := harness.ExchangeEcho(c, b, 500*time.Millisecond, 20); err != nil {
		t.Fatalf("no answer to a %d-byte datagram: %v", len(b), err)
	}
}

// Rules 1 and 5: datagrams from two sources are two flows, each answered
// on its own; 0-byte datagrams pass as 0-byte ones; each source's flow
// ends with the route.
func TestUDPFlows(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, harness.UDPService("echo", w.UDPEcho())))
	cli.WaitSession(1)
	addr := cli.UDPPublicAddr("echo")
	key := "udp:" + strconv.Itoa(cli.Port("echo"))
	a, b := w.DialUDP(addr), w.DialUDP(addr)
	for _, size := range []int{0, 1, 1200, 8192, 0} {
		exchange(t, a, bytes.Repeat([]byte{'a'}, size))
		exchange(t, b, bytes.Repeat([]byte{'b'}, size))
	}
	srv.WaitFlows(key, 2)
	st := cli.Status()
	if g := st.Session.Services[0]; !g.IsUDP() || g.UDP == nil || g.UDP.MaxDatagram != server.MaxUDPDatagram {
		t.Fatalf("granted %+v", g)
	}
	cli.Stop() // the route goes with the client's goodbye: every flow ends
	srv.WaitFlows(key, 0)
	harness.WaitMetric(t, srv.Metrics, 10, "warren_udp_datagrams_total", "service", "echo", "direction", "in")
	harness.WaitMetric(t, srv.Metrics, 10, "warren_udp_datagrams_total", "service", "echo", "direction", "out")
}

// Rule 4: a datagram beyond max_datagram is dropped and counted; one at
// the limit passes.
func TestUDPTooLarge(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	svc := harness.UDPService("echo", w.UDPEcho())
	svc.MaxDatagram = 1000
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, svc))
	cli.WaitSession(1)
	c := w.DialUDP(cli.UDPPublicAddr("echo"))
	exchange(t, c, make([]byte, 1000))
	c.Write(make([]byte, 1001))
	harness.WaitMetric(t, srv.Metrics, 1, "warren_udp_drops_total", "service", "echo", "reason", metrics.DropTooLarge)
	exchange(t, c, []byte("still served"))
}

// Rule 5 and the client's side: a target that does not exist answers
// with ICMP unreachable; the client ends the flow and counts it, and the
// server's flow goes with it.
func TestUDPUnreachableTarget(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, harness.UDPService("gone", w.UDPDeadAddr())))
	cli.WaitSession(1)
	key := "udp:" + strconv.Itoa(cli.Port("gone"))
	c := w.DialUDP(cli.UDPPublicAddr("gone"))
	stop := resend(c, "anyone?")
	harness.WaitMetric(t, cli.Metrics, 1, "warren_udp_drops_total", "service", "gone", "reason", metrics.DropUnreachable)
	stop()
	srv.WaitFlows(key, 0)
	// The session is unharmed: the next datagram makes a new flow.
	stop = resend(c, "anyone now?")
	harness.WaitMetric(t, cli.Metrics, 2, "warren_udp_drops_total", "service", "gone", "reason", metrics.DropUnreachable)
	stop()
	if st := cli.Status(); st.Sessions != 1 || !st.Connected {
		t.Fatalf("client status %+v", st)
	}
}

// resend sends msg on c now and every 200 ms until stop: a datagram may be
// lost (a loaded machine, a queue full), and the test waits on what its
// arrival causes, not on the datagram.
func resend(c net.Conn, msg string) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			c.Write([]byte(msg))
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); <-ended }
}

// Rule 5: a flow with no datagram either way for idle_timeout ends (on
// the server's clock); a busy one does not.
func TestUDPIdleTimeout(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	clk := clocktest.New()
	srv := w.StartServer(w.ServerConfig(), server.WithClock(clk))
	svc := harness.UDPService("echo", w.UDPEcho())
	svc.IdleTimeout = 4 * time.Second
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, svc))
	cli.WaitSession(1)
	key := "udp:" + strconv.Itoa(cli.Port("echo"))
	idle, busy := w.DialUDP(cli.UDPPublicAddr("echo")), w.DialUDP(cli.UDPPublicAddr("echo"))
	exchange(t, idle, []byte("once"))
	exchange(t, busy, []byte("first"))
	srv.WaitFlows(key, 2)
	for range 3 { // 3 s: both live
		harness.WaitTimer(t, clk, time.Second)
		clk.Advance(time.Second)
	}
	exchange(t, busy, []byte("again")) // busy's clock restarts at 3 s
	for range 2 {                      // 5 s: idle is past 4 s, busy at 2 s
		harness.WaitTimer(t, clk, time.Second)
		clk.Advance(time.Second)
	}
	srv.WaitFlows(key, 1)
	exchange(t, busy, []byte("still mine"))
	// The idle source's next datagram is a new flow.
	exchange(t, idle, []byte("back"))
	srv.WaitFlows(key, 2)
}

// Rule 2: max_flows per route; a new source beyond it ends a flow that
// is not assured before one that is, and the eviction is counted.
func TestUDPMaxFlows(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	svc := harness.UDPService("echo", w.UDPEcho())
	svc.MaxFlows = 3
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, svc))
	cli.WaitSession(1)
	addr := cli.UDPPublicAddr("echo")
	key := "udp:" + strconv.Itoa(cli.Port("echo"))
	real := w.DialUDP(addr)
	exchange(t, real, []byte("one"))
	exchange(t, real, []byte("two")) // two in, one out: assured
	for i := range 10 {
		c := w.DialUDP(addr)
		exchange(t, c, []byte("flood "+strconv.Itoa(i)))
	}
	srv.WaitFlows(key, 3)
	harness.WaitMetric(t, srv.Metrics, 8, "warren_udp_drops_total", "service", "echo", "reason", metrics.DropFlowEvicted)
	// The assured flow was never evicted: the same flow answers.
	before := harness.Metric(t, srv.Metrics, "warren_udp_drops_total", "service", "echo", "reason", metrics.DropFlowEvicted)
	exchange(t, real, []byte("three"))
	if after := harness.Metric(t, srv.Metrics, "warren_udp_drops_total", "service", "echo", "reason", metrics.DropFlowEvicted); after != before {
		t.Fatalf("the assured flow's datagram evicted a flow: it had been evicted itself (%v -> %v)", before, after)
	}
}

// Rule 2: udp.max_session_flows caps the flows of a session, apart from
// limits.max_streams: TCP connections still get streams.
func TestUDPSessionFlows(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	cfg := w.ServerConfig()
	cfg.UDP.MaxSessionFlows = 2
	cfg.Limits.MaxStreams = 2
	srv := w.StartServer(cfg)
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, harness.UDPService("echo", w.UDPEcho()), client.Service{Name: "tcp", Target: w.Backend(harness.Echo)}))
	cli.WaitSession(1)
	addr := cli.UDPPublicAddr("echo")
	exchange(t, w.DialUDP(addr), []byte("a"))
	exchange(t, w.DialUDP(addr), []byte("b"))
	third := w.DialUDP(addr)
	third.Write([]byte("c"))
	harness.WaitMetric(t, srv.Metrics, 1, "warren_udp_drops_total", "service", "echo", "reason", metrics.DropSessionFlows)
	// Two flows open, and max_streams is 2: TCP is not starved.
	w.RoundTrip(cli.PublicAddr("tcp"))
}

// Rule 1, reconnect grace: while the route is held, datagrams are dropped
// (counted), not queued; the client's return serves the next ones.
func TestUDPHeldRoute(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	link := w.Link(srv)
	cli := w.StartClient(link.Through(w.ClientConfig(srv, harness.TokenOffice, harness.UDPService("echo", w.UDPEcho()))), link.Options()...)
	cli.WaitSession(1)
	addr := cli.UDPPublicAddr("echo")
	key := "udp:" + strconv.Itoa(cli.Port("echo"))
	c := w.DialUDP(addr)
	exchange(t, c, []byte("before"))
	link.Kill()
	srv.WaitSessions(0)
	srv.WaitFlows(key, 0) // the session's flows ended with it
	srv.WaitFor("held", func() (bool, string) {
		for _, r := range srv.Routes() {
			if r.Key == key {
				return r.Held, fmt.Sprintf("%+v", r)
			}
		}
		return false, "no route"
	})
	for range 5 {
		c.Write([]byte("while away"))
	}
	harness.WaitMetric(t, srv.Metrics, 5, "warren_udp_drops_total", "service", "echo", "reason", metrics.DropNoSession)
	link.Down(false)
	cli.WaitSession(2)
	exchange(t, c, []byte("after"))
}

// Rule 5: a reload of the client that drops the service releases the
// port and ends its flows; the session and its other services go on.
func TestUDPReloadEndsFlows(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	tcp := client.Service{Name: "tcp", Target: w.Backend(harness.Echo)}
	cfg := w.ClientConfig(srv, harness.TokenOffice, harness.UDPService("echo", w.UDPEcho()), tcp)
	cli := w.StartClient(cfg)
	cli.WaitSession(1)
	key := "udp:" + strconv.Itoa(cli.Port("echo"))
	c := w.DialUDP(cli.UDPPublicAddr("echo"))
	exchange(t, c, []byte("hi"))
	srv.WaitFlows(key, 1)
	cfg.Services = []client.Service{tcp}
	if err := cli.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	srv.WaitFor("udp route gone", func() (bool, string) {
		for _, r := range srv.Routes() {
			if r.Key == key {
				return false, fmt.Sprintf("%+v", r)
			}
		}
		return true, ""
	})
	w.RoundTrip(cli.PublicAddr("tcp"))
	if n := cli.Status().Sessions; n != 1 {
		t.Fatalf("%d sessions: the reload reconnected", n)
	}
}

// Rule 1 on a shared route: a flow stays with the session it picked;
// flows spread over the members.
func TestUDPSharedRouteSticks(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	port := freeUDPPort(t, w)
	// Each member's target says which member it is.
	tag := func(name string) string {
		return w.UDPBackend(func(pc harness.PacketConn, from netip.AddrPort, b []byte) {
			pc.WriteToUDPAddrPort([]byte(name), from)
		})
	}
	for i, tok := range []string{harness.TokenOffice, harness.TokenOther} {
		svc := harness.UDPService("game", tag("member"+strconv.Itoa(i)))
		svc.RemotePort, svc.Shared = port, true
		w.StartClient(w.ClientConfig(srv, tok, svc)).WaitSession(1)
	}
	srv.WaitSessions(2)
	addr := harness.PublicAddr(port)
	seen := map[string]bool{}
	for range 8 {
		c := w.DialUDP(addr)
		got, _, err := harness.Exchange(c, []byte("who"), 500*time.Millisecond, 20)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 { // the same flow, the same member
			again, _, err := harness.Exchange(c, []byte("who"), 500*time.Millisecond, 20)
			if err != nil || string(again) != string(got) {
				t.Fatalf("flow moved from %s to %s (%v)", got, again, err)
			}
		}
		seen[string(got)] = true
	}
	if len(seen) != 2 {
		t.Fatalf("flows went to %v, want both members", seen)
	}
}

// freeUDPPort is a UDP port free on the public network now.
func freeUDPPort(t *testing.T, w *harness.World) int {
	pc, err := w.Public.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}
