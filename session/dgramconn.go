package session

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// MaxUDPPayload is the longest datagram a connected UDP socket over IPv4
// can send: what a DatagramConn writes and reads at most.
const MaxUDPPayload = 65507

// DatagramConn is a datagram stream (Header.Kind KindDatagram) as a
// connected UDP socket: the connection a server-side Dial of network
// "udp" returns.
//
// Each Write sends one datagram (at most MaxUDPPayload bytes; a longer one
// is refused with EMSGSIZE and nothing sent), each Read returns one, cut
// to len(p) as a UDP socket's read is (the rest is dropped). Unlike UDP,
// the tunnel carries the datagrams reliably and in order. Read returns
// io.EOF after the peer ended the flow, an *AbortError after it aborted
// it (the client's target unreachable, say). Deadlines work as on a
// socket, with one difference: a write deadline that expires while a
// datagram is half written ends the conn, since a cut chunk cannot be
// mended. Close ends the flow (the peer reads its end) and is idempotent.
type DatagramConn struct {
	st            *Stream
	local, remote net.Addr

	// A goroutine of the conn reads the stream (ReadDatagram's errors,
	// timeouts included, are final, so deadlines cannot be the stream's)
	// and hands each datagram to Read; it holds one at most.
	reads chan datagramRead
	rmu   sync.Mutex // one Read at a time
	rerr  error      // the final read error; guarded by rmu
	rdl   deadline

	wmu sync.Mutex // one Write at a time: a chunk goes out whole
	wdl deadline   // checked before a datagram starts

	die       chan struct{}
	closeOnce sync.Once
}

// NewDatagramConn makes the datagram stream st a net.Conn with the given
// addresses.
func NewDatagramConn(st *Stream, local, remote net.Addr) *DatagramConn {
	c := &DatagramConn{st: st, local: local, remote: remote, die: make(chan struct{}),
		reads: make(chan datagramRead), rdl: newDeadline(), wdl: newDeadline()}
	go c.readLoop()
	return c
}

type datagramRead struct {
	d   []byte
	err error
}

// readLoop reads the stream's datagrams for Read until the stream ends
// or the conn is closed (Close ends the stream's reads).
func (c *DatagramConn) readLoop() {
	for {
		d, err := c.st.ReadDatagram(MaxUDPPayload, func(n int) []byte { return make([]byte, n) })
		select {
		case c.reads <- datagramRead{d, err}:
		case <-c.die:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read reads the next datagram into p.
func (c *DatagramConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed() {
		return 0, c.opErr("read", net.ErrClosed)
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	select {
	case r := <-c.reads:
		if r.err == nil {
			return copy(p, r.d), nil
		}
		c.rerr = io.EOF
		if r.err != io.EOF {
			c.rerr = c.opErr("read", r.err)
		}
		return 0, c.rerr
	case <-c.die:
		return 0, c.opErr("read", net.ErrClosed)
	case <-c.rdl.wait():
		return 0, c.opErr("read", os.ErrDeadlineExceeded)
	}
}

// Write sends b as one datagram.
func (c *DatagramConn) Write(b []byte) (int, error) {
	if len(b) > MaxUDPPayload {
		return 0, c.opErr("write", syscall.EMSGSIZE)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed() {
		return 0, c.opErr("write", net.ErrClosed)
	}
	if isClosedChan(c.wdl.wait()) {
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	}
	// The room in front is WriteDatagram's; after an error smux may
	// still hold the buffer, so each datagram has its own.
	buf := make([]byte, DatagramHeaderLen+len(b))
	copy(buf[DatagramHeaderLen:], b)
	if err := c.st.WriteDatagram(buf); err != nil {
		if c.closed() {
			return 0, c.opErr("write", net.ErrClosed)
		}
		if isTimeout(err) {
			c.st.Abort("a write deadline cut a datagram")
		}
		return 0, c.opErr("write", err)
	}
	return len(b), nil
}

// Close ends the flow: the peer reads its end (sent within closeLinger,
// after a Write under way). Reads and writes under way fail with
// net.ErrClosed. It returns at once.
func (c *DatagramConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.die)
		now := time.Now()
		c.st.SetReadDeadline(now) // ends readLoop
		// The end chunk goes out after a Write under way, which the
		// deadline bounds (a peer gone leaves it blocked on its window).
		c.st.SetWriteDeadline(now.Add(closeLinger))
		go func() {
			c.wmu.Lock()
			defer c.wmu.Unlock()
			c.st.CloseWrite()
			c.st.Close()
		}()
	})
	return nil
}

func (c *DatagramConn) closed() bool {
	select {
	case <-c.die:
		return true
	default:
		return false
	}
}

// LocalAddr and RemoteAddr are the addresses NewDatagramConn was given.
func (c *DatagramConn) LocalAddr() net.Addr  { return c.local }
func (c *DatagramConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *DatagramConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read, as on a socket.
func (c *DatagramConn) SetReadDeadline(t time.Time) error {
	if c.closed() {
		return c.opErr("set deadline", net.ErrClosed)
	}
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline bounds Write, as on a socket (see DatagramConn).
func (c *DatagramConn) SetWriteDeadline(t time.Time) error {
	if c.closed() {
		return c.opErr("set deadline", net.ErrClosed)
	}
	c.wdl.set(t)
	return c.st.SetWriteDeadline(t)
}

func (c *DatagramConn) opErr(op string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
		err = os.ErrDeadlineExceeded
	}
	return &net.OpError{Op: op, Net: "udp", Source: c.local, Addr: c.remote, Err: fmt.Errorf("%w", err)}
}
