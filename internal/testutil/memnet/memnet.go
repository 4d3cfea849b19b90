// Package memnet is an in-memory TCP network: the twin of the public and
// target networks that the server binds and the client dials (server
// WithListen, client WithDial and WithResolver), for fast tests of the
// policy above them.
//
// It keeps what that policy can see of TCP: listeners on IP:port (port 0
// picks a free port; a wildcard address conflicts with every address on
// its port; "address already in use" and "connection refused" come as the
// same errors as from the kernel), connections with a buffer each way
// (a writer blocks while the peer's is full), half-close, reset (linger 0,
// or closing with unread data), deadlines, and host names for the
// resolver; and UDP sockets (packet.go). It has no timing and no
// congestion: what depends on those is tested on real sockets.
package memnet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Defaults.
const (
	// BufferSize is each direction's buffer, as a socket's send and
	// receive buffers together hold about this much on loopback.
	BufferSize = 256 << 10
	// Backlog is how many dialled connections a listener queues before
	// Dial waits.
	Backlog = 512
	// ephemeral ports, as Linux assigns them by default.
	ephemeralLo, ephemeralHi = 32768, 60999
)

// Network is an in-memory network. The zero value is ready to use and
// knows the host name "localhost".
type Network struct {
	mu        sync.Mutex
	listeners map[netip.AddrPort]*Listener
	hosts     map[string][]netip.Addr
	next      uint16     // the next ephemeral port to try
	udp       packetSide // packet.go
}

func (n *Network) initLocked() {
	if n.listeners == nil {
		n.listeners = make(map[netip.AddrPort]*Listener)
		n.next = ephemeralLo
	}
}

// AddHost makes name resolve to addrs (replacing what it resolved to).
func (n *Network) AddHost(name string, addrs ...netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts == nil {
		n.hosts = make(map[string][]netip.Addr)
	}
	n.hosts[name] = addrs
}

// LookupNetIP resolves host as net.Resolver.LookupNetIP does: an IP
// literal is itself; a name is what AddHost gave it; "localhost" is
// 127.0.0.1 unless AddHost said otherwise.
func (n *Network) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	n.mu.Lock()
	addrs, ok := n.hosts[host]
	n.mu.Unlock()
	if !ok && host == "localhost" {
		addrs, ok = []netip.Addr{netip.MustParseAddr("127.0.0.1")}, true
	}
	var out []netip.Addr
	for _, a := range addrs {
		if network == "ip" || (network == "ip4") == a.Is4() {
			out = append(out, a)
		}
	}
	if !ok || len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

// Listen binds address ("host:port", host an IP or a name) as net.Listen
// does; network is "tcp", "tcp4" or "tcp6".
func (n *Network) Listen(network, address string) (net.Listener, error) {
	ap, err := n.resolve(context.Background(), "listen", network, address)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.initLocked()
	if ap.Port() == 0 {
		port, ok := n.freePortLocked(ap.Addr())
		if !ok {
			return nil, opError("listen", network, nil, ap, os.NewSyscallError("bind", syscall.EADDRINUSE))
		}
		ap = netip.AddrPortFrom(ap.Addr(), port)
	} else if n.inUseLocked(ap) {
		return nil, opError("listen", network, nil, ap, os.NewSyscallError("bind", syscall.EADDRINUSE))
	}
	l := &Listener{net: n, addr: ap, accept: make(chan *Conn, Backlog), die: make(chan struct{})}
	n.listeners[ap] = l
	return l, nil
}

// inUseLocked reports whether binding ap conflicts with a listener: the
// same address, or a wildcard on either side, on the same port.
func (n *Network) inUseLocked(ap netip.AddrPort) bool {
	for b := range n.listeners {
		if b.Port() == ap.Port() && (b.Addr() == ap.Addr() || b.Addr().IsUnspecified() || ap.Addr().IsUnspecified()) {
			return true
		}
	}
	return false
}

func (n *Network) freePortLocked(ip netip.Addr) (uint16, bool) {
	for range ephemeralHi - ephemeralLo + 1 {
		p := n.next
		if n.next++; n.next > ephemeralHi {
			n.next = ephemeralLo
		}
		if !n.inUseLocked(netip.AddrPortFrom(ip, p)) {
			return p, true
		}
	}
	return 0, false
}

// Dial connects to address as a net.Dialer does, from an ephemeral port of
// the loopback address of the target's family.
func (n *Network) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return n.DialFrom(ctx, netip.Addr{}, network, address)
}

// DialFrom is Dial from the source address from (the zero Addr: loopback).
func (n *Network) DialFrom(ctx context.Context, from netip.Addr, network, address string) (net.Conn, error) {
	ap, err := n.resolve(ctx, "dial", network, address)
	if err != nil {
		return nil, err
	}
	if !from.IsValid() {
		from = netip.MustParseAddr("127.0.0.1")
		if ap.Addr().Is6() && !ap.Addr().Is4In6() {
			from = netip.IPv6Loopback()
		}
	}
	n.mu.Lock()
	n.initLocked()
	l := n.listeners[ap]
	if l == nil {
		l = n.listeners[netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port())]
	}
	if l == nil {
		l = n.listeners[netip.AddrPortFrom(netip.IPv6Unspecified(), ap.Port())]
	}
	var src netip.AddrPort
	if l != nil {
		port, _ := n.freePortLocked(from)
		src = netip.AddrPortFrom(from, port)
	}
	n.mu.Unlock()
	if l == nil {
		return nil, opError("dial", network, nil, ap, os.NewSyscallError("connect", syscall.ECONNREFUSED))
	}
	client, server := pipe(src, ap)
	select {
	case l.accept <- server:
		return client, nil
	case <-l.die:
		return nil, opError("dial", network, nil, ap, os.NewSyscallError("connect", syscall.ECONNREFUSED))
	case <-ctx.Done():
		return nil, opError("dial", network, nil, ap, ctx.Err())
	}
}

// resolve parses "host:port" for op, resolving a host name.
func (n *Network) resolve(ctx context.Context, op, network, address string) (netip.AddrPort, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return netip.AddrPort{}, &net.OpError{Op: op, Net: network, Err: net.UnknownNetworkError(network)}
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, &net.OpError{Op: op, Net: network, Err: err}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, &net.OpError{Op: op, Net: network, Err: &net.AddrError{Err: "invalid port", Addr: address}}
	}
	if host == "" {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(p)), nil
	}
	family := "ip"
	switch network {
	case "tcp4":
		family = "ip4"
	case "tcp6":
		family = "ip6"
	}
	ips, err := n.LookupNetIP(ctx, family, host)
	if err != nil {
		return netip.AddrPort{}, &net.OpError{Op: op, Net: network, Err: err}
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), nil
}

// opError is the error the kernel's socket calls give, as net wraps it.
func opError(op, network string, src *net.TCPAddr, dst netip.AddrPort, err error) error {
	oe := &net.OpError{Op: op, Net: network, Addr: net.TCPAddrFromAddrPort(dst), Err: err}
	if src != nil {
		oe.Source = src
	}
	return oe
}

// Listener is a bound address of a Network.
type Listener struct {
	net     *Network
	addr    netip.AddrPort
	accept  chan *Conn
	die     chan struct{}
	dieOnce sync.Once

	dlMu    sync.Mutex
	dlTimer *time.Timer
	dl      chan struct{} // closed when the deadline passes; nil: none
	dlSet   chan struct{} // closed when SetDeadline changes dl
}

// Accept waits for the next connection; after Close it returns an error
// matching net.ErrClosed, once the deadline passed one that matches
// os.ErrDeadlineExceeded (even with a connection queued, as
// net.TCPListener's does).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.dlMu.Lock()
		if l.dlSet == nil {
			l.dlSet = make(chan struct{})
		}
		dl, set := l.dl, l.dlSet
		l.dlMu.Unlock()
		select {
		case <-dl:
			return nil, opError("accept", "tcp", nil, l.addr, os.ErrDeadlineExceeded)
		default:
		}
		select {
		case c := <-l.accept:
			return c, nil
		case <-l.die:
			return nil, opError("accept", "tcp", nil, l.addr, net.ErrClosed)
		case <-dl:
			return nil, opError("accept", "tcp", nil, l.addr, os.ErrDeadlineExceeded)
		case <-set:
		}
	}
}

// SetDeadline sets when Accept stops waiting, as net.TCPListener's does;
// the zero time means never. It applies to an Accept already waiting too.
func (l *Listener) SetDeadline(t time.Time) error {
	l.dlMu.Lock()
	defer l.dlMu.Unlock()
	if l.dlTimer != nil {
		l.dlTimer.Stop()
		l.dlTimer = nil
	}
	if l.dlSet != nil { // wake the Accepts waiting on the old deadline
		close(l.dlSet)
		l.dlSet = nil
	}
	l.dl = nil
	if t.IsZero() {
		return nil
	}
	ch := make(chan struct{})
	l.dl = ch
	if d := time.Until(t); d > 0 {
		l.dlTimer = time.AfterFunc(d, func() { close(ch) })
	} else {
		close(ch)
	}
	return nil
}

// Close releases the address. Connections dialled but not yet accepted
// are reset, as the kernel does with its accept queue.
func (l *Listener) Close() error {
	err := error(opError("close", "tcp", nil, l.addr, net.ErrClosed))
	l.dieOnce.Do(func() {
		err = nil
		close(l.die)
		l.net.mu.Lock()
		delete(l.net.listeners, l.addr)
		l.net.mu.Unlock()
		for {
			select {
			case c := <-l.accept:
				c.SetLinger(0)
				c.Close()
			default:
				return
			}
		}
	})
	return err
}

// Addr is the bound address, a *net.TCPAddr.
func (l *Listener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.addr) }
