// Package relay copies bytes between a connection and a tunnel stream:
// the OS plumbing under warren's protocol (the session package). An idle
// relay direction holds no goroutine: it waits in the process's one epoll
// poller (Poller), and a goroutine runs only while bytes move.
package relay

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Stream is the tunnel side of a relay: one data stream of a session
// (*session.Stream). Its whole contract, as Relay uses it:
//
//   - WriteTo writes the peer's data to w until the peer's end (it returns
//     nil), its abort, or a failure.
//   - ReadBurst sends what r has now, reading until a read comes back
//     short (or fails), and eof reports that r ended.
//   - CloseWrite sends this side's end. AwaitClose, after the peer's end,
//     returns nil once both ends are through, or an error when the stream
//     dies first.
//   - Abort tells the peer why this side gives up, then closes; Close
//     closes; both release the stream and may be called more than once.
//   - Own installs cut, which the stream calls once when its session kills
//     it (the session ended, a stall), and gone, which the stream may call
//     to ask whether the connection was reset by its peer. Killed says why
//     the stream was killed, nil while it lives.
//   - Idle is called when the connection is drained: the stream reports
//     what moved so far (its meter).
//   - Abrupt reports whether err, from WriteTo or AwaitClose, means the far
//     side ended without a clean close (it aborted, or was cut off): the
//     relay then resets the connection rather than closing it.
type Stream interface {
	io.WriterTo
	ReadBurst(r io.Reader) (n int64, eof bool, err error)
	CloseWrite() error
	AwaitClose() error
	Abort(reason string) error
	Close() error
	Own(cut func(), gone func() bool)
	Killed() error
	Abrupt(err error) bool
	Idle()
}

// Result is what a relay moved and why it ended.
type Result struct {
	// Sent is the bytes from the connection into the stream; Received the
	// bytes from the stream into the connection.
	Sent, Received int64
	// Err is the first failure of either direction, nil when both ended
	// with a half-close.
	Err error
}

// Relay copies between c and st in both directions until both are done,
// then closes both. A half-close travels each way: c's EOF becomes the
// stream's end, the peer's end becomes c.CloseWrite. When either side
// fails, the other is told (an abort with the reason, or a reset of c when
// the peer aborted or the stream was cut off) and both are closed at once.
// After the peer's end, Relay keeps watching the stream, so that the peer
// or the session going away still ends a relay whose c is idle.
//
// The stream's session owns the relay: when it kills the stream, c is
// reset at once and Relay returns with that reason, whatever c's peer
// does.
//
// The stream-to-c direction runs in the calling goroutine. The c-to-stream
// direction waits in p between bursts when c is a socket, holding no
// goroutine while c is idle; with a nil p it holds one goroutine.
func Relay(c net.Conn, st Stream, p *Poller) Result {
	var (
		res     Result
		errOnce sync.Once
		upDone  = make(chan struct{})
	)
	fail := func(err error) {
		if kerr := st.Killed(); kerr != nil {
			err = kerr // what failed is the kill's doing
		}
		errOnce.Do(func() { res.Err = err })
	}
	st.Own(func() { reset(c, st.Killed()) }, func() bool { return connReset(c) })

	up := startPump(c, st, p, func(n int64, err error) { // c -> stream
		defer close(upDone)
		res.Sent = n
		if errors.Is(err, errStopped) {
			return // Relay gave up and is closing both
		}
		if err == nil {
			if err = st.CloseWrite(); err == nil {
				return
			}
		}
		// The stream is broken, so what the peer still had for c is lost:
		// c's peer must see an abrupt end, never a clean one.
		fail(err)
		st.Abort(reason(st, err))
		reset(c, err)
	})

	n, err := st.WriteTo(c) // stream -> c
	res.Received = n
	if err == nil {
		err = closeWrite(c)
	}
	if err == nil {
		err = st.AwaitClose()
	}
	if err != nil {
		fail(err)
		up.stop()
		if st.Abrupt(err) {
			reset(c, err)
		}
		st.Abort(reason(st, err))
		c.Close()
	}

	<-upDone
	st.Close()
	c.Close()
	return res
}

// reason is what an abort tells the peer: why the stream was killed, or
// else err.
func reason(st Stream, err error) string {
	if kerr := st.Killed(); kerr != nil {
		return kerr.Error()
	}
	return err.Error()
}

// closeWrite half-closes c, or closes it when it cannot half-close.
func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// reset closes c with a reset (linger 0) when it can (*net.TCPConn, and
// the in-memory memnet.Conn), so that its peer sees the abrupt end that
// happened on the far side of the tunnel rather than a clean EOF. A
// connection that is itself a tunnel stream (session.Conn, a stream relayed
// into another) is aborted with why.
func reset(c net.Conn, why error) {
	if a, ok := c.(interface{ Abort(reason string) }); ok {
		reason := "the other end of the tunnel reset the connection"
		if why != nil {
			reason = why.Error()
		}
		a.Abort(reason)
		return
	}
	if l, ok := c.(interface{ SetLinger(sec int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}
