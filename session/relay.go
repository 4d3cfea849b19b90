package session

import (
	"errors"
	"net"
	"sync"
)

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
// stream's end chunk, the peer's end chunk becomes c.CloseWrite. When either
// side fails, the other is told (an abort chunk with the reason, or a reset
// of c when the peer aborted or the stream was cut off) and both are closed
// at once. After the peer's end, Relay keeps watching the stream, so that
// the peer or the session going away still ends a relay whose c is idle.
//
// The stream's session owns the relay: when the session ends, or its
// ledger kills the stream (a stall, see ledger), c is reset at once and
// Relay returns with that reason, whatever c's peer does.
func Relay(c net.Conn, st *Stream) Result {
	var (
		res     Result
		errOnce sync.Once
		upDone  = make(chan struct{})
	)
	fail := func(err error) {
		if kerr := st.killed(); kerr != nil {
			err = kerr // what failed is the kill's doing
		}
		errOnce.Do(func() { res.Err = err })
	}
	st.own(func() { reset(c, st.killed()) }, func() bool { return connReset(c) })

	up := startPump(c, st, func(n int64, err error) { // c -> stream
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
		err = st.awaitClose()
	}
	if err != nil {
		fail(err)
		up.stop()
		if abrupt(err) {
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
func reason(st *Stream, err error) string {
	if kerr := st.killed(); kerr != nil {
		return kerr.Error()
	}
	return err.Error()
}

// abrupt reports whether err ended the far side without a clean close:
// the peer aborted, or the stream was cut off.
func abrupt(err error) bool {
	var ab *AbortError
	return errors.As(err, &ab) || errors.Is(err, ErrTruncated)
}

// closeWrite half-closes c, or closes it when it cannot half-close.
func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// reset closes a TCP connection with RST, so its peer sees the abrupt end
// that happened on the far side of the tunnel rather than a clean EOF; a
// Conn (a stream relayed into another) is aborted with why.
func reset(c net.Conn, why error) {
	if sc, ok := c.(*Conn); ok {
		reason := "the other end of the tunnel reset the connection"
		if why != nil {
			reason = why.Error()
		}
		sc.Abort(reason)
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
