package session

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// closeLinger bounds what Conn.Close does after it returns: flush what
// Write queued, send the end chunk, and wait for the peer's end (so the
// peer reads EOF, not a cut-off) before the stream is closed.
const closeLinger = 5 * time.Second

// connQueue is how many buffers of data a Conn's Write may have queued
// for its writer: Write returns once its bytes are queued.
const connQueue = 2

// Conn is a Stream as a net.Conn: the connection a server-side Dial
// returns, and a visitor's stream as the server relays it.
//
// Writes are queued (at most connQueue chunks) and a goroutine of the
// Conn writes them into the stream, so a write deadline only ever bounds
// the wait for room in the queue: a deadline can never cut a chunk in two.
// Read and Write deadlines, concurrent calls, CloseWrite (the end chunk:
// the peer reads EOF) and Close behave as on a TCP connection. Close
// returns at once; the queued data, the end chunk and the wait for the
// peer's end follow within closeLinger, and reads and writes under way
// fail with net.ErrClosed.
type Conn struct {
	st            *Stream
	local, remote net.Addr

	rmu   sync.Mutex // one Read at a time: the chunk decoder is not shared
	wmu   sync.Mutex // one Write at a time: its bytes stay together
	wshut bool       // CloseWrite was called; guarded by wmu

	q      chan []byte // buffers to write, in order; nil marks CloseWrite
	free   chan []byte
	wdone  chan struct{} // closed when the writer has stopped
	werr   error         // why the writer stopped; read after wdone
	ended  chan struct{} // closed when CloseWrite's end went out
	wdl    deadline
	rdl    time.Time
	dlmu   sync.Mutex
	qclose sync.Once

	die       chan struct{}
	closeOnce sync.Once
	cwOnce    sync.Once
}

// NewConn makes st a net.Conn with the given addresses.
func NewConn(st *Stream, local, remote net.Addr) *Conn {
	c := &Conn{
		st: st, local: local, remote: remote,
		q:     make(chan []byte, connQueue+1),
		free:  make(chan []byte, connQueue),
		wdone: make(chan struct{}),
		ended: make(chan struct{}),
		wdl:   newDeadline(),
		die:   make(chan struct{}),
	}
	for range connQueue {
		c.free <- nil // allocated on first use
	}
	go c.writer()
	return c
}

// Stream is the stream under c.
func (c *Conn) Stream() *Stream { return c.st }

func (c *Conn) writer() {
	defer close(c.wdone)
	for b := range c.q {
		if b == nil { // CloseWrite
			c.werr = c.st.CloseWrite()
			close(c.ended)
			if c.werr != nil {
				return
			}
			continue
		}
		if _, err := c.st.Write(b); err != nil {
			c.werr = err
			return
		}
		c.free <- b[:0]
	}
}

// Read reads the peer's data: io.EOF after its end chunk, an *AbortError
// after its abort.
func (c *Conn) Read(p []byte) (int, error) {
	if c.closed() {
		return 0, net.ErrClosed
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed() {
		return 0, net.ErrClosed
	}
	c.dlmu.Lock()
	dl := c.rdl
	c.dlmu.Unlock()
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := c.st.Read(p)
	switch {
	case err == nil, err == io.EOF:
	case c.closed():
		err = net.ErrClosed
	case isTimeout(err):
		err = os.ErrDeadlineExceeded
	}
	return n, err
}

// Write queues p for the stream; it returns when all of p is queued, the
// write deadline passes, or the stream fails.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wshut && !c.closed() {
		return 0, errWriteShut
	}
	n := 0
	for len(p) > 0 {
		if c.closed() {
			return n, net.ErrClosed
		}
		select {
		case <-c.wdl.wait():
			return n, os.ErrDeadlineExceeded
		default:
		}
		select {
		case b := <-c.free:
			if b == nil {
				b = make([]byte, 0, maxConnWrite)
			}
			k := min(len(p), maxConnWrite)
			b = append(b, p[:k]...)
			c.q <- b // never blocks: one slot per buffer, and one for the end
			n += k
			p = p[k:]
		case <-c.wdl.wait():
			return n, os.ErrDeadlineExceeded
		case <-c.wdone:
			return n, c.writeErr()
		case <-c.die:
			return n, net.ErrClosed
		}
	}
	return n, nil
}

// errWriteShut is a Write after CloseWrite.
var errWriteShut = &net.OpError{Op: "write", Net: "warren", Err: os.ErrClosed}

// maxConnWrite is the most one queued buffer holds.
const maxConnWrite = 64 << 10

func (c *Conn) writeErr() error {
	if c.werr == nil {
		return net.ErrClosed // CloseWrite came first
	}
	return c.werr
}

// CloseWrite sends the end chunk after the data queued: the peer reads
// EOF. It waits until the end went out, up to the write deadline.
func (c *Conn) CloseWrite() error {
	if c.closed() {
		return net.ErrClosed
	}
	c.wmu.Lock()
	c.wshut = true
	c.cwOnce.Do(func() { c.q <- nil })
	c.wmu.Unlock()
	select {
	case <-c.ended:
		return c.werr
	case <-c.wdone:
		return c.writeErr()
	case <-c.wdl.wait():
		return os.ErrDeadlineExceeded
	case <-c.die:
		return net.ErrClosed
	}
}

// Close ends reads and writes at once; the queued data and the end chunk
// go out after it, and the stream closes once the peer's end arrived or
// closeLinger passed.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		err = nil
		close(c.die)
		c.st.SetReadDeadline(time.Now()) // wakes a Read under way
		c.wmu.Lock()                     // a Write under way sees die and returns
		c.cwOnce.Do(func() { c.q <- nil })
		c.qclose.Do(func() { close(c.q) })
		c.wmu.Unlock()
		go c.linger()
	})
	return err
}

// linger finishes a closed Conn: the writer flushes and sends the end,
// then the peer's data is read and dropped until its end, all within
// closeLinger; then the stream is closed.
func (c *Conn) linger() {
	deadline := time.Now().Add(closeLinger)
	t := time.NewTimer(closeLinger)
	defer t.Stop()
	select {
	case <-c.wdone:
	case <-t.C:
		c.st.SetWriteDeadline(time.Now()) // the writer gives up
		<-c.wdone
	}
	if c.werr == nil {
		c.rmu.Lock() // a Read under way returned at Close's deadline
		c.st.SetReadDeadline(deadline)
		io.Copy(io.Discard, c.st)
		c.rmu.Unlock()
	} else {
		c.st.Abort(c.werr.Error())
	}
	c.st.Close()
}

// Abort gives the stream up at once, telling the peer why: a relay
// resets a Conn so.
func (c *Conn) Abort(reason string) {
	c.closeOnce.Do(func() {
		close(c.die)
		c.wmu.Lock() // a Write under way sees die and returns
		c.qclose.Do(func() { close(c.q) })
		c.wmu.Unlock()
		c.st.Abort(reason)
	})
}

func (c *Conn) closed() bool {
	select {
	case <-c.die:
		return true
	default:
		return false
	}
}

// LocalAddr and RemoteAddr are the addresses NewConn was given.
func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read, those under way included.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed() {
		return net.ErrClosed
	}
	c.dlmu.Lock()
	c.rdl = t
	c.dlmu.Unlock()
	return c.st.SetReadDeadline(t)
}

// SetWriteDeadline bounds Write and CloseWrite, those under way included.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed() {
		return net.ErrClosed
	}
	c.wdl.set(t)
	return nil
}

// deadline is a channel closed when a settable time passes (as net.Pipe's).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newDeadline() deadline { return deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for its close
	}
	d.timer = nil
	closed := isClosedChan(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
