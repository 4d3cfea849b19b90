package memnet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// PacketQueue is how many datagrams a bound UDP address holds unread;
// more are dropped, as a full socket receive buffer drops them.
const PacketQueue = 1024

// The UDP side of a Network: addresses bound with ListenPacket or
// DialPacket exchange datagrams, whole and in order, each queued at its
// receiver (PacketQueue at most). What the policy above sees of UDP is
// kept: port 0 picks a free port, "address already in use" is the kernel's
// error, and a datagram a connected socket (DialPacket) sends to an
// address nobody has bound comes back, as ICMP "port unreachable" does on
// Linux, as ECONNREFUSED from the socket's next Read or Write.
type packetSide struct {
	bound map[netip.AddrPort]*PacketConn
	next  uint16
}

// ListenPacket binds a UDP address ("ip:port", port 0: any free one);
// network is "udp", "udp4" or "udp6".
func (n *Network) ListenPacket(network, address string) (*PacketConn, error) {
	ap, err := n.resolveUDP(context.Background(), "listen", network, address)
	if err != nil {
		return nil, err
	}
	return n.bindUDP(network, ap, netip.AddrPort{})
}

// DialPacket returns a UDP socket connected to address, bound to a free
// port of loopback: Write sends to address, Read takes only what comes
// from there. As net.Dialer's, it neither sends nor checks anything.
func (n *Network) DialPacket(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := n.resolveUDP(ctx, "dial", network, address)
	if err != nil {
		return nil, err
	}
	from := netip.MustParseAddr("127.0.0.1")
	if ap.Addr().Is6() {
		from = netip.IPv6Loopback()
	}
	return n.bindUDP(network, netip.AddrPortFrom(from, 0), ap)
}

func (n *Network) bindUDP(network string, ap, peer netip.AddrPort) (*PacketConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.udp.bound == nil {
		n.udp.bound = make(map[netip.AddrPort]*PacketConn)
		n.udp.next = ephemeralLo
	}
	inUse := func(ap netip.AddrPort) bool {
		for b := range n.udp.bound {
			if b.Port() == ap.Port() && (b.Addr() == ap.Addr() || b.Addr().IsUnspecified() || ap.Addr().IsUnspecified()) {
				return true
			}
		}
		return false
	}
	if ap.Port() == 0 {
		found := false
		for range ephemeralHi - ephemeralLo + 1 {
			p := n.udp.next
			if n.udp.next++; n.udp.next > ephemeralHi {
				n.udp.next = ephemeralLo
			}
			if !inUse(netip.AddrPortFrom(ap.Addr(), p)) {
				ap, found = netip.AddrPortFrom(ap.Addr(), p), true
				break
			}
		}
		if !found {
			return nil, udpError("listen", network, ap, os.NewSyscallError("bind", syscall.EADDRINUSE))
		}
	} else if inUse(ap) {
		return nil, udpError("listen", network, ap, os.NewSyscallError("bind", syscall.EADDRINUSE))
	}
	c := &PacketConn{net: n, network: network, addr: ap, peer: peer, q: make(chan packet, PacketQueue), die: make(chan struct{}), dl: make(chan struct{})}
	n.udp.bound[ap] = c
	return c, nil
}

// deliver queues b from src at the socket bound to dst; it reports false
// when nobody has dst bound.
func (n *Network) deliver(src, dst netip.AddrPort, b []byte) bool {
	n.mu.Lock()
	c := n.udp.bound[dst]
	if c == nil {
		c = n.udp.bound[netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port())]
	}
	n.mu.Unlock()
	if c == nil {
		return false
	}
	if c.peer.IsValid() && c.peer != src {
		return true // a connected socket drops other sources
	}
	select {
	case c.q <- packet{b: append([]byte(nil), b...), from: src}:
	default: // queue full: dropped
	}
	return true
}

func (n *Network) resolveUDP(ctx context.Context, op, network, address string) (netip.AddrPort, error) {
	tcp := map[string]string{"udp": "tcp", "udp4": "tcp4", "udp6": "tcp6"}[network]
	if tcp == "" {
		return netip.AddrPort{}, &net.OpError{Op: op, Net: network, Err: net.UnknownNetworkError(network)}
	}
	return n.resolve(ctx, op, tcp, address)
}

func udpError(op, network string, ap netip.AddrPort, err error) error {
	return &net.OpError{Op: op, Net: network, Addr: net.UDPAddrFromAddrPort(ap), Err: err}
}

type packet struct {
	b    []byte
	from netip.AddrPort
}

// PacketConn is a bound UDP address of a Network: a *net.UDPConn's
// methods, those of net.PacketConn, and for a connected one (DialPacket)
// net.Conn's.
type PacketConn struct {
	net     *Network
	network string
	addr    netip.AddrPort
	peer    netip.AddrPort // connected: the only source and destination
	q       chan packet

	mu      sync.Mutex
	refused bool          // ICMP port unreachable pending (connected only)
	readDL  time.Time     // guarded by mu
	dl      chan struct{} // closed and replaced when the deadline changes
	die     chan struct{}
	dieOnce sync.Once
}

// ReadFromUDPAddrPort reads one datagram into b (the rest of a longer one
// is lost, as with a socket) and says where it came from.
func (c *PacketConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		c.mu.Lock()
		refused, dl, dlChanged := c.refused, c.readDL, c.dl
		c.refused = false
		c.mu.Unlock()
		if refused {
			return 0, netip.AddrPort{}, c.opErr("read", os.NewSyscallError("recvfrom", syscall.ECONNREFUSED))
		}
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, netip.AddrPort{}, c.opErr("read", os.ErrDeadlineExceeded)
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case p := <-c.q:
			return copy(b, p.b), p.from, nil
		case <-c.die:
			return 0, netip.AddrPort{}, c.opErr("read", net.ErrClosed)
		case <-dlChanged:
		case <-timeout:
		}
	}
}

// WriteToUDPAddrPort sends b to addr as one datagram. To an address
// nobody has bound it is lost; a connected socket learns of it at its
// next Read (ECONNREFUSED).
func (c *PacketConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	select {
	case <-c.die:
		return 0, c.opErr("write", net.ErrClosed)
	default:
	}
	if !c.net.deliver(c.addr, addr, b) && c.peer.IsValid() {
		c.mu.Lock()
		c.refused = true
		close(c.dl) // wake a reader
		c.dl = make(chan struct{})
		c.mu.Unlock()
	}
	return len(b), nil
}

// ReadFrom is net.PacketConn's.
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, ap, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(ap), nil
}

// WriteTo is net.PacketConn's.
func (c *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.opErr("write", &net.AddrError{Err: "not a UDP address", Addr: addr.String()})
	}
	return c.WriteToUDPAddrPort(b, ua.AddrPort())
}

// Read reads a datagram from a connected socket's peer.
func (c *PacketConn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFromUDPAddrPort(b)
	return n, err
}

// Write sends b to a connected socket's peer.
func (c *PacketConn) Write(b []byte) (int, error) {
	if !c.peer.IsValid() {
		return 0, c.opErr("write", syscall.EDESTADDRREQ)
	}
	return c.WriteToUDPAddrPort(b, c.peer)
}

// Close releases the address.
func (c *PacketConn) Close() error {
	err := c.opErr("close", net.ErrClosed)
	c.dieOnce.Do(func() {
		err = nil
		close(c.die)
		c.net.mu.Lock()
		delete(c.net.udp.bound, c.addr)
		c.net.mu.Unlock()
	})
	return err
}

// LocalAddr is the bound address, a *net.UDPAddr.
func (c *PacketConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr) }

// RemoteAddr is a connected socket's peer, else nil.
func (c *PacketConn) RemoteAddr() net.Addr {
	if !c.peer.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(c.peer)
}

// SetReadDeadline sets the deadline of reads; writes never block.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDL = t
	close(c.dl)
	c.dl = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// SetDeadline is SetReadDeadline: writes never block.
func (c *PacketConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetWriteDeadline does nothing: writes never block.
func (c *PacketConn) SetWriteDeadline(time.Time) error { return nil }

func (c *PacketConn) opErr(op string, err error) error {
	oe := &net.OpError{Op: op, Net: c.network, Source: net.UDPAddrFromAddrPort(c.addr), Err: err}
	if c.peer.IsValid() {
		oe.Addr = net.UDPAddrFromAddrPort(c.peer)
	}
	return oe
}
