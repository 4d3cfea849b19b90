// Package transporttest provides an in-memory transport.Transport for unit
// tests of the layers above the transport, and the behaviour suite of the
// Transport contract (Run, RunConn) that every transport, this one
// included, must pass. It is not a substitute for the real TCP and KCP
// transports, which tests exercise on loopback.
package transporttest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/warren-tunnel/warren/transport"
)

// Network is an in-memory Transport: Listen registers an address, Dial
// connects to it through a synchronous net.Pipe. The zero value is ready to
// use.
//
// The listener's end of a connection has the dialler's address as its
// RemoteAddr: "127.0.0.1:N" for Dial (N counting up, as ephemeral ports
// do), the address given to DialFrom otherwise.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*listener
	ports     int // the last source port given out
}

var _ transport.Transport = (*Network)(nil)

func (n *Network) String() string { return "memory" }

// Dial connects to the listener at addr, or fails as a refused TCP dial
// would when there is none.
func (n *Network) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return n.DialFrom(ctx, "", addr)
}

// DialFrom is Dial from the source address from ("host:port", or a host
// alone, which gets the next source port; "" is 127.0.0.1), so that tests
// can reach a listener from several addresses.
func (n *Network) DialFrom(ctx context.Context, from, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.listeners[addr]
	if from == "" {
		from = "127.0.0.1"
	}
	if _, _, err := net.SplitHostPort(from); err != nil {
		n.ports++
		from = net.JoinHostPort(from, strconv.Itoa(1024+n.ports%64000))
	}
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("memory dial %s: connection refused", addr)
	}
	c, s := net.Pipe()
	client := &conn{Conn: c, local: memAddr(from), remote: memAddr(addr)}
	server := &conn{Conn: s, local: memAddr(addr), remote: memAddr(from)}
	select {
	case l.accept <- server:
		return client, nil
	case <-l.die:
		return nil, fmt.Errorf("memory dial %s: connection refused", addr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Listen registers addr. It fails if addr is taken.
func (n *Network) Listen(addr string) (transport.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listeners == nil {
		n.listeners = make(map[string]*listener)
	}
	if n.listeners[addr] != nil {
		return nil, fmt.Errorf("memory listen %s: address already in use", addr)
	}
	l := &listener{net: n, addr: addr, accept: make(chan net.Conn), die: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

type listener struct {
	net     *Network
	addr    string
	accept  chan net.Conn
	die     chan struct{}
	dieOnce sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.die:
		return nil, fmt.Errorf("memory accept %s: %w", l.addr, net.ErrClosed)
	}
}

func (l *listener) Close() error {
	l.dieOnce.Do(func() {
		close(l.die)
		l.net.mu.Lock()
		delete(l.net.listeners, l.addr)
		l.net.mu.Unlock()
	})
	return nil
}

func (l *listener) Addr() net.Addr { return memAddr(l.addr) }

// conn is a pipe end with the addresses of its connection.
type conn struct {
	net.Conn
	local, remote net.Addr
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

type memAddr string

func (a memAddr) Network() string { return "memory" }
func (a memAddr) String() string  { return string(a) }
