package e2e

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
)

// waitUntil polls cond (no change signal exists for what it reads) until
// it holds or waitTimeout passes, and says what it last saw.
func waitUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %v", what, saw, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pendingIs is a waitUntil condition on the server's handshakes.
func pendingIs(srv *testServer, ok func(int) bool) func() (bool, string) {
	return func() (bool, string) {
		n := srv.Pending()
		return ok(n), fmt.Sprintf("%d handshakes pending", n)
	}
}

// transfer sends size bytes of seed's stream through an echo service at
// addr and checks they come back intact.
func transfer(t *testing.T, addr string, seed uint64, size int64) {
	t.Helper()
	c := dialPublic(t, addr)
	c.SetDeadline(time.Now().Add(2 * waitTimeout))
	sent := make(chan [32]byte, 1)
	go func() {
		sum, _ := randomStream(c, seed, size)
		c.CloseWrite()
		sent <- sum
	}()
	got, n, err := sumAll(c)
	if err != nil || n != size || got != <-sent {
		t.Fatalf("transfer via %s: %d of %d bytes back, %v", addr, n, size, err)
	}
}

// TestSlowUnauthenticated: 1000 connections to the tunnel port, from 40
// source addresses, that start a TLS handshake and go silent. A real client
// still connects and transfers; when the intruders leave, nothing of them
// stays.
func TestSlowUnauthenticated(t *testing.T) {
	leaktest.Check(t)
	const sources, perSource = 40, 25
	target := backend(t, echo)
	srv := startServer(t, serverConfig(t, "tcp"))

	var slow []net.Conn
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	for i := range sources {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i+1))}}
		for range perSource {
			c, err := d.Dial("tcp", srv.addr())
			if err != nil {
				t.Fatalf("slow connection %d: %v", len(slow), err)
			}
			c.Write(tlsHelloStart)
			slow = append(slow, c)
		}
	}
	waitUntil(t, "intruders in their handshake", pendingIs(srv, func(n int) bool { return n == sources*perSource }))

	cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: target}))
	cli.waitSession(t, 1)
	transfer(t, cli.publicAddr(t, "echo"), 1, 8<<20)

	for _, c := range slow {
		c.Close()
	}
	slow = nil
	waitUntil(t, "intruders gone", pendingIs(srv, func(n int) bool { return n == 0 }))
}

// TestUDPGarbage: datagrams of garbage and of forged KCP segments, each
// source address sending a few and going away (as spoofed sources do),
// hit the KCP port while a real client connects. kcp-go makes a session of
// every new source; the handshake limits bound those (per source IP, and
// in all), and the handshake deadline expires them.
func TestUDPGarbage(t *testing.T) {
	leaktest.Check(t)
	const sources = 16
	target := backend(t, echo)
	cfg := serverConfig(t, "kcp")
	cfg.Limits.HandshakeTimeout = time.Second
	cfg.Limits.MaxHandshakesPerIP = 8
	// The flood costs CPU (under the race detector most of all); liveness
	// is not what this test is about.
	cfg.HeartbeatInterval = time.Second
	srv := startServer(t, cfg)
	to, err := net.ResolveUDPAddr("udp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxPending, sent := 0, 0
	for i := range sources {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			buf := make([]byte, 1400)
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 3, byte(i+1))})
				if err != nil {
					t.Error(err)
					return
				}
				for n := range 4 {
					size := 24 + rng.IntN(len(buf)-24)
					for j := range buf[:size] {
						buf[j] = byte(rng.Uint32())
					}
					if n%2 == 0 { // a well-formed first KCP data segment
						binary.LittleEndian.PutUint32(buf[0:], rng.Uint32())
						buf[4] = 81 // IKCP_CMD_PUSH
						binary.LittleEndian.PutUint32(buf[12:], 0)
						binary.LittleEndian.PutUint32(buf[20:], uint32(size-24))
					}
					pc.WriteTo(buf[:size], to)
				}
				pc.Close()
				mu.Lock()
				sent += 4
				maxPending = max(maxPending, srv.Pending())
				mu.Unlock()
			}
		})
	}

	ccfg := clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: target})
	ccfg.HeartbeatInterval = time.Second
	cli := startClient(t, ccfg)
	cli.waitSession(t, 1)
	transfer(t, cli.publicAddr(t, "echo"), 2, 4<<20)
	close(stop)
	wg.Wait()
	mu.Lock()
	bound := sources*cfg.Limits.MaxHandshakesPerIP + 1 // and the real client
	t.Logf("%d forged datagrams; handshakes pending at most %d (bound %d)", sent, maxPending, bound)
	if maxPending > bound {
		t.Errorf("%d handshakes pending, over %d sources x max_handshakes_per_ip + 1", maxPending, sources)
	}
	mu.Unlock()
	waitUntil(t, "forged conversations expired", pendingIs(srv, func(n int) bool { return n == 0 }))
	roundTrip(t, cli.publicAddr(t, "echo"))
}

// TestReconnectStorm: 100 clients are connected when the server restarts;
// every one reconnects by itself and gets its port back.
func TestReconnectStorm(t *testing.T) {
	leaktest.Check(t)
	const n = 100
	target := backend(t, echo)
	cfg := serverConfig(t, "tcp")
	cfg.HeartbeatInterval = 2 * time.Second // 100 sessions on 2 cores
	// 1000 ports outside the ephemeral range, at random (other test runs
	// may search theirs): a port the kernel picked could be the source
	// port of a reconnecting client by the time the new server binds it
	// again.
	lo, hi := harness.StaticPorts()
	lo += rand.N(hi - lo - 1000)
	all := []server.PortRange{{Lo: lo, Hi: lo + 999}}
	for i := range n {
		cfg.Clients = append(cfg.Clients, server.Client{Name: fmt.Sprintf("storm%d", i), Token: fmt.Sprintf("storm-token-%04d-0123456789", i), Ports: all})
	}
	srv := startServer(t, cfg)
	clients := make([]*testClient, n)
	for i := range n {
		ccfg := clientConfig(srv, fmt.Sprintf("storm-token-%04d-0123456789", i), client.Service{Name: "echo", Target: target})
		ccfg.HeartbeatInterval = 2 * time.Second
		ccfg.HeartbeatMisses = 3
		clients[i] = startClient(t, ccfg)
	}
	ports := make([]string, n)
	for i, c := range clients {
		c.waitSession(t, 1)
		ports[i] = c.publicAddr(t, "echo")
	}
	srv.waitSessions(t, n)

	srv.stop()
	cfg.Listen[0].Address = srv.addr()
	srv2 := startServer(t, cfg)
	start := time.Now()
	for _, c := range clients {
		c.waitSession(t, 2)
	}
	t.Logf("%d clients back %v after the restart", n, time.Since(start).Round(time.Millisecond))
	srv2.waitSessions(t, n)
	for i, c := range clients {
		if got := c.publicAddr(t, "echo"); got != ports[i] {
			t.Errorf("client %d: port %s after the restart, had %s", i, got, ports[i])
		}
		roundTrip(t, ports[i])
	}
}

// TestManyConnections: 10 000 public connections open at once through one
// session (2 000 under the race detector, which caps live goroutines),
// each proven to reach the backend; then all closed. The server's
// goroutines and file descriptors, and the client's file descriptors,
// return to where they were. The public side, the client and the backend
// are processes of their own: one process may not open the sockets of
// all of them.
func TestManyConnections(t *testing.T) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("WARREN_E2E_CONNS")); err == nil {
		n = v
	}
	if raceEnabled {
		n = 2000
	}
	raiseFileLimit(t, uint64(n+1024))
	leaktest.Check(t)
	backendProc := startHelper(t, "echo")
	target := backendProc.line(t)
	scfg := serverConfig(t, "tcp")
	scfg.Limits.MaxStreamsPerService = n // one service takes them all here
	srv := startServer(t, scfg)
	cli, port := binClient(t, t.TempDir(), "tcp", srv.addr(), srv.Fingerprint(), tokenOffice, target, 0)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	roundTrip(t, addr)
	cliPID := cli.cmd.Process.Pid
	baseG, baseFD, baseCliFD := runtime.NumGoroutine(), openFiles(t), filesOf(t, cliPID)

	dialer := startHelper(t, "dial", "WARREN_E2E_ADDR="+addr, "WARREN_E2E_N="+strconv.Itoa(n))
	if got := dialer.line(t); got != "ok" {
		t.Fatalf("opening %d connections: %s", n, got)
	}
	srv.waitStreams(t, n)
	t.Logf("%d connections open: server %d goroutines (baseline %d), %d files (baseline %d); client %d files (baseline %d)",
		n, runtime.NumGoroutine(), baseG, openFiles(t), baseFD, filesOf(t, cliPID), baseCliFD)

	dialer.stop()
	srv.waitStreams(t, 0)
	waitUntil(t, "back to baseline", func() (bool, string) {
		g, fd, cfd := runtime.NumGoroutine(), openFiles(t), filesOf(t, cliPID)
		return g <= baseG+5 && fd <= baseFD+5 && cfd <= baseCliFD+5,
			fmt.Sprintf("server %d goroutines (baseline %d), %d files (baseline %d); client %d files (baseline %d)", g, baseG, fd, baseFD, cfd, baseCliFD)
	})
}

// raiseFileLimit makes room for want open files, or skips the test.
func raiseFileLimit(t *testing.T, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("no file limit to read: %v", err)
	}
	if lim.Cur >= want {
		return
	}
	old := lim
	lim.Cur = want
	if lim.Max < want {
		lim.Max = want // root may raise the hard limit
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("needs %d open files; the limit is %d and cannot be raised: %v", want, old.Cur, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}
