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
	"time"
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
// Relay waits for the end in the calling goroutine; Start is the same
// without the wait.
func Relay(c net.Conn, st Stream, p *Poller) Result {
	ch := make(chan Result, 1)
	Start(c, st, p, func(res Result) { ch <- res })
	return <-ch
}

// Notifier is a Stream that says when it has something to read
// (*session.Stream): with a poller, an idle relay of one holds no
// goroutine in either direction. NotifyReadable calls f once, in a
// goroutine of its own, when the stream may have data, its end or a
// failure for a read, or was killed or closed (at once if it has
// already). A WriteTo that a deadline
// ended may leave the peer without the window update its read owed:
// NotifyReadable sends it.
type Notifier interface {
	NotifyReadable(f func())
	// IdleAfter makes WriteTo return a timeout once the stream has had
	// nothing for d (renewed by each write); 0 ends it.
	IdleAfter(d time.Duration)
	SetReadDeadline(t time.Time) error
}

// Start relays c and st as Relay does, and returns at once; done gets the
// Result once both directions are done and both are closed, in whichever
// goroutine finished last.
//
// Each direction runs in a goroutine only while bytes move. The c-to-
// stream direction waits in p between bursts when c is a socket; the
// stream-to-c direction, when st is a Notifier and p is set, waits for
// NotifyReadable. Each keeps its goroutine for idleAfter after a burst, so
// that a busy connection does not pay for the hand-over. Without p, or
// for a connection that is no socket, a direction holds its goroutine.
func Start(c net.Conn, st Stream, p *Poller, done func(Result)) {
	r := &run{c: c, st: st, done: done}
	if n, ok := st.(Notifier); ok && p != nil {
		r.notify = n
	}
	st.Own(func() { reset(c, st.Killed()) }, func() bool { return connReset(c) })
	r.up = startPump(c, st, p, func(n int64, err error) { // c -> stream
		defer r.half()
		r.res.Sent = n
		if errors.Is(err, errStopped) {
			return // the other direction gave up and is closing both
		}
		if err == nil {
			if err = st.CloseWrite(); err == nil {
				return
			}
		}
		// The stream is broken, so what the peer still had for c is lost:
		// c's peer must see an abrupt end, never a clean one.
		r.fail(err)
		st.Abort(reason(st, err))
		reset(c, err)
	})
	go r.down()
}

// run is one relay under way.
type run struct {
	c      net.Conn
	st     Stream
	notify Notifier // st, when the stream-to-c direction idles without a goroutine
	up     *pump
	done   func(Result)

	res     Result // Sent: the up direction's; Received: the down one's
	errOnce sync.Once
	mu      sync.Mutex
	halves  int // directions done
}

// fail records the relay's first failure.
func (r *run) fail(err error) {
	if kerr := r.st.Killed(); kerr != nil {
		err = kerr // what failed is the kill's doing
	}
	r.errOnce.Do(func() { r.res.Err = err })
}

// down carries the stream-to-c direction, from the goroutine that Start
// or the stream's notice started: it writes what the stream has to c and,
// once the stream has been quiet for idleAfter, asks to be called again
// when it has more, and returns.
func (r *run) down() {
	st, c := r.st, r.c
	if r.notify != nil && st.Killed() == nil {
		r.notify.IdleAfter(idleAfter)
	}
	n, err := st.WriteTo(c)
	r.res.Received += n
	if r.notify != nil {
		if isTimeout(err) && st.Killed() == nil {
			r.notify.NotifyReadable(r.down)
			return
		}
		// AwaitClose waits without a deadline of ours; a kill that came
		// meanwhile keeps one in the past.
		r.notify.IdleAfter(0)
		if st.Killed() != nil {
			r.notify.SetReadDeadline(time.Now())
		}
	}
	if err == nil {
		err = closeWrite(c)
	}
	if err == nil {
		err = st.AwaitClose()
	}
	if err != nil {
		r.fail(err)
		r.up.stop()
		if st.Abrupt(err) {
			reset(c, err)
		}
		st.Abort(reason(st, err))
		c.Close()
	}
	r.half()
}

// half marks one direction done; the second closes both and reports.
func (r *run) half() {
	r.mu.Lock()
	r.halves++
	last := r.halves == 2
	r.mu.Unlock()
	if last {
		r.st.Close()
		r.c.Close()
		r.done(r.res)
	}
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
