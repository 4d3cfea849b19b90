package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// errStopped ends a pump that its relay gave up on.
var errStopped = errors.New("relay stopped")

// pump carries one relay's connection-to-stream direction. With the
// poller it holds no goroutine while the connection is idle: it
// waits in the poller, and a fresh goroutine runs each burst of reads. That
// goroutine keeps waiting for more data for up to idleAfter; only when the
// connection has been quiet that long does it arm the poller and exit, so
// a busy connection does not pay for the poller's extra hop (measured: twice
// the request/response latency and 40% less throughput when every short
// read went back to the poller). Without a poller (or for a connection that
// is not a socket) one goroutine runs ReadFrom.
//
// done runs once, in whichever goroutine ends the pump, with the bytes sent
// and nil at the connection's EOF, errStopped after stop, or the error.
type pump struct {
	c    net.Conn
	st   Stream
	p    *Poller
	rc   syscall.RawConn
	wait func() error // blocks until c is readable, or its read deadline; nil if c is no socket
	done func(n int64, err error)

	mu      sync.Mutex
	id      uint64 // the armed wait, 0 if none
	added   bool   // c is in the poller's epoll set
	stopped bool
	n       int64
	over    bool
}

func startPump(c net.Conn, st Stream, p *Poller, done func(int64, error)) *pump {
	u := &pump{c: c, st: st, p: p, done: done, wait: ReadWaiter(c)}
	if sc, ok := c.(syscall.Conn); ok && p != nil && u.wait != nil {
		if rc, err := sc.SyscallConn(); err == nil {
			// A new connection's first bytes are usually on their way:
			// start in a goroutine, not in the poller.
			u.rc = rc
			go u.serve()
			return u
		}
	}
	go u.plain()
	return u
}

// plain runs the direction in the calling goroutine, without the poller:
// it waits for each burst without holding a buffer when c is a socket.
func (u *pump) plain() {
	for {
		if u.wait != nil {
			u.st.Idle() // c is drained: the meter hears of what moved
			if err := u.wait(); err != nil {
				u.finish(0, err)
				return
			}
		}
		n, eof, err := u.st.ReadBurst(u.c)
		u.add(n)
		if eof {
			u.finish(0, nil)
			return
		}
		if err != nil {
			u.finish(0, err)
			return
		}
	}
}

// arm waits in the poller for the next burst.
func (u *pump) arm() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return errStopped
	}
	id, err := u.p.arm(u.rc, u.added, u.serve)
	if err != nil {
		return err
	}
	u.id, u.added = id, true
	return nil
}

// idleAfter is how long a pump's goroutine waits for more data before it
// leaves the connection to the poller. A hop through the poller costs tens
// of microseconds, nothing beside a gap this long; a longer wait keeps more
// goroutines alive at once, and their stacks stay resident after they exit
// (measured with 2000 connections opened together: 1 s cost 16 KB more RSS
// per connection than 20 ms). A variable for tests.
var idleAfter = 20 * time.Millisecond

// serve runs in a goroutine of its own, started by startPump or by the
// poller when the connection became readable: it sends what there is,
// waits for more while the connection stays busy, then, once it has been
// quiet for idleAfter, arms the poller and returns.
func (u *pump) serve() {
	u.mu.Lock()
	u.id = 0
	u.mu.Unlock()
	for {
		u.st.Idle() // c is drained: the meter hears of what moved
		u.c.SetReadDeadline(time.Now().Add(idleAfter))
		if err := u.wait(); err != nil {
			if isTimeout(err) {
				break // quiet: over to the poller
			}
			u.finish(0, err) // the socket failed (a reset)
			return
		}
		// Readable, closed or failed: readBurst finds out which.
		n, eof, err := u.st.ReadBurst(u.c)
		u.add(n)
		if eof || (err != nil && !isTimeout(err)) {
			u.finish(0, err)
			return
		}
	}
	u.c.SetReadDeadline(time.Time{})
	switch err := u.arm(); {
	case errors.Is(err, errStopped):
		u.finish(0, err)
	case err != nil: // the poller closed: go on plainly
		u.plain()
	}
}

func (u *pump) add(n int64) {
	u.mu.Lock()
	u.n += n
	u.mu.Unlock()
}

// stop ends a pump that is waiting in the poller; a burst under way ends by
// itself (its relay closes the connection).
func (u *pump) stop() {
	u.mu.Lock()
	u.stopped = true
	id := u.id
	u.id = 0
	u.mu.Unlock()
	if id != 0 && u.p.disarm(u.rc, id) {
		u.finish(0, errStopped)
	}
}

func (u *pump) finish(n int64, err error) {
	u.mu.Lock()
	if u.over {
		u.mu.Unlock()
		return
	}
	u.over = true
	u.n += n
	total := u.n
	u.mu.Unlock()
	u.done(total, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}
