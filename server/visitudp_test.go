package server_test

// UDP visitors reaching private UDP services, over real TCP+TLS and
// KCP+TLS sockets.

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

const udpVisitKey = "private-udp:office/dns"

// udpVisitor is laptop's UDP visitor of office's private UDP service.
var udpVisitor = client.Visitor{Name: "dns", Service: "office/dns", Bind: "127.0.0.1:0", Protocol: session.ProtoUDP}

// startPrivateOffice starts office serving the private UDP echo "dns"
// (with mod applied) and the private TCP echo "db".
func startPrivateOffice(w *harness.World, srv *harness.Server, mod func(*client.Service)) *harness.Client {
	dns := harness.UDPService("dns", w.UDPEcho())
	dns.Private = true
	if mod != nil {
		mod(&dns)
	}
	office := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, dns,
		client.Service{Name: "db", Target: w.Backend(harness.Echo), Private: true}))
	office.WaitSession(1)
	return office
}

// udpVisitWorld is a world of kind where office serves its private
// services (startPrivateOffice, mod) and laptop (other, visit = visit)
// visits dns with a UDP visitor; it returns the visitor's local address.
func udpVisitWorld(t *testing.T, kind string, visit string, mod func(*client.Service), opts ...server.Option) (*harness.World, *harness.Server, *harness.Client, *harness.Client, string) {
	w := harness.NewWorldOf(t, kind)
	cfg := w.ServerConfig()
	cfg.Clients[1].Visit = []string{visit}
	srv := w.StartServer(cfg, opts...)
	office := startPrivateOffice(w, srv, mod)
	vcfg := w.ClientConfig(srv, harness.TokenOther)
	vcfg.Visitors = []client.Visitor{udpVisitor}
	laptop := w.StartClient(vcfg)
	laptop.WaitSession(1)
	srv.WaitSessions(2)
	return w, srv, office, laptop, laptop.VisitorAddr("dns").String()
}

// echoFrom sends n datagrams from c, one at a time, each labelled with
// its source's label, and checks that each comes back byte-exact and that
// no other source's datagram ever arrives on c (a late echo of its own
// earlier datagram, after a resend, is skipped).
func echoFrom(c net.Conn, label string, n int) error {
	buf := make([]byte, 1<<16)
	for i := range n {
		size := []int{0, 1, 100, 1200, 8192}[i%5]
		msg := []byte(fmt.Sprintf("%s#%d|", label, i))
		if size == 0 {
			msg = nil // a 0-byte datagram stays one
		} else {
			msg = append(msg, bytes.Repeat([]byte{byte(i)}, max(size-len(msg), 0))...)
		}
		got := false
		for try := 0; try < 20 && !got; try++ {
			if _, err := c.Write(msg); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				m, err := c.Read(buf)
				if err != nil {
					if isTimeout(err) {
						break
					}
					return err
				}
				if m > 0 && !bytes.HasPrefix(buf[:m], []byte(label+"#")) {
					return fmt.Errorf("source %s received another source's datagram: %.20q", label, buf[:m])
				}
				if bytes.Equal(buf[:m], msg) {
					got = true
					break
				}
			}
		}
		if !got {
			return fmt.Errorf("source %s: no echo of datagram %d (%d bytes)", label, i, len(msg))
		}
	}
	return nil
}

// TestUDPVisitor: a UDP visitor reaches a private UDP service: datagrams
// from several local sources echo byte-exact, each source its own flow,
// kept apart; a burst arrives whole and in order; the service has no
// public port; the flows end with the visitor.
func TestUDPVisitor(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range realKinds {
		t.Run(kind, func(t *testing.T) {
			w, srv, office, laptop, addr := udpVisitWorld(t, kind, "office/*", nil)
			if v := laptop.Status().Session.Visitors; len(v) != 1 || v[0].Error != "" || v[0].Protocol != session.ProtoUDP {
				t.Fatalf("visitors as granted: %+v", v)
			}
			st := office.Status().Session
			if len(st.Services) != 0 {
				t.Fatalf("a private UDP service was granted public claims: %+v", st.Services)
			}
			if p := st.PrivateServices; len(p) != 2 || !p[0].IsUDP() || p[1].IsUDP() || p[1].UDP != nil || p[0].UDP == nil || p[0].UDP.MaxDatagram == 0 {
				t.Fatalf("private services as granted: %+v", p)
			}
			for _, r := range srv.Routes() {
				if r.Key != udpVisitKey && r.Key != "private:office/db" {
					t.Fatalf("route %s exists; only office's private ones should", r.Key)
				}
			}
			const sources = 4
			conns := make([]net.Conn, sources)
			for i := range conns {
				conns[i] = w.DialUDP(addr)
			}
			var wg sync.WaitGroup
			errs := make(chan error, sources)
			for i, c := range conns {
				wg.Go(func() { errs <- echoFrom(c, fmt.Sprintf("src%d", i), 100) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			srv.WaitFlows(udpVisitKey, sources)

			// A burst from one source: every datagram back, in order
			// (the tunnel is reliable and ordered; the sockets' buffers
			// hold the 64 KB).
			c := conns[0]
			if rb, ok := c.(interface{ SetReadBuffer(int) error }); ok {
				rb.SetReadBuffer(1 << 20) // the whole burst fits, however late the test reads
			}
			const burst = 64
			for i := range burst {
				if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 2000)
			c.SetReadDeadline(time.Now().Add(harness.WaitTimeout))
			for i := 0; i < burst; {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("burst: %d of %d datagrams back: %v", i, burst, err)
				}
				if n == 1000 && buf[0] == byte(i) && bytes.Equal(buf[:n], bytes.Repeat([]byte{byte(i)}, 1000)) {
					i++
				} else if !bytes.HasPrefix(buf[:n], []byte("src0#")) { // a late echo of the exchange above
					t.Fatalf("burst: datagram %d: got %d bytes starting %d", i, n, buf[0])
				}
			}
			v := laptop.AdminSource().Status().Visitors
			if len(v) != 1 || v[0].Connections != sources || v[0].Protocol != session.ProtoUDP {
				t.Fatalf("laptop's visitor status: %+v, want %d open flows", v, sources)
			}
			laptop.Stop()
			srv.WaitFlows(udpVisitKey, 0)
		})
	}
}

// TestUDPVisitorRefused: a UDP visitor whose token may not visit is told
// so at claim time and its flows are refused; a TCP visitor of a UDP
// private service, and a UDP visitor of a TCP one, are refused at claim
// time with the protocols named.
func TestUDPVisitorRefused(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorldOf(t, harness.TCP)
	cfg := w.ServerConfig()
	cfg.Clients[1].Visit = []string{"office/db"}
	srv := w.StartServer(cfg)
	startPrivateOffice(w, srv, nil)
	vcfg := w.ClientConfig(srv, harness.TokenOther)
	vcfg.Visitors = []client.Visitor{
		udpVisitor, // not in visit
		{Name: "db", Service: "office/db", Bind: "127.0.0.1:0", Protocol: session.ProtoUDP}, // a TCP service
	}
	laptop := w.StartClient(vcfg)
	st := laptop.WaitSession(1)
	want := map[string]string{"dns": "may not visit office/dns", "db": `is a private tcp service; the visitor has protocol "udp"`}
	for _, v := range st.Session.Visitors {
		if !strings.Contains(v.Error, want[v.Name]) {
			t.Errorf("visitor %s: claim-time error %q, want %q", v.Name, v.Error, want[v.Name])
		}
	}
	for name := range want {
		c := w.DialUDP(laptop.VisitorAddr(name).String())
		if _, _, err := harness.Exchange(c, []byte("x"), 200*time.Millisecond, 3); err == nil {
			t.Errorf("visitor %s: a datagram was answered", name)
		}
	}
	pollUntil(t, "refused flows ended", func() (bool, string) {
		refused := true
		for _, v := range laptop.AdminSource().Status().Visitors {
			refused = refused && v.Connections == 0
		}
		return refused, fmt.Sprint(laptop.AdminSource().Status().Visitors)
	})
	harness.WaitMetric(t, srv.Metrics, 1, "warren_visitor_connections_total", "service", "office/dns", "outcome", "no_session")
}

// TestUDPVisitorServingClientRestart: the serving client stopped, the
// visitor's flows end (they do not hang) while its socket stays up; once
// the client is back, datagrams from the same source are echoed again.
func TestUDPVisitorServingClientRestart(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range realKinds {
		t.Run(kind, func(t *testing.T) {
			w, srv, office, laptop, addr := udpVisitWorld(t, kind, "office/*", nil)
			c := w.DialUDP(addr)
			if err := echoFrom(c, "before", 5); err != nil {
				t.Fatal(err)
			}
			srv.WaitFlows(udpVisitKey, 1)
			office.Stop()
			srv.WaitFlows(udpVisitKey, 0)
			visitorFlows := func(n int) {
				t.Helper()
				pollUntil(t, fmt.Sprintf("%d visitor flows", n), func() (bool, string) {
					v := laptop.AdminSource().Status().Visitors
					return len(v) == 1 && v[0].Connections == n, fmt.Sprint(v)
				})
			}
			visitorFlows(0)
			// While it is gone: nothing answers, nothing hangs.
			if _, _, err := harness.Exchange(c, []byte("while gone"), 200*time.Millisecond, 2); err == nil {
				t.Fatal("a datagram was answered while the serving client was gone")
			}
			visitorFlows(0)
			back := w.StartClient(office.Config)
			back.WaitSession(1)
			srv.WaitFor("private udp route served", func() (bool, string) {
				for _, r := range srv.Routes() {
					if r.Key == udpVisitKey && r.Sessions > 0 {
						return true, ""
					}
				}
				return false, fmt.Sprint(srv.Routes())
			})
			if err := echoFrom(c, "after", 20); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// pollUntil waits until cond holds: visitor counters have no change
// signal, so it polls.
func pollUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(harness.WaitTimeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s", what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUDPVisitorIdleTimeout: a visitor flow with no datagram either way
// for the private service's idle_timeout ends, on both clients; a busy
// one lives on; the idle source's next datagram is a new flow.
func TestUDPVisitorIdleTimeout(t *testing.T) {
	leaktest.Check(t)
	clk := clocktest.New()
	w, srv, _, laptop, addr := udpVisitWorld(t, harness.Memory, "office/dns", func(s *client.Service) { s.IdleTimeout = 4 * time.Second }, server.WithClock(clk))
	idle, busy := w.DialUDP(addr), w.DialUDP(addr)
	exchange(t, idle, []byte("once"))
	exchange(t, busy, []byte("first"))
	srv.WaitFlows(udpVisitKey, 2)
	harness.WaitTimer(t, clk, 4*time.Second)
	clk.Advance(3 * time.Second)
	exchange(t, busy, []byte("again")) // busy's idle time restarts at 3 s
	clk.Advance(time.Second)           // 4 s: idle's ends, busy's has 3 s left
	srv.WaitFlows(udpVisitKey, 1)
	pollUntil(t, "the visitor's idle flow ended", func() (bool, string) {
		v := laptop.AdminSource().Status().Visitors
		return v[0].Connections == 1, fmt.Sprint(v)
	})
	exchange(t, busy, []byte("still mine"))
	exchange(t, idle, []byte("back"))
	srv.WaitFlows(udpVisitKey, 2)
}

// TestUDPVisitorMaxFlows: the private service's max_flows bounds its
// visitor flows: one more source is refused, counted, and the flows open
// keep working.
func TestUDPVisitorMaxFlows(t *testing.T) {
	leaktest.Check(t)
	w, srv, _, _, addr := udpVisitWorld(t, harness.Memory, "office/dns", func(s *client.Service) { s.MaxFlows = 2 })
	a, b, c := w.DialUDP(addr), w.DialUDP(addr), w.DialUDP(addr)
	exchange(t, a, []byte("a"))
	exchange(t, b, []byte("b"))
	if _, _, err := harness.Exchange(c, []byte("c"), 200*time.Millisecond, 2); err == nil {
		t.Fatal("a flow beyond max_flows was answered")
	}
	harness.WaitMetric(t, srv.Metrics, 1, "warren_visitor_connections_total", "service", "office/dns", "outcome", "refused_limit")
	harness.WaitMetric(t, srv.Metrics, 1, "warren_udp_drops_total", "service", "dns", "reason", metrics.DropMaxFlows)
	srv.WaitFlows(udpVisitKey, 2)
	exchange(t, a, []byte("a again"))
	exchange(t, b, []byte("b again"))
}
