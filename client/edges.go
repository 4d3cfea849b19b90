package client

import (
	"context"
	"net"
	"net/netip"

	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/transport"
)

// The client's edges are what it reaches outside its own memory: the
// transport to the servers, the resolver of their names and of service
// targets, the dial of targets, and the clock. New takes the real ones unless an Option replaces them,
// so a test can run the whole client in memory (transporttest, memnet,
// clocktest) or on real sockets from one switch.
type edges struct {
	transport  transport.Transport // nil: as the config says
	dial       DialFunc
	dialPacket DialFunc
	resolver   Resolver
	listen     func(network, address string) (net.Listener, error)
	// listenPacket opens UDP visitors' sockets.
	listenPacket func(network, address string) (net.PacketConn, error)
	clock        clock.Clock
}

// WithListen makes the client open its visitors' listeners with listen
// instead of net.Listen.
func WithListen(listen func(network, address string) (net.Listener, error)) Option {
	return func(e *edges) { e.listen = listen }
}

// WithListenPacket makes the client open its UDP visitors' sockets with
// listen instead of net.ListenPacket (network "udp").
func WithListenPacket(listen func(network, address string) (net.PacketConn, error)) Option {
	return func(e *edges) { e.listenPacket = listen }
}

// DialFunc connects to a service's target, as net.Dialer.DialContext
// does: network is "tcp", address "ip:port" (the client resolves names
// first). ctx bounds the dial; cancelling it later does not affect the
// connection.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// WithDialPacket makes the client open the UDP sockets of UDP flows with
// dial instead of a net.Dialer: network is "udp", address "ip:port", and
// the net.Conn is a connected UDP socket (each Read one datagram, each
// Write one datagram to the target). An ICMP error from the target must
// fail a later Read or Write with an error matching syscall.ECONNREFUSED
// (or EHOSTUNREACH, ENETUNREACH), as Linux does.
func WithDialPacket(dial DialFunc) Option {
	return func(e *edges) { e.dialPacket = dial }
}

// Resolver turns a host name into addresses, as net.Resolver.LookupNetIP
// does (network "ip"): a target's, and a server's (servers.go).
// *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// An Option replaces one of the client's edges.
type Option func(*edges)

// WithTransport makes the client reach every server over t instead of
// the transport its config describes, whatever an entry's scheme (TLS
// included: t brings its own, or none).
func WithTransport(t transport.Transport) Option {
	return func(e *edges) { e.transport = t }
}

// WithDial makes the client dial service targets with dial instead of a
// net.Dialer.
func WithDial(dial DialFunc) Option {
	return func(e *edges) { e.dial = dial }
}

// WithResolver makes the client resolve target and server host names
// with r instead of net.DefaultResolver.
func WithResolver(r Resolver) Option {
	return func(e *edges) { e.resolver = r }
}

// WithClock makes the client read the time and set its timers (reconnect
// backoff, drain timeout) on c instead of the system clock.
func WithClock(c clock.Clock) Option {
	return func(e *edges) { e.clock = c }
}

func newEdges(opts []Option) edges {
	var d net.Dialer
	e := edges{dial: d.DialContext, dialPacket: d.DialContext, resolver: net.DefaultResolver, listen: net.Listen, listenPacket: net.ListenPacket, clock: clock.Real{}}
	for _, o := range opts {
		o(&e)
	}
	return e
}
