package e2e

// A client served by three servers at once, all real processes of the
// binary on loopback (127.0.0.1, .2 and .3, one tunnel port): one server
// killed with SIGKILL during transfers, and a rolling restart with
// SIGTERM under a steady load through a round-robin TCP front.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
)

// haGroup is three "warren server" processes side by side: server i at
// harness.ServerIP(i), its tunnel on port, its public ports there too,
// with a state directory (so a certificate) and an admin API of its own.
// Heartbeats are 500 ms x 6: a killed server shows at once anyway (a
// reset, or ICMP port unreachable for KCP), and a KCP session carrying
// transfers under -race on a busy machine can go a second without a Pong.
type haGroup struct {
	t      *testing.T
	dir    string
	kind   string
	port   int       // the tunnel port, the same at every address
	cfgs   [3]string // config files
	admins [3]string
	procs  [3]*proc
	fps    [3]string
}

func startHAGroup(t *testing.T, kind string) *haGroup {
	t.Helper()
	network := "tcp"
	if kind == "kcp" {
		network = "udp"
	}
	g := &haGroup{t: t, dir: t.TempDir(), kind: kind, port: harness.FreePort(t, 3, network)}
	tokenFile := writeFile(t, g.dir, "token", tokenOffice+"\n")
	for i := range g.procs {
		ip := harness.ServerIP(i).String()
		g.admins[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
		g.cfgs[i] = writeFile(t, g.dir, fmt.Sprintf("server%d.toml", i), fmt.Sprintf(`
[server]
public_address = %q
state_dir = %q
heartbeat_interval = "500ms"
heartbeat_misses = 6
shutdown_timeout = "5s"
[[server.listen]]
transport = %q
address = %q
[[server.clients]]
name = "office"
token_file = %q
ports = ["1024-65535"]
[server.log]
level = "debug"
format = "json"
[server.admin]
address = %q
`, ip, filepath.Join(g.dir, fmt.Sprintf("state%d", i)), kind, net.JoinHostPort(ip, strconv.Itoa(g.port)), tokenFile, g.admins[i]))
		g.start(i)
	}
	return g
}

// start runs server i (again, after it stopped) and waits until it is
// ready; its certificate is the same each time.
func (g *haGroup) start(i int) {
	g.t.Helper()
	p, st := startReadyServer(g.t, g.cfgs[i], g.admins[i])
	if g.fps[i] != "" && st.Fingerprint != g.fps[i] {
		g.t.Fatalf("server %d came back with fingerprint %s, was %s", i, st.Fingerprint, g.fps[i])
	}
	g.procs[i], g.fps[i] = p, st.Fingerprint
}

// publicAddr is where server i serves the public port.
func (g *haGroup) publicAddr(i, port int) string { return harness.PublicAddrAt(i, port) }

// client starts "warren client" for an echo service on the public port
// of every server (servers = [...], each pinned), and waits until it has
// a session to each and each server has it.
func (g *haGroup) client(target string, port int) *proc {
	g.t.Helper()
	var servers, fps []string
	for i := range g.procs {
		servers = append(servers, strconv.Quote(g.kind+"://"+net.JoinHostPort(harness.ServerIP(i).String(), strconv.Itoa(g.port))))
		fps = append(fps, strconv.Quote(g.fps[i]))
	}
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(g.t)))
	cfg := writeFile(g.t, g.dir, "client.toml", fmt.Sprintf(`
[client]
servers = [%s]
token_env = "WARREN_TEST_TOKEN"
heartbeat_interval = "500ms"
heartbeat_misses = 6
shutdown_timeout = "5s"
[client.tls]
fingerprint = [%s]
[[client.services]]
name = "echo"
target = %q
remote_port = %d
[client.log]
level = "debug"
format = "json"
[client.admin]
address = %q
`, strings.Join(servers, ", "), strings.Join(fps, ", "), target, port, adminAddr))
	p := startProc(g.t, []string{"WARREN_TEST_TOKEN=" + tokenOffice}, "client", "-c", cfg)
	p.admin = admin.Client{Addr: adminAddr}
	waitServersUp(p, 3)
	for i := range g.procs {
		g.waitSession(i)
	}
	return p
}

// waitSession waits until server i has the client's session.
func (g *haGroup) waitSession(i int) {
	g.t.Helper()
	g.procs[i].waitStatus("office's session", func(st admin.Status) bool { return sessionOn(st, "office", g.kind+"+tls") })
}

// waitServersUp waits until the client's status shows n servers up, and
// returns it.
func waitServersUp(p *proc, n int) admin.Status {
	p.t.Helper()
	return p.waitStatus(strconv.Itoa(n)+" servers up", func(st admin.Status) bool { return serversUp(st) == n })
}

// serversUp counts the servers up in a client's status.
func serversUp(st admin.Status) int {
	n := 0
	for _, s := range st.Servers {
		if s.State == admin.ServerUp {
			n++
		}
	}
	return n
}

// TestHAEachServes: a client of three servers serves its service on the
// public port of each, byte-exact.
func TestHAEachServes(t *testing.T) {
	forEachTransport(t, func(t *testing.T, kind string) {
		g := startHAGroup(t, kind)
		port := harness.FreePort(t, 3, "tcp")
		cli := g.client(backend(t, echo), port)
		for i := range g.procs {
			if err := pacedEcho(g.publicAddr(i, port), uint64(i), 1<<20, nil); err != nil {
				t.Errorf("through server %d: %v", i, err)
			}
		}
		cli.stop(syscall.SIGTERM)
	})
}

// TestHAServerKilled: one of three servers killed (SIGKILL) during
// transfers through all three: the transfers through the other two end
// intact, the ones through it end in an error and never with a wrong
// byte, and the client serves through it again once it is back.
func TestHAServerKilled(t *testing.T) {
	forEachTransport(t, func(t *testing.T, kind string) {
		g := startHAGroup(t, kind)
		port := harness.FreePort(t, 3, "tcp")
		cli := g.client(backend(t, echo), port)
		const perServer = 2
		var wg sync.WaitGroup
		errs := make([][perServer]error, 3)
		started := make(chan struct{}, 3*perServer)
		for i := range g.procs {
			for j := range perServer {
				wg.Go(func() { errs[i][j] = pacedEcho(g.publicAddr(i, port), uint64(10*i+j), 2<<20, started) })
			}
		}
		for range 3 * perServer {
			<-started // every transfer has bytes back
		}
		g.procs[0].cmd.Process.Kill()
		g.procs[0].wait()
		wg.Wait()
		for i := range g.procs {
			for j := range perServer {
				err := errs[i][j]
				switch {
				case i == 0 && err == nil:
					t.Errorf("transfer %d through the killed server ended intact: it was not cut", j)
				case i == 0 && errors.Is(err, errCorrupt):
					t.Errorf("transfer %d through the killed server: %v", j, err)
				case i > 0 && err != nil:
					t.Errorf("transfer %d through server %d: %v", j, i, err)
				}
			}
		}
		waitServersUp(cli, 2)
		g.start(0)
		waitServersUp(cli, 3)
		g.waitSession(0)
		if err := pacedEcho(g.publicAddr(0, port), 99, 64<<10, nil); err != nil {
			t.Errorf("through the server back: %v", err)
		}
		cli.stop(syscall.SIGTERM)
	})
}

// errCorrupt: bytes came back that were not the bytes sent.
var errCorrupt = errors.New("corrupt bytes")

// pacedEcho sends size bytes of seed's stream through an echo service at
// addr, 64 KiB every 10 ms, and checks what comes back: an error when it
// ends early (errCorrupt when a byte differs). started gets a value once
// the first bytes are back.
func pacedEcho(addr string, seed uint64, size int, started chan<- struct{}) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * waitTimeout))
	want := harness.StreamBytes(seed, int64(size))
	go func() {
		for off := 0; off < size; off += 64 << 10 {
			if _, err := c.Write(want[off:min(off+64<<10, size)]); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	got := make([]byte, 0, size)
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && len(got) == 0 && started != nil {
			started <- struct{}{}
		}
		got = append(got, buf[:n]...)
		if len(got) > size || !bytes.Equal(got, want[:len(got)]) {
			return fmt.Errorf("%w: after %d bytes", errCorrupt, len(got))
		}
		if err == io.EOF && len(got) == size {
			return nil
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if len(got) == 0 && started != nil {
				started <- struct{}{}
			}
			return fmt.Errorf("%d of %d bytes back: %w", len(got), size, err)
		}
	}
}

// TestHARollingRestart: the three servers restarted one at a time with
// SIGTERM, each waited for until the client serves through it again,
// under a steady load of short requests (50 a second) through a
// round-robin front that skips a server refusing connections and sends a
// request again when its connection ends before any response byte (as
// HAProxy's retry-on conn-failure empty-response): no request fails, no
// byte is wrong.
func TestHARollingRestart(t *testing.T) {
	forEachTransport(t, func(t *testing.T, kind string) {
		g := startHAGroup(t, kind)
		port := harness.FreePort(t, 3, "tcp")
		cli := g.client(backend(t, echo), port)
		var publics []string
		for i := range g.procs {
			publics = append(publics, g.publicAddr(i, port))
		}
		f := startFront(t, publics)
		ld := startLoad(f.addr(), 50)
		ld.waitOK(t, 25) // half a second of load before the first restart
		for i := range g.procs {
			if code := g.procs[i].stop(syscall.SIGTERM); code != exitOK {
				t.Fatalf("server %d exited %d on SIGTERM", i, code)
			}
			restarted := time.Now()
			g.start(i)
			waitServersUp(cli, 3)
			g.waitSession(i)
			t.Logf("server %d: served again %v after it started", i, time.Since(restarted).Round(time.Millisecond))
		}
		ld.waitOK(t, ld.result().ok+25) // and half a second after the last
		res := ld.stop()
		t.Logf("%d requests, %d failed, %d corrupt; front: %d refused connects skipped, %d requests sent again",
			res.ok+res.failed, res.failed, res.corrupt, f.skipped.Load(), f.retried.Load())
		if res.failed > 0 || res.corrupt > 0 || res.ok == 0 {
			t.Errorf("%d requests failed, %d corrupt, %d ok; first errors: %v", res.failed, res.corrupt, res.ok, res.errs)
		}
		cli.stop(syscall.SIGTERM)
	})
}

// front is a round-robin TCP balancer for tests of several servers. Each
// connection is a request: it reads what the client sends until the
// client half-closes (at most 1 MiB), then sends it to the next backend in
// turn, skipping one that refuses the connection, and sends it again to
// the next when the backend's connection ends (reset or closed) before
// any response byte: HAProxy's "retry-on conn-failure empty-response".
// Once a response byte is back, the rest is copied as it comes.
type front struct {
	l                net.Listener
	backends         []string
	next             atomic.Uint64
	skipped, retried atomic.Int64
	wg               sync.WaitGroup
}

func startFront(t *testing.T, backends []string) *front {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{l: l, backends: backends}
	f.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		f.wg.Wait()
	})
	return f
}

func (f *front) addr() string { return f.l.Addr().String() }

// serve carries one request; a request no backend answers is reset.
func (f *front) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	req, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil {
		return
	}
	for range 4 * len(f.backends) {
		b := f.backends[f.next.Add(1)%uint64(len(f.backends))]
		u, err := net.DialTimeout("tcp", b, 5*time.Second)
		if err != nil {
			f.skipped.Add(1)
			continue
		}
		u.SetDeadline(time.Now().Add(waitTimeout))
		u.Write(req)
		u.(*net.TCPConn).CloseWrite()
		buf := make([]byte, 32<<10)
		n, err := u.Read(buf)
		if n == 0 {
			u.Close()
			f.retried.Add(1)
			continue
		}
		c.Write(buf[:n])
		if err == nil {
			_, err = io.Copy(c, u)
		}
		u.Close()
		if err != nil && err != io.EOF {
			c.(*net.TCPConn).SetLinger(0) // a response cut short is a reset, never a clean end
		}
		return
	}
	c.(*net.TCPConn).SetLinger(0)
}

// load sends short echo requests at a steady rate until stopped.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    loadResult
	more   chan struct{} // closed and replaced at each result
}

type loadResult struct {
	ok, failed, corrupt int
	errs                []string // the first few
}

// startLoad sends perSecond requests a second to addr: each a connection
// with 64 to 4096 random bytes, half-closed, whose echo must come back
// whole.
func startLoad(addr string, perSecond int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	ld := &load{cancel: cancel, more: make(chan struct{})}
	ld.wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for n := uint64(0); ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ld.wg.Go(func() { ld.record(request(addr, n)) })
		}
	})
	return ld
}

func (ld *load) record(err error) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	close(ld.more)
	ld.more = make(chan struct{})
	switch {
	case err == nil:
		ld.res.ok++
		return
	case errors.Is(err, errCorrupt):
		ld.res.corrupt++
	default:
		ld.res.failed++
	}
	if len(ld.res.errs) < 5 {
		ld.res.errs = append(ld.res.errs, err.Error())
	}
}

// result is what the requests ended so far came to.
func (ld *load) result() loadResult {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.res
}

// waitOK waits until n requests have succeeded.
func (ld *load) waitOK(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		ld.mu.Lock()
		ok, more := ld.res.ok, ld.more
		ld.mu.Unlock()
		if ok >= n {
			return
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("%d requests succeeded after %v, want %d: %+v", ok, waitTimeout, n, ld.result())
		}
	}
}

// stop stops sending and waits for the requests under way.
func (ld *load) stop() loadResult {
	ld.cancel()
	ld.wg.Wait()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.res
}

// request sends request n to an echo service at addr and checks the echo.
func request(addr string, n uint64) error {
	r := rand.New(rand.NewPCG(n, 7))
	msg := make([]byte, 64+r.IntN(4096-64))
	for i := range msg {
		msg[i] = byte(r.Uint32())
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	switch {
	case len(got) > len(msg) || !bytes.Equal(got, msg[:len(got)]):
		return fmt.Errorf("request %d: %w", n, errCorrupt)
	case err != nil:
		return fmt.Errorf("request %d: %d of %d bytes back: %w", n, len(got), len(msg), err)
	case len(got) < len(msg):
		return fmt.Errorf("request %d: %d of %d bytes back", n, len(got), len(msg))
	}
	return nil
}
