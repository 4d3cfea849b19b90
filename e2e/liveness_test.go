package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// Liveness: whatever a peer does (a backend or a public client that stops
// reading), the session it rides on keeps serving the other services, a
// session that ends takes its connections with it, and a daemon told to
// stop is gone within shutdown_timeout plus the Goodbye wait.

// echoBound is how long one echo through another service may take while a
// peer misbehaves: 2 s, as issue 11 asks. Under the race detector, which
// makes the CPU-bound path (TLS, KCP, the relays) 5-10 times slower on a
// busy 2-core machine, 6 s; bench/ measures the p99 without it.
var echoBound = map[bool]time.Duration{false: 2 * time.Second, true: 6 * time.Second}[raceEnabled]

// prober echoes through an echo service every few milliseconds, each time
// on a new connection, and notes every exchange slower than echoBound or
// failed.
type prober struct {
	bound time.Duration
	stop  chan struct{}
	done  chan struct{}
	hold  sync.Mutex // held by an exchange, and by pause

	mu    sync.Mutex
	n     int
	worst time.Duration
	bad   []string
}

func startProber(addr string) *prober { return startProberBound(addr, echoBound) }

// startProberBound is startProber with another bound than echoBound.
func startProberBound(addr string, bound time.Duration) *prober {
	p := &prober{bound: bound, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			p.hold.Lock()
			start := time.Now()
			err := p.echo(addr)
			d := time.Since(start)
			p.hold.Unlock()
			p.mu.Lock()
			p.n++
			p.worst = max(p.worst, d)
			if err != nil || d > p.bound {
				p.bad = append(p.bad, fmt.Sprintf("%s after %v: %v", start.Format("15:04:05.000"), d.Round(time.Millisecond), err))
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// echo sends a message to the echo service at addr and checks the answer,
// within the prober's bound and a little more.
func (p *prober) echo(addr string) error { return echoWithin(addr, p.bound, p.bound+5*time.Second) }

// while runs f between two exchanges: for a session ended on purpose,
// which resets the exchanges under way. Exchanges begun after f must still
// come back within echoBound.
func (p *prober) while(f func()) {
	p.hold.Lock()
	defer p.hold.Unlock()
	f()
}

// disconnect drops the client's session from the server (admin API) and
// waits until it is gone, between two of probe's exchanges.
func disconnect(t *testing.T, srv *testServer, probe *prober) {
	t.Helper()
	probe.while(func() {
		old := srv.Sessions()
		if err := srv.AdminSource().Disconnect("office"); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(waitTimeout)
		for {
			ch := srv.Changed()
			gone := true
			for _, now := range srv.Sessions() {
				for _, o := range old {
					gone = gone && now.ID != o.ID
				}
			}
			if gone {
				return
			}
			select {
			case <-ch:
			case <-deadline:
				t.Fatal("the disconnected session is still up")
			}
		}
	})
}

// check stops the prober and fails t unless every echo came back in time.
func (p *prober) check(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Logf("%d echoes through the other service, the slowest in %v", p.n, p.worst.Round(time.Millisecond))
	if p.n == 0 {
		t.Error("no echo went through the other service")
	}
	if len(p.bad) > 0 {
		t.Errorf("%d of %d echoes failed or took over %v: %v", len(p.bad), p.n, p.bound, p.bad)
	}
}

// stuck opens n public connections to addr that each either write until
// their writes block (upload) or never read (download: they write one
// byte and wait). It returns once every connection is stuck: uploads
// blocked, or downloads with their backend blocked (blocked counts those).
// The connections are closed at the test's end.
func stuck(t *testing.T, addr string, n int, upload bool, blocked *blockedCount) []*net.TCPConn {
	t.Helper()
	conns := make([]*net.TCPConn, n)
	target := 0
	if !upload {
		target = blocked.count() + n
	}
	var wg sync.WaitGroup
	for i := range conns {
		c := dialReader(t, addr)
		conns[i] = c
		if !upload {
			c.Write([]byte{1})
			continue
		}
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := c.Write(buf)
				if err != nil && (n == 0 || !isTimeoutErr(err)) {
					return // blocked (nothing moved for 300 ms), or reset
				}
			}
		})
	}
	wg.Wait()
	if !upload {
		blocked.wait(t, target)
	}
	return conns
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// blockedCount counts backend connections whose writes block.
type blockedCount struct {
	mu      sync.Mutex
	n       int
	changed chan struct{}
}

func newBlockedCount() *blockedCount { return &blockedCount{changed: make(chan struct{})} }

func (b *blockedCount) add() {
	b.mu.Lock()
	b.n++
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *blockedCount) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// wait waits until n connections in all have blocked.
func (b *blockedCount) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		b.mu.Lock()
		got, ch := b.n, b.changed
		b.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d backend connections blocked, want %d", got, n)
		}
	}
}

// flood is a backend that writes without end, noting in blocked when its
// writes stop moving (its public reader stopped reading); it ends when
// its connection fails.
func flood(blocked *blockedCount) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 64<<10)
		noted := false
		for {
			c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := c.Write(buf)
			switch {
			case err == nil:
			case isTimeoutErr(err) && n == 0:
				if !noted {
					noted = true
					blocked.add()
				}
			case isTimeoutErr(err):
			default:
				return
			}
		}
	}
}

// deafBackend is a backend that accepts and never reads; each connection
// ends when its peer resets or closes it, or when the test ends.
func deafBackend(t *testing.T) string {
	release := make(chan struct{})
	// A small receive buffer: the kernel soaks up little before the
	// tunnel's own buffers fill, as with a backend on a slow host.
	lc := net.ListenConfig{Control: smallRcvbuf}
	l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := harness.NewWorldOf(t, harness.TCP).BackendOn(l, func(c net.Conn) {
		for {
			select {
			case <-release:
				return
			case <-time.After(20 * time.Millisecond):
			}
			// It must not read, so it asks the kernel whether the peer has
			// gone (a FIN or a reset leaves the established state).
			info, err := tcpInfo(c)
			if err != nil || info.State != unix.BPF_TCP_ESTABLISHED {
				return
			}
		}
	})
	t.Cleanup(func() { close(release) }) // before backend's cleanup waits for the handlers
	return addr
}

// smallRcvbuf gives a socket a 4 KiB receive buffer (set before connect
// or listen, so the window is small from the start).
func smallRcvbuf(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<10) }); err != nil {
		return err
	}
	return serr
}

// dialReader dials addr as a public client with a small receive buffer: one
// that stops reading holds little in its kernel.
func dialReader(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: smallRcvbuf}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// tcpInfo is the kernel's TCP_INFO of c.
func tcpInfo(c net.Conn) (*unix.TCPInfo, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return nil, err
	}
	return info, ierr
}

// resetWithin reports whether c's peer resets or closes it within d. It
// does not read c: reading would unblock a writer stuck behind it.
func resetWithin(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		info, err := tcpInfo(c)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != unix.BPF_TCP_ESTABLISHED {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // TCP state has no change signal
	}
}

// allReset checks that every one of conns is reset within 5 s of its
// session's end (now), and closes them.
func allReset(t *testing.T, conns []*net.TCPConn) {
	t.Helper()
	start := time.Now()
	for i, c := range conns {
		if !resetWithin(t, c, 5*time.Second) {
			t.Errorf("public connection %d still open %v after its session ended", i, time.Since(start).Round(time.Millisecond))
		}
		c.Close()
	}
}

// resourceBaseline is the process's goroutines and open files now.
type resourceBaseline struct{ goroutines, files int }

func baseline(t *testing.T) resourceBaseline {
	return resourceBaseline{goroutines: runtime.NumGoroutine(), files: openFiles(t)}
}

// back waits until goroutines and open files are back to b (within slack:
// a reconnected session's goroutines may run a beat behind).
func (b resourceBaseline) back(t *testing.T) {
	t.Helper()
	waitUntil(t, "goroutines and files back to their baseline", func() (bool, string) {
		g, fd := runtime.NumGoroutine(), openFiles(t)
		return g <= b.goroutines+4 && fd <= b.files+2,
			fmt.Sprintf("%d goroutines (baseline %d), %d files (baseline %d); goroutines by function:\n%s", g, b.goroutines, fd, b.files, goroutineCensus())
	})
}

// goroutineCensus counts the running goroutines by the innermost function
// of this module on their stacks.
func goroutineCensus() string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	count := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		where := "other"
		for _, line := range strings.Split(g, "\n") {
			if strings.HasPrefix(line, "github.com/warren-tunnel/warren/") {
				where = strings.TrimPrefix(line, "github.com/warren-tunnel/warren/")
				if i := strings.LastIndex(where, "("); i > 0 {
					where = where[:i]
				}
				break
			}
		}
		count[where]++
	}
	var lines []string
	for w, n := range count {
		lines = append(lines, fmt.Sprintf("%5d %s", n, w))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// stopWithin stops a daemon with stop and fails t unless done closes
// within bound.
func stopWithin(t *testing.T, what string, stop func(), done <-chan struct{}, bound time.Duration) {
	t.Helper()
	start := time.Now()
	go stop()
	select {
	case <-done:
		t.Logf("%s stopped in %v", what, time.Since(start).Round(time.Millisecond))
	case <-time.After(bound + 10*time.Second):
		t.Fatalf("%s still running %v after it was told to stop (bound %v)", what, time.Since(start).Round(time.Millisecond), bound)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("%s stopped after %v, beyond shutdown_timeout + Goodbye wait + 1 s = %v", what, d.Round(time.Millisecond), bound)
	}
}

// stopBound is how long a daemon may take to stop: shutdown_timeout, the
// Goodbye wait (2 s) and one second.
func stopBound(shutdown time.Duration) time.Duration { return shutdown + 3*time.Second }

// TestBackendStopsReading is finding 1 of issue 11: uploads to a backend
// that never reads fill every buffer on the way. Another service of the
// same client keeps answering; when the session is dropped the client
// resets those connections and reconnects at once; told to stop, it is
// gone within shutdown_timeout plus the Goodbye wait.
func TestBackendStopsReading(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		srv := startServer(t, serverConfig(t, kind))
		ccfg := clientConfig(srv, tokenOffice,
			client.Service{Name: "echo", Target: backend(t, echo)},
			client.Service{Name: "deaf", Target: deafBackend(t)})
		ccfg.ShutdownTimeout = 2 * time.Second
		cli := startClient(t, ccfg)
		cli.waitSession(t, 1)
		roundTrip(t, cli.publicAddr(t, "echo"))
		base := baseline(t)
		probe := startProber(cli.publicAddr(t, "echo"))

		conns := stuck(t, cli.publicAddr(t, "deaf"), 8, true, nil)
		start := time.Now()
		disconnect(t, srv, probe)
		cli.waitSession(t, 2)
		t.Logf("reconnected %v after the disconnect", time.Since(start).Round(time.Millisecond))
		allReset(t, conns)
		base.back(t)

		stuck(t, cli.publicAddr(t, "deaf"), 8, true, nil)
		probe.check(t)
		stopWithin(t, "client", cli.cancel, cli.done, stopBound(ccfg.ShutdownTimeout))
	})
}

// TestPublicStopsReading is finding 2 of issue 11: downloads whose public
// clients never read. Another service keeps answering; when the session
// ends the server resets those public connections at once and holds
// nothing of them; told to stop, it is gone within shutdown_timeout plus
// the Goodbye wait.
func TestPublicStopsReading(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		scfg := serverConfig(t, kind)
		scfg.ShutdownTimeout = 2 * time.Second
		srv := startServer(t, scfg)
		blocked := newBlockedCount()
		cli := startClient(t, clientConfig(srv, tokenOffice,
			client.Service{Name: "echo", Target: backend(t, echo)},
			client.Service{Name: "flood", Target: backend(t, flood(blocked))}))
		cli.waitSession(t, 1)
		roundTrip(t, cli.publicAddr(t, "echo"))
		base := baseline(t)
		probe := startProber(cli.publicAddr(t, "echo"))

		conns := stuck(t, cli.publicAddr(t, "flood"), 8, false, blocked)
		disconnect(t, srv, probe)
		allReset(t, conns)
		cli.waitSession(t, 2)
		base.back(t)

		stuck(t, cli.publicAddr(t, "flood"), 8, false, blocked)
		probe.check(t)
		stopWithin(t, "server", srv.cancel, srv.done, stopBound(scfg.ShutdownTimeout))
	})
}

// TestStuckStreamsIsolation is finding 3 of issue 11: 64 downloads that
// nobody reads and 64 uploads to a backend that never reads, far more than
// a session's window holds. Another service of the same client answers
// every echo within echoBound throughout, the session lives on (no
// heartbeat timeout, no reconnect), the stuck connections that hold the
// most are reset, and once the attackers leave nothing of them remains.
func TestStuckStreamsIsolation(t *testing.T) {
	leaktest.Check(t)
	mux := session.DefaultMux()
	heartbeat := 300 * time.Millisecond // x 6 misses, as everywhere in e2e
	bound := echoBound
	if raceEnabled {
		// The race detector makes the CPU-bound path (TLS, KCP above
		// all: about 0.3 MB/s here) so slow on a busy 2-core machine
		// that moving 2 x 64 default stream windows takes minutes, and
		// an echo's frames, which wait their round-robin turn behind a
		// frame of every busy stream and then for what KCP has queued,
		// took over 20 s. So: windows of 256 KiB and 4 MiB, in the
		// defaults' ratio (the 128 stuck streams still hold 8 times what
		// a session does); heartbeats of 2 s (their fast deadline saw 3 s
		// of starved silence); echoes within 60 s (beside two busy loops
		// the slowest of some 1 000 took 4-35 s, on kcp, with 64 KiB
		// frames: see below). bench/ measures the echo p99 of the real
		// thing.
		mux.StreamWindow, mux.SessionWindow = 256<<10, 4<<20
		// Frames of 8 KiB, scaled down with the windows: smux's shaper
		// serves streams round robin, a frame per stream per turn, and
		// window updates and an echo's 4-byte end chunk take their turn
		// too; with 64 uploads each sending a 64 KiB frame that turn is
		// 4 MiB, and at the session's starved, paced rate an echo's end
		// chunk waited 21-22 s in it (goroutine dump: CloseWrite in
		// smux's writeFrameInternal beside 64 ReadBursts of 65527 bytes;
		// its reply's first byte had come in 0.2-0.4 s). With 8 KiB
		// frames each run's slowest echo took 0.7-1.7 s (4 runs; with
		// 64 KiB 2.1-3.8 s, and 20-22.5 s in 3 of 15).
		mux.FrameSize = 8 << 10
		heartbeat, bound = 2*time.Second, 60*time.Second
	}
	forEachTransport(t, func(t *testing.T, kind string) {
		scfg := serverConfig(t, kind)
		scfg.Mux, scfg.HeartbeatInterval = mux, heartbeat
		srv := startServer(t, scfg)
		blocked := newBlockedCount()
		ccfg := clientConfig(srv, tokenOffice,
			client.Service{Name: "echo", Target: backend(t, echo)},
			client.Service{Name: "deaf", Target: deafBackend(t)},
			client.Service{Name: "flood", Target: backend(t, flood(blocked))})
		ccfg.Mux, ccfg.HeartbeatInterval = mux, heartbeat
		cliReg, err := metrics.New(metrics.Config{Role: metrics.RoleClient, MaxNames: 16})
		if err != nil {
			t.Fatal(err)
		}
		cli := startClientWith(t, ccfg, func(c *client.Client) { c.SetMetrics(cliReg) })
		cli.waitSession(t, 1)
		roundTrip(t, cli.publicAddr(t, "echo"))
		base := baseline(t)
		probe := startProberBound(cli.publicAddr(t, "echo"), bound)

		const n = 64
		var attackers []*net.TCPConn
		var wg sync.WaitGroup
		for i := range 2 * n {
			c := dialReader(t, cli.publicAddr(t, map[bool]string{true: "deaf", false: "flood"}[i%2 == 0]))
			attackers = append(attackers, c)
			if i%2 == 0 {
				wg.Go(func() { // uploads until reset
					buf := make([]byte, 64<<10)
					for {
						if _, err := c.Write(buf); err != nil {
							return
						}
					}
				})
			} else {
				c.Write([]byte{1}) // a download nobody reads
			}
		}
		// The stuck data fills both sides' session windows: each resets
		// the stuck connections that hold the most. Then a while longer,
		// twice what a stalled session would take to miss its heartbeats.
		for _, reg := range []*metrics.Registry{srv.metrics, cliReg} {
			pressed(t, reg, max(waitTimeout, 4*bound))
		}
		time.Sleep(2 * time.Duration(ccfg.HeartbeatMisses+1) * ccfg.HeartbeatInterval)
		probe.check(t)
		if st := cli.Status(); st.Sessions != 1 || !st.Connected {
			t.Errorf("the session did not survive: %d sessions so far, connected %v, last error %v", st.Sessions, st.Connected, st.LastError)
			for _, l := range strings.Split(cli.logs.String()+srv.logs.String(), "\n") {
				if strings.Contains(l, "session down") {
					t.Log(l)
				}
			}
		}

		for _, c := range attackers {
			c.SetLinger(0)
			c.Close()
		}
		wg.Wait()
		srv.waitStreams(t, 0)
		base.back(t)
	})
}

// TestStallTimeout: an upload to a backend that never reads stalls; after
// the server's limits.stall_timeout the server resets the public side and
// counts it in warren_relays_aborted_total, and the client, told by the
// abort, resets the backend (its own stall_timeout is off here).
func TestStallTimeout(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		scfg := serverConfig(t, kind)
		scfg.Limits.StallTimeout = time.Second
		srv := startServer(t, scfg)
		reg := srv.metrics
		ccfg := clientConfig(srv, tokenOffice,
			client.Service{Name: "echo", Target: backend(t, echo)},
			client.Service{Name: "deaf", Target: deafBackend(t)})
		ccfg.StallTimeout = 0
		cli := startClient(t, ccfg)
		cli.waitSession(t, 1)
		roundTrip(t, cli.publicAddr(t, "echo"))
		base := baseline(t)

		conns := stuck(t, cli.publicAddr(t, "deaf"), 1, true, nil)
		start := time.Now()
		if !resetWithin(t, conns[0], waitTimeout) {
			t.Fatal("the stalled upload was never reset")
		}
		t.Logf("reset %v after it stalled (stall_timeout %v)", time.Since(start).Round(time.Millisecond), scfg.Limits.StallTimeout)
		srv.logs.WaitLine(t, "public connection closed", "service=deaf", "relay stalled")
		if got := counter(t, reg, "warren_relays_aborted_total", "stall"); got != 1 {
			t.Errorf("warren_relays_aborted_total{reason=stall} = %v, want 1", got)
		}
		conns[0].Close()
		base.back(t) // the client reset the backend side too
		roundTrip(t, cli.publicAddr(t, "echo"))
	})
}

// pressed waits, up to within, until reg has counted a connection reset
// by the pressure rule.
func pressed(t *testing.T, reg *metrics.Registry, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for counter(t, reg, "warren_relays_aborted_total", "pressure") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no connection reset by the pressure rule after %v", within)
		}
		time.Sleep(50 * time.Millisecond) // a counter has no change signal
	}
}

// counter reads a counter of reg with the label reason.
func counter(t *testing.T, reg *metrics.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

// TestPublicFINThenResetMidDownload is finding 4 of issue 11 end to end
// (session/relay_test.go has it in process): a download whose public
// reader stops reading, so the client's relay waits for window, then sends
// its FIN and resets. The client's relay must end and cut the backend off,
// though its blocked write is not woken by the stream's close.
func TestPublicFINThenResetMidDownload(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		srv := startServer(t, serverConfig(t, kind))
		blocked := newBlockedCount()
		halfClosed, cutOff := make(chan struct{}, 1), make(chan error, 1)
		dl := backend(t, func(c net.Conn) {
			go func() { // the request, then the public side's FIN
				io.Copy(io.Discard, c)
				halfClosed <- struct{}{}
			}()
			buf := make([]byte, 64<<10)
			noted := false
			for {
				c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := c.Write(buf)
				switch {
				case isTimeoutErr(err) && n == 0 && !noted:
					noted = true
					blocked.add()
				case err != nil && !isTimeoutErr(err):
					cutOff <- err
					return
				}
			}
		})
		cli := startClient(t, clientConfig(srv, tokenOffice,
			client.Service{Name: "echo", Target: backend(t, echo)},
			client.Service{Name: "dl", Target: dl}))
		cli.waitSession(t, 1)
		roundTrip(t, cli.publicAddr(t, "echo"))
		base := baseline(t)
		probe := startProber(cli.publicAddr(t, "echo"))

		c := stuck(t, cli.publicAddr(t, "dl"), 1, false, blocked)[0] // every buffer full
		c.CloseWrite()
		select { // the client's relay has the end and waits for the stream's close
		case <-halfClosed:
		case <-time.After(waitTimeout):
			t.Fatal("the backend never saw the public side's FIN")
		}
		c.SetLinger(0)
		c.Close()
		select {
		case err := <-cutOff:
			t.Logf("backend cut off: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the backend still writes into the tunnel 10 s after the public side reset")
		}
		probe.check(t)
		base.back(t)
	})
}
