//go:build linux

package relay

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/tcppair"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) { return tcppair.New(t) }

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
