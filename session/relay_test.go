package session

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/tcppair"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/transport"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// testPoller is the process's relay poller, held for the whole test
// binary as a daemon holds it for its Run.
var testPoller *relay.Poller

func TestMain(m *testing.M) {
	p, release := relay.Acquire()
	testPoller = p
	code := m.Run()
	release()
	os.Exit(code)
}

// runRelay relays c and st as the daemons do.
func runRelay(c net.Conn, st *Stream) relay.Result { return relay.Relay(c, st, testPoller) }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) { return tcppair.New(t) }

// tcpPairOf is tcpPair with a dialed by d and b accepted on a listener of
// lc (their Control sets socket options before the connection exists).
func tcpPairOf(t testing.TB, d net.Dialer, lc net.ListenConfig) (a, b *net.TCPConn) {
	return tcppair.Of(t, d, lc)
}

// relayPair runs a tunnel in miniature: public <-> Relay (server) <->
// session <-> Relay (client) <-> backend, all on loopback. It returns the
// public and backend ends, the sessions, and channels that yield each
// relay's result.
type miniTunnel struct {
	public, backend *net.TCPConn
	// The relays' connections: the server's to public, the client's to
	// backend.
	srvConn, cliConn *net.TCPConn
	srv, cli         *Session
	srvRelay         chan relay.Result
	cliRelay         chan relay.Result
	cliDone          <-chan error
}

func newMiniTunnel(t testing.TB) *miniTunnel {
	mem := &transporttest.Network{}
	return newMiniTunnelOver(t, [2]transport.Transport{mem, mem}, testConfig())
}

// newMiniTunnelOver is newMiniTunnel over the transports trs with cfg.
func newMiniTunnelOver(t testing.TB, trs [2]transport.Transport, cfg Config) *miniTunnel {
	t.Helper()
	m := &miniTunnel{}
	m.public, m.srvConn = tcpPair(t)
	m.backend, m.cliConn = tcpPair(t)
	return m.start(t, trs, cfg)
}

// start runs the sessions and the relays of m, whose connections are set.
func (m *miniTunnel) start(t testing.TB, trs [2]transport.Transport, cfg Config) *miniTunnel {
	t.Helper()
	m.srvRelay, m.cliRelay = make(chan relay.Result, 1), make(chan relay.Result, 1)
	var cliDone <-chan error
	m.srv, m.cli, _, cliDone = pair(t, trs, cfg, func(st *Stream) {
		m.cliRelay <- runRelay(m.cliConn, st)
	})
	m.cliDone = cliDone
	st, err := m.srv.Open(Header{Service: "web", Peer: m.public.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { m.srvRelay <- runRelay(m.srvConn, st) }()
	return m
}

func waitResult(t testing.TB, ch chan relay.Result, what string) relay.Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s relay still running", what)
		return relay.Result{}
	}
}

// TestRelayEndsWhenSessionDiesAfterHalfClose: the public side half-closes,
// the backend stays idle without closing. When the session then dies, both
// relays must still end (and the client session's Run return), though no
// socket has anything to read.
func TestRelayEndsWhenSessionDiesAfterHalfClose(t *testing.T) {
	leaktest.Check(t)
	m := newMiniTunnel(t)
	m.public.CloseWrite()
	// The backend sees the half-close: the end chunk arrived.
	m.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(m.backend); err != nil {
		t.Fatal(err)
	}
	closeEndsRelays(t, m, m.srv)
}

// closeEndsRelays closes sess, one of m's sessions, and checks that both
// relays end, the client's with ErrTruncated, and the client session's Run
// returns.
func closeEndsRelays(t *testing.T, m *miniTunnel, sess *Session) {
	t.Helper()
	sess.Close(CodeShuttingDown, "going away")
	if r := waitResult(t, m.cliRelay, "client"); !errors.Is(r.Err, ErrTruncated) {
		t.Errorf("client relay ended with %v, want ErrTruncated", r.Err)
	}
	waitResult(t, m.srvRelay, "server")
	select {
	case <-m.cliDone:
	case <-time.After(10 * time.Second):
		t.Fatal("client session's Run did not return")
	}
}

// TestRelayPeerGoneAfterItsEnd: the public side sends its request,
// half-closes, then resets in the middle of a long response. The client
// side must stop feeding the backend's response into a stream nobody reads
// and close the backend.
func TestRelayPeerGoneAfterItsEnd(t *testing.T) {
	leaktest.Check(t)
	m := newMiniTunnel(t)
	stopBackend := make(chan struct{})
	backendErr := make(chan error, 1)
	go func() { // the backend streams its response until it cannot
		buf := make([]byte, 32<<10)
		for {
			if _, err := m.backend.Write(buf); err != nil {
				backendErr <- err
				return
			}
			select {
			case <-stopBackend:
				backendErr <- nil
				return
			default:
			}
		}
	}()
	defer close(stopBackend)
	m.public.Write([]byte("GET /big"))
	m.public.CloseWrite()
	io.ReadFull(m.public, make([]byte, 1<<20))
	m.public.SetLinger(0)
	m.public.Close() // reset mid-download

	backendCutOff(t, m, backendErr)
	if m.cli.Err() != nil || m.srv.Err() != nil {
		t.Fatalf("the session died too: %v / %v", m.cli.Err(), m.srv.Err())
	}
}

// backendCutOff checks the end of a download whose public side went away:
// both relays end, the client's with an error, and the backend, which
// writes until it fails (its error on backendErr), is cut off.
func backendCutOff(t *testing.T, m *miniTunnel, backendErr <-chan error) {
	t.Helper()
	waitResult(t, m.srvRelay, "server")
	if r := waitResult(t, m.cliRelay, "client"); r.Err == nil {
		t.Error("client relay ended cleanly, want an error")
	}
	select {
	case err := <-backendErr:
		if err == nil {
			t.Fatal("backend was never cut off")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend still writing into the tunnel")
	}
}

func TestTruncateUTF8(t *testing.T) {
	cases := []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"}, // é is two bytes: do not split it
		{"héllo", 3, "hé"},
		{"日本", 4, "日"},
		{"", 0, ""},
	}
	for _, tc := range cases {
		if got := truncateUTF8(tc.in, tc.n); got != tc.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// TestRelayResetsPublicWhenSessionDiesMidUpload: while the public side is
// still sending, the session goes away. Whichever direction of the relay
// notices first, the public side must see a reset, never a clean EOF that
// would pass a truncated transfer off as complete. (The kernel reports a
// reset once, to the read or the write that comes first.)
func TestRelayResetsPublicWhenSessionDiesMidUpload(t *testing.T) {
	leaktest.Check(t)
	m := newMiniTunnel(t)
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := m.public.Write(buf); err != nil {
				werr <- err
				return
			}
		}
	}()
	// Data reaching the backend proves both relays run; then the session
	// goes.
	m.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(m.backend, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, m.backend)
	m.cli.Close(CodeShuttingDown, "going away")
	m.public.SetDeadline(time.Now().Add(10 * time.Second))
	_, rerr := io.ReadAll(m.public)
	if !errors.Is(rerr, syscall.ECONNRESET) {
		if err := <-werr; !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("public side: read ended with %v, write with %v; want a reset", rerr, err)
		}
	}
	waitResult(t, m.srvRelay, "server")
	waitResult(t, m.cliRelay, "client")
}

// realTransports are the transports of transports(t) over real sockets.
func realTransports(t *testing.T) map[string][2]transport.Transport {
	all := transports(t)
	delete(all, "memory")
	return all
}

// writeUntilBlocked writes to c until a write makes no progress for
// blockedAfter, then reports on blocked and goes on writing until c fails;
// the error arrives on done (and blocked is closed then, if not before).
func writeUntilBlocked(c net.Conn, blocked chan<- struct{}, done chan<- error) {
	const blockedAfter = 300 * time.Millisecond
	buf := make([]byte, 32<<10)
	reported := false
	for {
		c.SetWriteDeadline(time.Now().Add(blockedAfter))
		n, err := c.Write(buf)
		if isTimeout(err) {
			if n == 0 && !reported {
				reported = true
				close(blocked)
			}
			continue
		}
		if err != nil {
			done <- err
			if !reported {
				close(blocked)
			}
			return
		}
	}
}

// TestRelayPeerGoneWhileWriterBlocked is the lossy-link hang in process:
// a download whose public reader stops reading, so that the client's relay
// blocks writing into a full stream window; the public side then sends its
// FIN (the client relay now waits for the stream to close) and resets. The
// server's relay ends and closes the stream; the client's relay, whose
// write smux does not wake on that close, must end too, and cut the
// backend off.
func TestRelayPeerGoneWhileWriterBlocked(t *testing.T) {
	leaktest.Check(t)
	for name, trs := range realTransports(t) {
		t.Run(name, func(t *testing.T) {
			m := newMiniTunnelOver(t, trs, testConfig())
			blocked, backendErr := make(chan struct{}), make(chan error, 1)
			go writeUntilBlocked(m.backend, blocked, backendErr)
			m.public.Write([]byte("GET /big"))
			select { // every buffer on the way is full: the client's relay waits for window
			case <-blocked:
			case <-time.After(20 * time.Second):
				t.Fatal("the backend's writes never blocked")
			}
			m.public.CloseWrite()
			// The backend reads the half-close: the client's relay has the
			// end and waits for the stream to close.
			m.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(m.backend); err != nil {
				t.Fatalf("backend waiting for the half-close: %v", err)
			}
			m.public.SetLinger(0)
			m.public.Close()

			backendCutOff(t, m, backendErr)
		})
	}
}

// fillBackend makes the backend stop reading and the public side send
// until every buffer on the way is full: the client's relay is then blocked
// writing to the backend, the server's on the stream's window. It returns
// once the public side's writes block; the public writer keeps going in
// the background until its connection fails, and its error arrives on the
// returned channel.
func fillBackend(t *testing.T, m *miniTunnel) <-chan error {
	t.Helper()
	blocked, done := make(chan struct{}), make(chan error, 1)
	go writeUntilBlocked(m.public, blocked, done)
	select {
	case <-blocked:
	case <-time.After(20 * time.Second):
		t.Fatal("the public side's writes never blocked")
	}
	return done
}

// TestSessionEndResetsRelays: relays blocked writing to a backend that does
// not read (and into a full window on the other side) end the moment their
// session does, with both connections reset, and Run returns at once: no
// relay outlives its session, whatever its peers do.
func TestSessionEndResetsRelays(t *testing.T) {
	leaktest.Check(t)
	for name, trs := range realTransports(t) {
		t.Run(name, func(t *testing.T) {
			m := newMiniTunnelOver(t, trs, testConfig())
			publicErr := fillBackend(t, m)
			start := time.Now()
			closeEndsRelays(t, m, m.cli)
			// Close waits up to 2 s for the peer's hang-up; the rest is at once.
			if d := time.Since(start); d > goodbyeTimeout+time.Second {
				t.Errorf("relays ended %v after the session was closed", d)
			}
			m.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, m.backend); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("backend: %v, want a reset", err)
			}
			if err := <-publicErr; !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Errorf("public side: %v, want a reset", err)
			}
		})
	}
}

// TestStallTimeout: a backend that stops reading stalls both relays; after
// stall_timeout the stream is killed with ErrStalled, both ends reset, and
// the session carries on.
func TestStallTimeout(t *testing.T) {
	leaktest.Check(t)
	for name, trs := range realTransports(t) {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig()
			cfg.StallTimeout = 500 * time.Millisecond
			m := newMiniTunnelOver(t, trs, cfg)
			publicErr := fillBackend(t, m)
			rc, rs := waitResult(t, m.cliRelay, "client"), waitResult(t, m.srvRelay, "server")
			if !errors.Is(rc.Err, ErrStalled) && !errors.Is(rs.Err, ErrStalled) {
				t.Errorf("relays ended with %v (client), %v (server); want ErrStalled on one", rc.Err, rs.Err)
			}
			var ab *AbortError
			if !errors.Is(rc.Err, ErrStalled) && !errors.As(rc.Err, &ab) || !errors.Is(rs.Err, ErrStalled) && !errors.As(rs.Err, &ab) {
				t.Errorf("the side that did not stall ended with %v / %v; want the other's abort", rc.Err, rs.Err)
			}
			m.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, m.backend); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("backend: %v, want a reset", err)
			}
			if err := <-publicErr; !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Errorf("public side: %v, want a reset", err)
			}
			if m.cli.Err() != nil || m.srv.Err() != nil {
				t.Fatalf("the session died: %v / %v", m.cli.Err(), m.srv.Err())
			}
		})
	}
}

// pumpGoroutines counts goroutines running a pump's serve loop.
func pumpGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "(*pump).serve")
}

// TestIdleRelayHoldsNoPump: a relay direction that has been quiet for
// the relay's idle spell (relay.idleAfter) leaves its goroutine for the poller, and data arriving later
// still goes through.
func TestIdleRelayHoldsNoPump(t *testing.T) {
	leaktest.Check(t)
	m := newMiniTunnel(t)
	roundTrip := func(msg string) {
		t.Helper()
		m.public.Write([]byte(msg))
		got := make([]byte, len(msg))
		m.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(m.backend, got); err != nil || string(got) != msg {
			t.Fatalf("backend got %q, %v", got, err)
		}
		m.backend.Write([]byte(msg))
		m.public.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(m.public, got); err != nil || string(got) != msg {
			t.Fatalf("public got %q, %v", got, err)
		}
	}
	roundTrip("first")
	deadline := time.Now().Add(5 * time.Second)
	for pumpGoroutines() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pump goroutines still running on an idle relay", pumpGoroutines())
		}
		time.Sleep(10 * time.Millisecond)
	}
	roundTrip("after a quiet spell")
	m.public.CloseWrite()
	m.backend.CloseWrite()
	waitResult(t, m.srvRelay, "server")
	if r := waitResult(t, m.cliRelay, "client"); r.Err != nil {
		t.Fatalf("client relay: %v", r.Err)
	}
}

// relayGoroutines counts goroutines of relays: a direction carrying bytes
// (relay.(*run).down, (*pump).serve or plain) or a relay waited on.
func relayGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	s := string(buf)
	return strings.Count(s, "relay.(*run).down") + strings.Count(s, "relay.(*pump).serve") +
		strings.Count(s, "relay.(*pump).plain") + strings.Count(s, "relay.Relay(")
}

// TestIdleRelaysHoldNoGoroutine: relays started with relay.Start on both
// sides, once quiet for their idle spell, hold no goroutine in either
// direction (the stream-to-connection one waits for the stream's notice,
// the other in the poller); data arriving later goes through both ways,
// and the ends go through too.
func TestIdleRelaysHoldNoGoroutine(t *testing.T) {
	leaktest.Check(t)
	const n = 16
	mem := &transporttest.Network{}
	results := make(chan relay.Result, 2*n)
	var backends []*net.TCPConn
	var bmu sync.Mutex
	srv, _, _, _ := pair(t, [2]transport.Transport{mem, mem}, testConfig(), func(st *Stream) {
		backend, conn := tcpPair(t)
		bmu.Lock()
		backends = append(backends, backend)
		bmu.Unlock()
		relay.Start(conn, st, testPoller, func(r relay.Result) { results <- r })
	})
	var publics []*net.TCPConn
	for range n {
		public, conn := tcpPair(t)
		st, err := srv.Open(Header{Service: "web", Peer: public.LocalAddr().String()})
		if err != nil {
			t.Fatal(err)
		}
		relay.Start(conn, st, testPoller, func(r relay.Result) { results <- r })
		publics = append(publics, public)
	}
	// One byte each way on every connection; the backends are in the
	// order their streams arrived, so each echoes what it got.
	exchange := func(what string) {
		t.Helper()
		for _, p := range publics {
			p.Write([]byte(what))
		}
		tcppair.WaitFor(t, "every backend connected", func() bool {
			bmu.Lock()
			defer bmu.Unlock()
			return len(backends) == n
		})
		for _, b := range backends {
			got := make([]byte, len(what))
			b.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(b, got); err != nil || string(got) != what {
				t.Fatalf("backend got %q, %v", got, err)
			}
			b.Write(got)
		}
		for _, p := range publics {
			got := make([]byte, len(what))
			p.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(p, got); err != nil || string(got) != what {
				t.Fatalf("public got %q, %v", got, err)
			}
		}
	}
	exchange("hello")
	tcppair.WaitFor(t, "idle relays without goroutines", func() bool { return relayGoroutines() == 0 })
	exchange("after a quiet spell")
	tcppair.WaitFor(t, "idle relays without goroutines again", func() bool { return relayGoroutines() == 0 })
	for _, p := range publics {
		p.CloseWrite()
	}
	for _, b := range backends {
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		if rest, err := io.ReadAll(b); err != nil || len(rest) != 0 {
			t.Fatalf("backend read %q, %v after the public side's end", rest, err)
		}
		b.CloseWrite()
	}
	for range 2 * n {
		select {
		case r := <-results:
			if r.Err != nil {
				t.Fatalf("relay: %v", r.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("relays still running after both ends")
		}
	}
}

// TestOpenWithFirstBytes: the first bytes given to OpenWith reach the
// client right after the header, whether they fit beside it in one frame
// or not.
func TestOpenWithFirstBytes(t *testing.T) {
	leaktest.Check(t)
	mem := &transporttest.Network{}
	got := make(chan *Stream, 1)
	srv, _, _, _ := pair(t, [2]transport.Transport{mem, mem}, testConfig(), func(st *Stream) { got <- st })
	for _, size := range []int{1, 1000, 3 * testConfig().Mux.FrameSize} {
		first := bytes.Repeat([]byte("0123456789"), size/10+1)[:size]
		st, err := srv.OpenWith(Header{Service: "web", Peer: "203.0.113.7:51234"}, first)
		if err != nil {
			t.Fatal(err)
		}
		cst := <-got
		if h := cst.Header(); h.Service != "web" || h.Peer != "203.0.113.7:51234" {
			t.Fatalf("header %+v", h)
		}
		st.CloseWrite()
		b, err := io.ReadAll(cst)
		if err != nil || !bytes.Equal(b, first) {
			t.Fatalf("%d bytes: client read %d bytes, %v", size, len(b), err)
		}
		cst.Close()
		st.Close()
	}
}
