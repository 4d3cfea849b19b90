package server

import (
	"net"
	"net/netip"

	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/transport"
)

// The server's edges are what it reaches outside its own memory: the
// transports its tunnel listeners use, the function that binds public
// ports and entry points, and the clock. New takes the real ones unless
// an Option replaces them, so a test can run the whole server in memory
// (transporttest, memnet, clocktest) or on real sockets from one switch.
type edges struct {
	transports   map[string]transport.Transport
	listen       ListenFunc
	listenPacket ListenPacketFunc
	clock        clock.Clock
	// registry is the cluster's route registry; nil outside a cluster.
	registry cluster.Registry
}

// ListenFunc binds a public port or an entry point, as net.Listen does:
// network is "tcp", address "host:port" (port 0: any free port, whose
// listener's Addr is then a *net.TCPAddr). It must fail when the address
// is taken, and the listener's Close must release it. A listener with a
// SetDeadline(time.Time) error method (net.TCPListener has one) has its
// accept queue served at shutdown before it is closed; one without is
// closed at once, resetting what its queue holds.
type ListenFunc func(network, address string) (net.Listener, error)

// PacketConn is a bound public UDP port; *net.UDPConn is one.
// ReadFromUDPAddrPort waits for the next datagram and returns it (cut to
// len(b)) with its source; WriteToUDPAddrPort sends b as one datagram to
// addr without waiting for the peer; Close releases the port and makes a
// Read under way, and every later call, fail with an error matching
// net.ErrClosed. Reads and writes may run at once from many goroutines.
type PacketConn interface {
	ReadFromUDPAddrPort(b []byte) (n int, addr netip.AddrPort, err error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	LocalAddr() net.Addr
	Close() error
}

// ListenPacketFunc binds a public UDP port, as net.ListenUDP does: network
// is "udp", address "host:port" (port 0: any free port, whose LocalAddr is
// then a *net.UDPAddr). It must fail when the address is taken.
type ListenPacketFunc func(network, address string) (PacketConn, error)

// An Option replaces one of the server's edges.
type Option func(*edges)

// WithTransport makes the [[server.listen]] entries of kind ("tcp" or
// "kcp") listen with t instead of the transport their config describes
// (TLS included: t brings its own, or none).
func WithTransport(kind string, t transport.Transport) Option {
	return func(e *edges) { e.transports[kind] = t }
}

// WithListen makes the server bind public ports and entry points with
// listen instead of net.Listen.
func WithListen(listen ListenFunc) Option {
	return func(e *edges) { e.listen = listen }
}

// WithListenPacket makes the server bind the public ports of UDP services
// with listen instead of net.ListenUDP.
func WithListenPacket(listen ListenPacketFunc) Option {
	return func(e *edges) { e.listenPacket = listen }
}

// WithClock makes the server read the time and set its timers (reconnect
// grace, waits for a client, shutdown timeout) on c instead of the system
// clock.
func WithClock(c clock.Clock) Option {
	return func(e *edges) { e.clock = c }
}

// WithRegistry makes the server a member of a cluster whose routes r
// records ([server.cluster], docs/cluster.md). The caller runs r (its Run)
// for as long as the server runs. Without it the server is alone.
func WithRegistry(r cluster.Registry) Option {
	return func(e *edges) { e.registry = r }
}

func newEdges(opts []Option) edges {
	e := edges{transports: make(map[string]transport.Transport), listen: net.Listen, listenPacket: listenUDP, clock: clock.Real{}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// udpReadBuffer is the receive buffer asked for on a public UDP socket: a
// burst of datagrams waits there while the flows' queues take them (Linux
// caps it at net.core.rmem_max, 208 KiB by default, unless raised).
const udpReadBuffer = 4 << 20

// listenUDP is the real ListenPacketFunc.
func listenUDP(network, address string) (PacketConn, error) {
	a, err := net.ResolveUDPAddr(network, address)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP(network, a)
	if err != nil {
		return nil, err
	}
	c.SetReadBuffer(udpReadBuffer)
	c.SetWriteBuffer(udpReadBuffer)
	return c, nil
}
