package server

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/memnet"
	"github.com/warren-tunnel/warren/internal/testutil/metrictest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// udp.go rule 1, the window between a session's Welcome and up: its
// client has the port already and may send at once. A datagram that
// arrives then opens its flow on the member in its handshake and waits in
// the flow's queue: once the session is up, it reaches the client; if the
// handshake fails, the flow ends and the datagram is counted no_session.
// (Dropped before: TestUDPEchoLockstep's sources lost their first
// datagrams so on a loaded machine, 48 and 50 of them in 2 of 30 runs.)
// The server is real, on an in-memory network and a manual clock, so its
// sweep flushes the counters only when a member leaves or the route
// closes; the session is driven through the table as serveTunnel drives
// it.
func TestUDPFlowWaitsForHandshake(t *testing.T) {
	for _, tc := range []struct {
		name string
		up   bool
	}{{"up", true}, {"handshake fails", false}} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			mem := &memnet.Network{}
			s, cs, reg := handshakeUDPServer(t, mem, clocktest.New(), 0, "")
			s.table.mu.Lock()
			r := s.table.routes["udp:20001"]
			s.table.mu.Unlock()
			ft := r.flows.Load()

			peer, err := mem.DialPacket(context.Background(), "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(20001)))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			if _, err := peer.Write([]byte("early")); err != nil {
				t.Fatal(err)
			}
			noSession := &ft.stats.drops[dropNoSession]
			waitUntil(t, "the datagram read", func() bool { return ft.count() == 1 || noSession.Load() > 0 })
			if n := noSession.Load(); n > 0 {
				t.Fatalf("%d datagrams dropped (no_session) while the route's member was in its handshake", n)
			}

			// What the flow counted, once the route is closed as at
			// shutdown: its sweep flushes the counters as it stops,
			// which is after ft.die is closed, so the count is waited
			// for (want), then checked to stay.
			noSessionCounted := func(want float64) float64 {
				for _, c := range s.table.close() {
					c.Close()
				}
				<-ft.die
				value := func() float64 {
					return metrictest.Value(t, reg, "warren_udp_drops_total", "reason", metrics.DropNoSession)
				}
				if want > 0 {
					waitUntil(t, "the sweep's last flush", func() bool { return value() >= want })
				}
				return value()
			}

			if !tc.up {
				s.table.down(cs, true) // as serveTunnel does when its Welcome fails
				waitUntil(t, "the flow closed", func() bool { return ft.all.Load() == 0 })
				if n := noSessionCounted(1); n != 1 {
					t.Fatalf("the flow of a failed handshake ended with %v datagrams counted no_session, want 1", n)
				}
				return
			}

			streams := upWithClient(t, s, cs)
			st := nextStream(t, streams)
			st.SetReadDeadline(time.Now().Add(10 * time.Second))
			p, err := st.ReadDatagram(session.MaxDatagram, func(n int) []byte { return make([]byte, n) })
			if err != nil || string(p) != "early" {
				t.Fatalf("the client read %q, %v; want the early datagram", p, err)
			}
			if h := st.Header(); h.Kind != session.KindDatagram || h.Service != "dns" || h.Peer != peer.LocalAddr().String() {
				t.Fatalf("flow stream header %+v", h)
			}
			if n := noSessionCounted(0); n != 0 {
				t.Fatalf("%v datagrams counted no_session", n)
			}
		})
	}
}

// handshakeUDPServer is a real server on mem and clk whose client
// "office" has claimed udp port 20001 with cs, a member in its handshake,
// as serveTunnel claims before its Welcome. handshake sets
// limits.handshake_timeout (0: the default); id, when set, makes the
// server the cluster member of that id, as far as serveForwardedFlow
// needs one. reg is the server's metrics.
func handshakeUDPServer(t *testing.T, mem *memnet.Network, clk *clocktest.Clock, handshake time.Duration, id string) (*Server, *clientSession, *metrics.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.PublicAddress = "127.0.0.1"
	cfg.TLS.Disabled = true
	if handshake > 0 {
		cfg.Limits.HandshakeTimeout = handshake
	}
	cfg.Clients = []Client{{Name: "office", Token: "office-token-0123456789", UDPPorts: []PortRange{{Lo: 20000, Hi: 20009}}}}
	s, err := New(cfg, nil, WithClock(clk),
		WithListenPacket(func(network, address string) (PacketConn, error) { return mem.ListenPacket(network, address) }))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := metrics.New(metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.SetMetrics(reg)
	if id != "" {
		s.node = &node{id: id}
	}
	t.Cleanup(func() {
		for _, c := range s.table.close() {
			c.Close()
		}
		s.acceptWG.Wait()
	})
	cs := &clientSession{client: s.table.clients[0], id: "a", instance: "a", log: slog.New(slog.DiscardHandler)}
	granted, _, rej := s.table.claim(cs, []session.Service{{Name: "dns", Protocol: session.ProtoUDP, RemotePort: 20001}})
	if rej != nil {
		t.Fatal(rej)
	}
	cs.granted = granted
	cs.stats = map[string]*admin.ServiceCounters{"dns": new(admin.ServiceCounters)}
	return s, cs, reg
}

// upWithClient records cs up, as serveTunnel does once its Welcome is
// sent, over an in-memory session whose client side runs until the test
// ends; it returns the streams that side accepts.
func upWithClient(t *testing.T, s *Server, cs *clientSession) <-chan *session.Stream {
	t.Helper()
	ran := make(chan error, 1)
	t.Cleanup(func() { <-ran }) // after sessionPair's, which ends Run
	srvSide, cliSide := sessionPair(t, session.DefaultConfig())
	streams := make(chan *session.Stream, 1)
	go func() {
		ran <- cliSide.Run(context.Background(), session.Handlers{Stream: func(st *session.Stream) { streams <- st }})
	}()
	if ok, _ := s.table.up(cs, srvSide); !ok {
		t.Fatal("not up")
	}
	return streams
}

// nextStream is the next stream the client side accepted, within 10 s.
func nextStream(t *testing.T, streams <-chan *session.Stream) *session.Stream {
	t.Helper()
	select {
	case st := <-streams:
		return st
	case <-time.After(10 * time.Second):
		t.Fatal("no flow stream reached the client after the session was up")
		return nil
	}
}

// waitUntil polls cond, which nothing signals, for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
