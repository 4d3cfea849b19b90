package server_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

// TestClusterUDP: a UDP port held by a client on s0 is served by every
// server: datagrams to s1's and s2's sockets reach the client's echo over
// peer links and the answers go back to their own sources; a forwarded
// flow for a route with no session on the server it reaches is refused;
// the holder stopped, the forwarded flows end.
func TestClusterUDP(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 3, time.Minute)
	c.startAll()
	w := c.w
	port := w.PublicPort(3)
	svc := harness.UDPService("echo", w.UDPEcho())
	svc.RemotePort = port
	cl := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, svc))
	cl.WaitSession(1)
	key := "udp:" + strconv.Itoa(port)
	c.waitRoutes(key)

	for i := 1; i < 3; i++ {
		addr := harness.PublicAddrAt(i, port)
		a, b := w.DialUDP(addr), w.DialUDP(addr)
		for n, size := range []int{0, 1, 1200, 8192} {
			exchange(t, a, []byte(fmt.Sprintf("a%d-%d|%s", i, n, strings.Repeat("x", size))))
			exchange(t, b, []byte(fmt.Sprintf("b%d-%d|%s", i, n, strings.Repeat("y", size))))
		}
		// Each source hears only its own answers: a's datagram reaches b
		// never.
		if _, err := a.Write([]byte("only for a")); err != nil {
			t.Fatal(err)
		}
		b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 1<<16)
		if n, err := b.Read(buf); !isTimeout(err) {
			t.Fatalf("s%d: source b got %q, %v", i, buf[:n], err)
		}
		c.srvs[i].WaitFlows(key, 2)
	}
	if m := member(c.srvs[1], "s0"); m.ForwardedOut != 2 {
		t.Errorf("s1's view of s0: %+v, want 2 flows forwarded", m)
	}
	harness.WaitMetric(t, c.srvs[0].Metrics, 2, "warren_cluster_forwarded_connections_total", "peer", "s1", "direction", "in")

	// A forwarded flow is served by a session of the server it reaches,
	// never forwarded again.
	p := c.tester()
	s1 := cluster.Member{ID: "s1", PeerAddress: c.cfgs[1].Cluster.PeerAddress}
	hdr := cluster.Header{Key: key, Peer: "192.0.2.9:4000", Kind: cluster.KindDatagram}
	if _, err := p.Open(context.Background(), s1, hdr); !errors.Is(err, cluster.ErrRefused) || !strings.Contains(err.Error(), "no live session serves udp port "+strconv.Itoa(port)+" on server s1") {
		t.Fatalf("a flow forwarded to a server without a session: %v", err)
	}

	// The holder stops: the flows forwarded to it end.
	c.srvs[0].Stop()
	c.srvs[0] = nil
	c.srvs[1].WaitFlows(key, 0)
	c.srvs[2].WaitFlows(key, 0)
}
