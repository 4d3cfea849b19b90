// Package tcppair gives tests both ends of a real loopback TCP connection.
package tcppair

import (
	"context"
	"net"
	"testing"
	"time"
)

// New returns both ends of a loopback TCP connection, closed when the test
// ends.
func New(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	return Of(t, net.Dialer{}, net.ListenConfig{})
}

// Of is New with a dialed by d and b accepted on a listener of lc (their
// Control sets socket options before the connection exists).
func Of(t testing.TB, d net.Dialer, lc net.ListenConfig) (a, b *net.TCPConn) {
	t.Helper()
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		done <- c
	}()
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// WaitFor polls cond, a kernel state no event announces, for up to 10 s.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10 s", what)
		}
	}
}
