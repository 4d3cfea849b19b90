// Package transporttest provides an in-memory transport.Transport for unit
// tests of the layers above the transport. It is not a substitute for the
// real TCP and KCP transports, which tests exercise on loopback.
package transporttest

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/warren-tunnel/warren/transport"
)

// Network is an in-memory Transport: Listen registers an address, Dial
// connects to it through a synchronous net.Pipe. The zero value is ready to
// use.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*listener
}

var _ transport.Transport = (*Network)(nil)

func (n *Network) String() string { return "memory" }

// Dial connects to the listener at addr, or fails as a refused TCP dial
// would when there is none.
func (n *Network) Dial(ctx context.Context, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.listeners[addr]
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("memory dial %s: connection refused", addr)
	}
	client, server := net.Pipe()
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

func (l *listener) Addr() net.Addr { return addr(l.addr) }

type addr string

func (a addr) Network() string { return "memory" }
func (a addr) String() string  { return string(a) }
