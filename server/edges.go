package server

import (
	"net"

	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/transport"
)

// The server's edges are what it reaches outside its own memory: the
// transports its tunnel listeners use, the function that binds public
// ports and entry points, and the clock. New takes the real ones unless
// an Option replaces them, so a test can run the whole server in memory
// (transporttest, memnet, clocktest) or on real sockets from one switch.
type edges struct {
	transports map[string]transport.Transport
	listen     ListenFunc
	clock      clock.Clock
}

// ListenFunc binds a public port or an entry point, as net.Listen does:
// network is "tcp", address "host:port" (port 0: any free port, whose
// listener's Addr is then a *net.TCPAddr). It must fail when the address
// is taken, and the listener's Close must release it.
type ListenFunc func(network, address string) (net.Listener, error)

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

// WithClock makes the server read the time and set its timers (reconnect
// grace, waits for a client, shutdown timeout) on c instead of the system
// clock.
func WithClock(c clock.Clock) Option {
	return func(e *edges) { e.clock = c }
}

func newEdges(opts []Option) edges {
	e := edges{transports: make(map[string]transport.Transport), listen: net.Listen, clock: clock.Real{}}
	for _, o := range opts {
		o(&e)
	}
	return e
}
