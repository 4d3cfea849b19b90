//go:build linux

package session

import (
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

func rawConn(t *testing.T, c *net.TCPConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func TestPollerFiresOnData(t *testing.T) {
	leaktest.Check(t)
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	a, b := tcpPair(t)
	fired := make(chan struct{}, 2)
	if _, err := p.arm(rawConn(t, b), false, func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
		t.Fatal("fired with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
	a.Write([]byte("x"))
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("did not fire on data")
	}
	// One-shot: more data does not fire it again until it is re-armed.
	a.Write([]byte("y"))
	select {
	case <-fired:
		t.Fatal("fired twice for one arm")
	case <-time.After(50 * time.Millisecond):
	}
	// Re-armed with data already waiting: fires at once (level-triggered).
	if _, err := p.arm(rawConn(t, b), true, func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("re-arm with pending data did not fire")
	}
}

func TestPollerDisarmAndClose(t *testing.T) {
	leaktest.Check(t)
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	a, b := tcpPair(t)
	_, d := tcpPair(t)
	fired := make(chan string, 2)
	id, err := p.arm(rawConn(t, b), false, func() { fired <- "b" })
	if err != nil {
		t.Fatal(err)
	}
	if !p.disarm(rawConn(t, b), id) {
		t.Fatal("disarm of an armed wait reported it fired")
	}
	a.Write([]byte("x"))
	if _, err := p.arm(rawConn(t, d), false, func() { fired <- "d" }); err != nil {
		t.Fatal(err)
	}
	p.close() // fires d's wait, never b's
	select {
	case who := <-fired:
		if who != "d" {
			t.Fatalf("%s fired", who)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close did not fire the armed wait")
	}
	if _, err := p.arm(rawConn(t, d), true, func() {}); err == nil {
		t.Fatal("arm after close succeeded")
	}
	p.close() // again: nothing
}

// pumpGoroutines counts goroutines running a pump's serve loop.
func pumpGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "(*pump).serve")
}

// TestIdleRelayHoldsNoPump: a relay direction that has been quiet for
// idleAfter leaves its goroutine for the poller, and data arriving later
// still goes through.
func TestIdleRelayHoldsNoPump(t *testing.T) {
	leaktest.Check(t)
	defer func(d time.Duration) { idleAfter = d }(idleAfter)
	idleAfter = 20 * time.Millisecond
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
