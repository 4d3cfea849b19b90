package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// TestConn: memnet connections are net.Conns as the standard suite
// defines them.
func TestConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		var n Network
		l, err := n.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, nil, err
		}
		c1, err = n.Dial(context.Background(), "tcp", l.Addr().String())
		if err != nil {
			return nil, nil, nil, err
		}
		c2, err = l.Accept()
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() { c1.Close(); c2.Close(); l.Close() }, nil
	})
}

func TestListenAddresses(t *testing.T) {
	var n Network
	l, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if port < ephemeralLo || port > ephemeralHi {
		t.Fatalf("port 0 bound %d, outside the ephemeral range", port)
	}
	for _, addr := range []string{l.Addr().String(), net.JoinHostPort("0.0.0.0", strconv.Itoa(port))} {
		_, err := n.Listen("tcp", addr)
		if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "bind: address already in use") {
			t.Fatalf("listen %s again: %v, want address already in use", addr, err)
		}
	}
	other, err := n.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("another address on the same port: %v", err)
	}
	other.Close()
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	_, err = n.Dial(context.Background(), "tcp", l.Addr().String())
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "connect: connection refused") {
		t.Fatalf("dial a closed port: %v, want connection refused", err)
	}
	if _, err := n.Listen("tcp", l.Addr().String()); err != nil {
		t.Fatalf("the address was not released: %v", err)
	}
}

func TestWildcardAndNames(t *testing.T) {
	var n Network
	l, err := n.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n.AddHost("db.internal", netip.MustParseAddr("10.0.0.7"))
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	for _, host := range []string{"127.0.0.1", "localhost", "db.internal"} {
		c, err := n.Dial(context.Background(), "tcp", net.JoinHostPort(host, port))
		if err != nil {
			t.Fatalf("dial %s: %v", host, err)
		}
		s, _ := l.Accept()
		if s.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("addresses do not match: %v, %v", s.RemoteAddr(), c.LocalAddr())
		}
		c.Close()
		s.Close()
	}
	_, err = n.Dial(context.Background(), "tcp", "nowhere.internal:1")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("dial an unknown name: %v, want no such host", err)
	}
	from := netip.MustParseAddr("127.0.2.1")
	c, err := n.DialFrom(context.Background(), from, "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, _ := l.Accept()
	defer s.Close()
	if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != from {
		t.Fatalf("the peer is from %v, want %v", got, from)
	}
}

// TestEnds: half-close, reset by linger 0, reset by unread bytes, and
// writes after the peer left, as TCP does them.
func TestEnds(t *testing.T) {
	pair := func(t *testing.T) (a, b *Conn) {
		var n Network
		l, _ := n.Listen("tcp", "127.0.0.1:0")
		c, err := n.Dial(context.Background(), "tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, _ := l.Accept()
		l.Close()
		t.Cleanup(func() { c.Close(); s.Close() })
		return c.(*Conn), s.(*Conn)
	}
	t.Run("half-close", func(t *testing.T) {
		a, b := pair(t)
		a.Write([]byte("request"))
		a.CloseWrite()
		got, err := io.ReadAll(b)
		if err != nil || string(got) != "request" {
			t.Fatalf("read %q, %v", got, err)
		}
		b.Write([]byte("reply"))
		b.Close()
		got, err = io.ReadAll(a)
		if err != nil || string(got) != "reply" {
			t.Fatalf("the half-closed side read %q, %v", got, err)
		}
		if _, err := a.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("write after CloseWrite: %v", err)
		}
	})
	t.Run("linger 0", func(t *testing.T) {
		a, b := pair(t)
		a.Write([]byte("lost"))
		a.SetLinger(0)
		a.Close()
		if _, err := io.ReadAll(b); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after the peer's reset: %v", err)
		}
	})
	t.Run("closed with unread bytes", func(t *testing.T) {
		a, b := pair(t)
		b.Write([]byte("reply"))
		a.Write([]byte("never read"))
		b.Close()
		if _, err := io.ReadAll(a); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after the peer closed with unread bytes: %v", err)
		}
	})
	t.Run("write after the peer closed", func(t *testing.T) {
		a, b := pair(t)
		b.Close()
		if _, err := a.Write([]byte("x")); err != nil {
			t.Fatalf("the first write after the peer closed: %v", err)
		}
		if _, err := a.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after the peer answered with a reset: %v", err)
		}
		if _, err := a.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("the second write: %v", err)
		}
	})
	t.Run("backpressure", func(t *testing.T) {
		a, b := pair(t)
		a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := a.Write(make([]byte, 2*BufferSize))
		var ne net.Error
		if n != BufferSize || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("wrote %d bytes into a full buffer, %v; want %d and a timeout", n, err, BufferSize)
		}
		if got, _ := io.ReadFull(b, make([]byte, BufferSize)); got != BufferSize {
			t.Fatalf("read %d", got)
		}
	})
}

// TestListenerDeadline: a listener's deadline ends an Accept waiting, and
// one that has passed fails Accept even with a connection queued, as on a
// real TCP listener; a later deadline lets Accept take it.
func TestListenerDeadline(t *testing.T) {
	type deadliner interface {
		net.Listener
		SetDeadline(time.Time) error
	}
	var n Network
	nets := map[string]struct {
		listen func() (deadliner, error)
		dial   func(addr string) (net.Conn, error)
	}{
		"memnet": {
			func() (deadliner, error) { l, err := n.Listen("tcp", "127.0.0.1:0"); return l.(*Listener), err },
			func(addr string) (net.Conn, error) { return n.Dial(context.Background(), "tcp", addr) },
		},
		"tcp": {
			func() (deadliner, error) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				return l.(*net.TCPListener), err
			},
			func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
		},
	}
	for name, nw := range nets {
		t.Run(name, func(t *testing.T) {
			l, err := nw.listen()
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			got := make(chan error, 1)
			go func() {
				_, err := l.Accept()
				got <- err
			}()
			l.SetDeadline(time.Now())
			if err := <-got; !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Accept waiting when the deadline was set: %v", err)
			}
			c, err := nw.dial(l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := l.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Accept past the deadline with a connection queued: %v", err)
			}
			l.SetDeadline(time.Now().Add(time.Minute))
			s, err := l.Accept()
			if err != nil {
				t.Fatalf("Accept after a later deadline: %v", err)
			}
			s.Close()
			l.SetDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := l.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Accept with nothing queued: %v", err)
			}
		})
	}
}
