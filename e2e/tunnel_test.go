package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

// TestIntegrity sends 64 MiB each way through one public connection at
// once and compares SHA-256 on both ends.
func TestIntegrity(t *testing.T) {
	leaktest.Check(t)
	const size = 64 << 20
	forEachTransport(t, func(t *testing.T, kind string) {
		b := newBulkBackend(t, size)
		// KCP runs the rate controller (rate_mbit = "auto", the
		// default) on both sides.
		srv := startServer(t, serverConfig(t, kind))
		cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "bulk", Target: b.target}))
		cli.waitSession(t, 1)
		d := b.transfer(t, cli.publicAddr(t, "bulk"), 5*time.Minute)
		t.Logf("%s: 2 x %d MiB in %v", kind, size>>20, d.Round(time.Millisecond))
		if kind == transport.KindKCP {
			// Both sides' rate controllers followed the transfer, and
			// the status API shows them.
			checkPacing(t, cli, srv, size/2, false)
		}
	})
}

// TestLossyKCPAuto: over KCP on a link that loses 5% of the datagrams each
// way, with the default config (rate_mbit = "auto" on both sides), one
// public connection carries 8 MiB each way intact, and both sides'
// controllers followed it: what they count delivered covers it, and they
// saw the resends.
func TestLossyKCPAuto(t *testing.T) {
	leaktest.Check(t)
	const size = 8 << 20
	cfg := serverConfig(t, transport.KindKCP)
	if cfg.KCP.RateMbit != transport.RateAuto {
		t.Fatalf("the server's default rate_mbit is %v, want auto", cfg.KCP.RateMbit)
	}
	lossy := newLossyKCP(t, 0.05)
	srv := startServerWith(t, cfg, nil, server.WithTransport(transport.KindKCP, lossy.server(cfg.KCP)))
	b := newBulkBackend(t, size)
	ccfg := clientConfig(srv, tokenOffice, client.Service{Name: "bulk", Target: b.target})
	if ccfg.KCP.RateMbit != transport.RateAuto {
		t.Fatalf("the client's default rate_mbit is %v, want auto", ccfg.KCP.RateMbit)
	}
	cli := startClientWith(t, ccfg, nil, client.WithTransport(lossy.client(ccfg.KCP)))
	cli.waitSession(t, 1)
	d := b.transfer(t, cli.publicAddr(t, "bulk"), 3*time.Minute)
	t.Logf("2 x %d MiB at 5%% loss in %v", size>>20, d.Round(time.Millisecond))
	// The last ACKs may still be on their way.
	checkPacing(t, cli, srv, size*9/10, true)
}

// bulkBackend is a backend that sends size random bytes on each
// connection and checksums what it reads.
type bulkBackend struct {
	target        string
	size          int64
	atBackend     chan bulkResult
	sentByBackend chan [32]byte
}

type bulkResult struct {
	sum [32]byte
	n   int64
	err error
}

func newBulkBackend(t *testing.T, size int64) *bulkBackend {
	b := &bulkBackend{size: size, atBackend: make(chan bulkResult, 1), sentByBackend: make(chan [32]byte, 1)}
	b.target = backend(t, func(c net.Conn) {
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			sum, _ := randomStream(c, 2, size)
			c.(*net.TCPConn).CloseWrite()
			b.sentByBackend <- sum
		}()
		sum, n, err := sumAll(c)
		b.atBackend <- bulkResult{sum, n, err}
		<-wrote // closing c before would cut the other direction short
	})
	return b
}

// transfer dials the public address addr and sends size bytes each way
// at once; both sides' SHA-256 must match what the other sent. It
// returns how long that took.
func (b *bulkBackend) transfer(t *testing.T, addr string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c := dialPublic(t, addr)
	c.SetDeadline(time.Now().Add(within))
	sent := make(chan [32]byte, 1)
	go func() {
		sum, err := randomStream(c, 1, b.size)
		if err != nil {
			t.Error(err)
		}
		c.CloseWrite()
		sent <- sum
	}()
	got, n, err := sumAll(c)
	if err != nil || n != b.size {
		t.Fatalf("public side read %d bytes, err %v", n, err)
	}
	if got != <-b.sentByBackend {
		t.Error("backend to public: data differs")
	}
	r := <-b.atBackend
	if r.err != nil || r.n != b.size {
		t.Fatalf("backend read %d bytes, err %v", r.n, r.err)
	}
	if r.sum != <-sent {
		t.Error("public to backend: data differs")
	}
	return time.Since(start)
}

// checkPacing checks that both sides' KCP rate controllers ("auto") show
// in the status API with at least delivered bytes acknowledged, and, with
// resent, resends. The client shows its in its server's session row (and
// in the session it sums the services of, the same one here).
func checkPacing(t *testing.T, cli *testClient, srv *testServer, delivered int64, resent bool) {
	t.Helper()
	var paced []*admin.PacingStatus
	cst := cli.AdminSource().Status()
	for _, srv := range cst.Servers {
		for _, s := range srv.Sessions {
			paced = append(paced, s.Pacing)
		}
	}
	if cst.Session == nil || cst.Session.Pacing == nil {
		t.Errorf("the client's session in the status has no pacing: %+v", cst.Session)
	}
	for _, c := range srv.AdminSource().Status().Clients {
		for _, s := range c.Sessions {
			paced = append(paced, s.Pacing)
		}
	}
	if len(paced) != 2 {
		t.Fatalf("%d sessions in the status, want one each side", len(paced))
	}
	for _, p := range paced {
		if p == nil || p.RateMbit != "auto" || p.Delivered < delivered || (resent && p.Resent == 0) ||
			p.Bandwidth <= 0 || p.MinRTT <= 0 || p.PacingRate <= 0 {
			t.Errorf("pacing in the status: %+v", p)
		}
	}
}

// TestConcurrentConnections opens 200 public connections at once; each
// carries its own data through the echo backend and back intact.
func TestConcurrentConnections(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		target := backend(t, echo)
		srv := startServer(t, serverConfig(t, kind))
		cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: target}))
		cli.waitSession(t, 1)
		addr := cli.publicAddr(t, "echo")

		const conns, size = 200, 64 << 10
		var wg sync.WaitGroup
		var failed atomic.Int32
		for i := range conns {
			wg.Go(func() {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					t.Errorf("conn %d: %v", i, err)
					failed.Add(1)
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				sent := make(chan [32]byte, 1)
				go func() {
					sum, _ := randomStream(c, uint64(i), size)
					c.(*net.TCPConn).CloseWrite()
					sent <- sum
				}()
				got, n, err := sumAll(c)
				want := <-sent
				if err != nil || n != size || got != want {
					t.Errorf("conn %d: %d bytes back, err %v, intact %v", i, n, err, got == want)
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d of %d connections failed", failed.Load(), conns)
		}
	})
}

// TestHalfCloseRounds: the public side sends a request, half-closes, and
// reads the reply, thousands of times. smux's own CloseWrite loses the
// reply in most such rounds; warren carries end-of-stream itself.
func TestHalfCloseRounds(t *testing.T) {
	leaktest.Check(t)
	rounds := map[string]int{"tcp": 3000, "kcp": 2000}
	forEachTransport(t, func(t *testing.T, kind string) {
		target := backend(t, func(c net.Conn) {
			req, err := io.ReadAll(c)
			if err != nil {
				return
			}
			c.Write(append([]byte("reply to "), req...))
		})
		srv := startServer(t, serverConfig(t, kind))
		cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "rr", Target: target}))
		cli.waitSession(t, 1)
		addr := cli.publicAddr(t, "rr")

		var lost atomic.Int32
		var wg sync.WaitGroup
		work := make(chan int)
		for range 16 {
			wg.Go(func() {
				for i := range work {
					c, err := net.DialTimeout("tcp", addr, 10*time.Second)
					if err != nil {
						t.Errorf("round %d: %v", i, err)
						lost.Add(1)
						continue
					}
					c.SetDeadline(time.Now().Add(30 * time.Second))
					req := fmt.Sprintf("request %d", i)
					c.Write([]byte(req))
					c.(*net.TCPConn).CloseWrite()
					reply, err := io.ReadAll(c)
					c.Close()
					if err != nil || string(reply) != "reply to "+req {
						if lost.Add(1) <= 3 {
							t.Errorf("round %d: reply %q, err %v", i, reply, err)
						}
					}
				}
			})
		}
		for i := range rounds[kind] {
			work <- i
		}
		close(work)
		wg.Wait()
		if n := lost.Load(); n > 0 {
			t.Fatalf("%d of %d replies lost", n, rounds[kind])
		}
	})
}

// roundTrip checks that an echo service at addr answers.
func roundTrip(t *testing.T, addr string) {
	t.Helper()
	if err := echoOnce(addr); err != nil {
		t.Fatal(err)
	}
}

// echoOnce sends a message to an echo service at addr and checks the answer.
func echoOnce(addr string) error { return echoWithin(addr, 5*time.Second, 10*time.Second) }

// echoWithin sends a message to an echo service at addr and checks the
// answer: the dial within dial, the whole exchange within total.
func echoWithin(addr string, dial, total time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, dial)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(total))
	msg := []byte("hello through the tunnel")
	c.Write(msg)
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		return fmt.Errorf("echo via %s: %q, %v", addr, got, err)
	}
	return nil
}
