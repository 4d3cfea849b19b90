package memnet

import (
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// buffer is one direction of a connection: what the writer sent and the
// reader has not read yet.
type buffer struct {
	mu      sync.Mutex
	data    []byte
	eof     bool          // the writer sent FIN: EOF once data is read
	err     error         // the reader's connection was reset: data is gone
	gone    bool          // the reader closed: what comes is answered with a reset
	changed chan struct{} // closed and replaced at every change
}

func newBuffer() *buffer { return &buffer{changed: make(chan struct{})} }

func (b *buffer) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// reset makes the reader's next read fail with ECONNRESET, dropping what
// it has not read, as a TCP reset does.
func (b *buffer) reset() {
	b.mu.Lock()
	if b.err == nil {
		b.err = syscall.ECONNRESET
	}
	b.data = nil
	b.notifyLocked()
	b.mu.Unlock()
}

// Conn is one end of a memnet connection. Besides net.Conn it has
// CloseWrite and SetLinger, as *net.TCPConn has.
type Conn struct {
	local, remote *net.TCPAddr
	in, out       *buffer // read from in, write to out
	peer          *Conn

	mu       sync.Mutex
	readDL   time.Time
	writeDL  time.Time
	dl       chan struct{} // closed and replaced when a deadline changes
	closed   bool
	die      chan struct{} // closed by Close
	linger   int           // < 0: the default (FIN); 0: reset on Close
	wclosed  bool          // CloseWrite was called
	writeErr error         // sticky: the connection was reset
}

var _ net.Conn = (*Conn)(nil)

// pipe returns the two ends of a connection from src to dst.
func pipe(src, dst netip.AddrPort) (client, server *Conn) {
	up, down := newBuffer(), newBuffer()
	client = newConn(src, dst, down, up)
	server = newConn(dst, src, up, down)
	client.peer, server.peer = server, client
	return client, server
}

func newConn(local, remote netip.AddrPort, in, out *buffer) *Conn {
	return &Conn{
		local: net.TCPAddrFromAddrPort(local), remote: net.TCPAddrFromAddrPort(remote),
		in: in, out: out, dl: make(chan struct{}), die: make(chan struct{}), linger: -1,
	}
}

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) opErr(op string, err error) error {
	if err == io.EOF {
		return err
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// wait blocks until ch closes, the connection closes, a deadline changes
// or the deadline passes. It returns an error when Read or Write must
// return at once: closed, or past the deadline.
func (c *Conn) wait(ch <-chan struct{}, deadline func() time.Time) error {
	c.mu.Lock()
	dl, dlChanged, closed := deadline(), c.dl, c.closed
	c.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	var timeout <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ch:
	case <-c.die:
	case <-dlChanged:
	case <-timeout:
	}
	return nil
}

// check is what Read and Write see before doing anything: closed, or past
// their deadline.
func (c *Conn) check(deadline func() time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if dl := deadline(); !dl.IsZero() && !time.Now().Before(dl) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (c *Conn) readDeadline() time.Time  { return c.readDL }
func (c *Conn) writeDeadline() time.Time { return c.writeDL }

// Read reads what the peer wrote; io.EOF after the peer's FIN.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if err := c.check(c.readDeadline); err != nil {
			return 0, c.opErr("read", err)
		}
		b := c.in
		b.mu.Lock()
		switch {
		case len(b.data) > 0:
			n := copy(p, b.data)
			b.data = b.data[n:]
			if len(b.data) == 0 {
				b.data = nil
			}
			b.notifyLocked()
			b.mu.Unlock()
			return n, nil
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, c.opErr("read", err)
		case b.eof:
			b.mu.Unlock()
			return 0, io.EOF
		case len(p) == 0:
			b.mu.Unlock()
			return 0, nil
		}
		ch := b.changed
		b.mu.Unlock()
		if err := c.wait(ch, c.readDeadline); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

// Write writes p, waiting while the peer's buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	written := 0
	for {
		if err := c.check(c.writeDeadline); err != nil {
			return written, c.opErr("write", err)
		}
		c.mu.Lock()
		wclosed, werr := c.wclosed, c.writeErr
		c.mu.Unlock()
		if wclosed {
			return written, c.opErr("write", syscall.EPIPE)
		}
		if werr != nil {
			return written, c.opErr("write", werr)
		}
		c.in.mu.Lock()
		reset := c.in.err != nil
		c.in.mu.Unlock()
		if reset {
			return written, c.opErr("write", syscall.EPIPE)
		}
		b := c.out
		b.mu.Lock()
		if b.gone {
			// The peer closed: the kernel takes these bytes, and the
			// peer's answer is a reset.
			b.mu.Unlock()
			c.mu.Lock()
			c.writeErr = syscall.EPIPE
			c.mu.Unlock()
			c.in.reset()
			return len(p), nil
		}
		if room := BufferSize - len(b.data); room > 0 {
			n := min(room, len(p)-written)
			b.data = append(b.data, p[written:written+n]...)
			written += n
			b.notifyLocked()
		}
		ch := b.changed
		b.mu.Unlock()
		if written == len(p) {
			return written, nil
		}
		if err := c.wait(ch, c.writeDeadline); err != nil {
			return written, c.opErr("write", err)
		}
	}
}

// CloseWrite sends FIN: the peer reads EOF after what was written.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	closed := c.closed
	c.wclosed = true
	c.mu.Unlock()
	if closed {
		return c.opErr("close", net.ErrClosed)
	}
	c.out.mu.Lock()
	c.out.eof = true
	c.out.notifyLocked()
	c.out.mu.Unlock()
	return nil
}

// SetLinger(0) makes Close reset the connection; other values are the
// default (FIN), since memnet has no send queue to wait for.
func (c *Conn) SetLinger(sec int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.linger = sec
	return nil
}

// Close closes both directions. The peer reads what was written and EOF,
// or a reset when SetLinger(0) was called or unread bytes were left (as
// the kernel resets a socket closed with data in its receive queue).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	close(c.die)
	linger := c.linger
	c.mu.Unlock()

	c.in.mu.Lock()
	unread := len(c.in.data) > 0
	c.in.data = nil
	c.in.gone = true
	c.in.notifyLocked()
	c.in.mu.Unlock()
	if linger == 0 || unread {
		c.out.reset()
		return nil
	}
	c.out.mu.Lock()
	c.out.eof = true
	c.out.notifyLocked()
	c.out.mu.Unlock()
	return nil
}

func (c *Conn) SetDeadline(t time.Time) error {
	return c.setDeadline(func() { c.readDL, c.writeDL = t, t })
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(func() { c.readDL = t })
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(func() { c.writeDL = t })
}

func (c *Conn) setDeadline(set func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opErr("set", net.ErrClosed)
	}
	set()
	close(c.dl)
	c.dl = make(chan struct{})
	return nil
}
