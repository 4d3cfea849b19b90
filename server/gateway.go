package server

import (
	"errors"
	"net"
	"time"

	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/session"
)

// The HTTP entry point answers like an HTTP gateway when its route fails
// before the backend said anything: "503 Service Unavailable" when no
// session took the connection (no client serves the host now, even after
// the reconnect grace), "502 Bad Gateway" when the stream ended abruptly
// before a byte came back (the client could not reach its target, or the
// session went). Anything later is relayed as it happened: a reset stays a
// reset. The HTTPS entry point and public ports are not HTTP and keep
// closing the connection.

// Bodies of the gateway answers: short, and naming nothing of the client's
// side (its target's address stays in the logs).
const (
	unavailableText = "service unavailable: no client serves this host right now"
	badGatewayText  = "bad gateway: the service behind this host did not answer"
)

// tcpConn is what the gateway needs of a public connection: a
// *net.TCPConn, or its in-memory twin in tests.
type tcpConn interface {
	net.Conn
	CloseWrite() error
	SetLinger(sec int) error
}

// heldConn is a public connection of the HTTP entry point while it is
// relayed. session.Relay closes its connection when it ends (and to wake
// its reader); heldConn only wakes the reader then, keeping the socket
// open until the relay's outcome says whether a 502 is due (endGateway).
type heldConn struct {
	tcpConn
}

// Close wakes a read in progress instead of closing.
func (h heldConn) Close() error {
	return h.tcpConn.SetReadDeadline(time.Unix(1, 0))
}

// gatewayConn returns the connection to relay for c on route r, and
// whether it is held (the HTTP entry point).
func gatewayConn(r *route, c net.Conn) (net.Conn, bool) {
	if r.entry != session.EntryHTTP {
		return c, false
	}
	tc, ok := c.(tcpConn)
	if !ok {
		return c, false
	}
	return heldConn{tc}, true
}

// endGateway closes a held connection after its relay: with a 502 when
// the stream broke before any byte reached the public peer, with a reset
// when it broke later (as Relay would have), else plainly.
func endGateway(c net.Conn, res relay.Result) {
	tc := c.(heldConn).tcpConn
	var ab *session.AbortError
	broke := errors.As(res.Err, &ab) || errors.Is(res.Err, session.ErrTruncated)
	switch {
	case broke && res.Received == 0:
		refuseHTTP(tc, 502, badGatewayText)
	case broke:
		tc.SetLinger(0)
		tc.Close()
	default:
		tc.Close()
	}
}

// refuseRoute ends a public connection no session took: a 503 on the HTTP
// entry point, an abort with the reason to a visitor, a close elsewhere.
func refuseRoute(r *route, c net.Conn, reason string) {
	if sc, ok := c.(*session.Conn); ok {
		sc.Abort(describeRoute(r) + " is not available: " + reason)
		return
	}
	if r.entry == session.EntryHTTP {
		refuseHTTP(c, 503, unavailableText)
		return
	}
	c.Close()
}
