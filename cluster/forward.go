package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// A forwarded connection is one stream of a peer link (peer.go). The
// forwarding server opens the stream and writes its header; the server
// that holds the route answers with a reply; then both sides send framed
// data until each sends its end:
//
//	header: version (1 byte) | payload length (2 bytes, big endian) | payload
//	payload, version 1: key length (1) | key | peer length (1) | peer | local length (1) | local
//	payload, version 2: kind (1) | then as version 1
//	reply:  status (1 byte: 0 accepted, 1 refused) | reason length (1) | reason
//	chunk:  length (2 bytes, big endian) | data; length 0 is the end of
//	        this direction (a half-close)
//
// A stream that ends without its end chunk was aborted: the reader gets
// ErrForwardReset and the relay resets its public connection. The end
// travels in this framing, not as smux's FIN: smux v1.5.57 drops data
// that arrives with the FIN after our own half-close.

// A connection's header is version 1, the only one the first cluster
// servers read; a UDP flow's is version 2, which carries its kind. A
// server of that first release refuses a version 2 header ("version 2
// (this server speaks 1)") and closes the stream, so it never takes a
// flow's datagram chunks for a connection's bytes; Peers.Open says so.
const (
	// ForwardVersion is the version of a connection's header.
	ForwardVersion = 1
	// ForwardVersionKind is the version of a header with a kind.
	ForwardVersionKind = 2
)

// Kind is what a forwarded stream carries.
type Kind byte

const (
	// KindStream: a public TCP connection's bytes (version 1 header).
	KindStream Kind = 0
	// KindDatagram: a public UDP flow, as datagram chunks of the session
	// protocol (docs/protocol.md §12), each direction ended by an end or
	// abort chunk.
	KindDatagram Kind = 1
)

// maxForwardField caps each header field; a route key or an address fits
// in 255 bytes (a domain name is at most 253).
const maxForwardField = 255

// Header is what a forwarded connection's stream says first: which route
// it is for and who made it.
type Header struct {
	// Key is the route key ("port:2222", "http:www.example.com").
	Key string
	// Peer is the public connection's remote address, "ip:port": the real
	// client, for logs and the PROXY protocol.
	Peer string
	// Local is where the forwarding server accepted it, "ip:port".
	Local string
	// Kind is what the stream carries.
	Kind Kind
}

// ErrHeader is wrapped by the errors of a malformed header or reply.
var ErrHeader = errors.New("bad forwarded-connection header")

// ErrForwardReset: the forwarded connection's stream ended without its end
// chunk (the other server aborted it, or the peer link went).
var ErrForwardReset = errors.New("forwarded connection reset")

// ErrRefused is wrapped by the error of a forwarded connection the other
// server refused (no session there serves the route).
var ErrRefused = errors.New("forwarded connection refused")

// Encode returns h's wire form.
func (h Header) Encode() ([]byte, error) {
	fields := []string{h.Key, h.Peer, h.Local}
	n := 0
	for i, f := range fields {
		if len(f) > maxForwardField {
			return nil, fmt.Errorf("%w: field %d is %d bytes (at most %d)", ErrHeader, i, len(f), maxForwardField)
		}
		n += 1 + len(f)
	}
	if h.Key == "" {
		return nil, fmt.Errorf("%w: no route key", ErrHeader)
	}
	var b []byte
	switch h.Kind {
	case KindStream:
		b = make([]byte, 3, 3+n)
		b[0] = ForwardVersion
	case KindDatagram:
		n++
		b = make([]byte, 4, 3+n)
		b[0], b[3] = ForwardVersionKind, byte(h.Kind)
	default:
		return nil, fmt.Errorf("%w: kind %d", ErrHeader, h.Kind)
	}
	binary.BigEndian.PutUint16(b[1:], uint16(n))
	for _, f := range fields {
		b = append(b, byte(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// ReadHeader reads a header from r: at most 3 + 1 + 3*256 bytes,
// whatever r sends.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [3]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrHeader, err)
	}
	if pre[0] != ForwardVersion && pre[0] != ForwardVersionKind {
		return Header{}, fmt.Errorf("%w: version %d (this server speaks %d and %d)", ErrHeader, pre[0], ForwardVersion, ForwardVersionKind)
	}
	n := int(binary.BigEndian.Uint16(pre[1:]))
	if n > 1+3*(1+maxForwardField) {
		return Header{}, fmt.Errorf("%w: payload of %d bytes", ErrHeader, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrHeader, err)
	}
	return DecodeHeader(pre[0], b)
}

// DecodeHeader parses the payload of a header of the given version.
func DecodeHeader(version byte, b []byte) (Header, error) {
	var kind Kind
	switch version {
	case ForwardVersion:
	case ForwardVersionKind:
		if len(b) < 1 {
			return Header{}, fmt.Errorf("%w: no kind", ErrHeader)
		}
		kind, b = Kind(b[0]), b[1:]
		if kind != KindDatagram {
			return Header{}, fmt.Errorf("%w: kind %d (this server knows %d)", ErrHeader, kind, KindDatagram)
		}
	default:
		return Header{}, fmt.Errorf("%w: version %d", ErrHeader, version)
	}
	var fields [3]string
	for i := range fields {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return Header{}, fmt.Errorf("%w: field %d cut short", ErrHeader, i)
		}
		fields[i] = string(b[1 : 1+int(b[0])])
		b = b[1+int(b[0]):]
	}
	if len(b) > 0 {
		return Header{}, fmt.Errorf("%w: %d bytes after the last field", ErrHeader, len(b))
	}
	h := Header{Key: fields[0], Peer: fields[1], Local: fields[2], Kind: kind}
	if h.Key == "" {
		return Header{}, fmt.Errorf("%w: no route key", ErrHeader)
	}
	for _, a := range []string{h.Peer, h.Local} {
		if a == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a); err != nil {
			return Header{}, fmt.Errorf("%w: address %q: %v", ErrHeader, a, err)
		}
	}
	return h, nil
}

// encodeReply is the reply to a header: accepted (reason empty) or
// refused with reason (cut to 255 bytes).
func encodeReply(refused bool, reason string) []byte {
	if len(reason) > maxForwardField {
		reason = reason[:maxForwardField]
	}
	b := []byte{0, byte(len(reason))}
	if refused {
		b[0] = 1
	}
	return append(b, reason...)
}

// readReply reads a reply; a refusal is an error wrapping ErrRefused.
func readReply(r io.Reader) error {
	var pre [2]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return fmt.Errorf("%w: reply: %w", ErrHeader, err)
	}
	reason := make([]byte, pre[1])
	if _, err := io.ReadFull(r, reason); err != nil {
		return fmt.Errorf("%w: reply: %w", ErrHeader, err)
	}
	switch pre[0] {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	return fmt.Errorf("%w: reply status %d", ErrHeader, pre[0])
}

// maxChunk is the largest data chunk: a 2-byte length.
const maxChunk = 1<<16 - 1

// Conn is a forwarded connection: a net.Conn whose RemoteAddr and
// LocalAddr are the public connection's (Header.Peer, Header.Local).
// CloseWrite sends the end chunk; Read returns io.EOF after the other
// side's, and ErrForwardReset when the stream ends without one. Close
// without CloseWrite aborts. The peer link that carries it closes it when
// the link dies.
type Conn struct {
	st     net.Conn // the smux stream
	hdr    Header
	onDone func()

	rmu  sync.Mutex
	left int  // bytes of the current chunk still to read
	eof  bool // the other side's end was read
	rerr error

	wmu    sync.Mutex
	wbuf   []byte
	closed bool // CloseWrite sent

	once sync.Once
	peer string // the member at the other end of the link

	cutMu sync.Mutex
	cut   func()
	isCut bool

	// Gone's watch of the stream before the reply.
	gmu     sync.Mutex
	gone    chan struct{} // closed when the forwarding server gave up
	watched chan struct{} // closed when the watch has returned
	replied bool          // Accept or Refuse began: no watch from now on
	// counted by the link: payload bytes read and written.
	in, out *atomic.Int64
}

// Header is the stream's header.
func (c *Conn) Header() Header { return c.hdr }

// Peer is the ID of the member at the other end.
func (c *Conn) Peer() string { return c.peer }

// OnCut installs f, which runs once if the peer link dies (or Peers
// closes) while c is open: what c relays must end then too.
func (c *Conn) OnCut(f func()) {
	c.cutMu.Lock()
	c.cut = f
	isCut := c.isCut
	c.cutMu.Unlock()
	if isCut {
		f()
	}
}

// kill is the link's end of c: the stream closes and the cut hook runs.
func (c *Conn) kill() {
	c.st.Close()
	c.cutMu.Lock()
	f := c.cut
	c.isCut, c.cut = true, nil
	c.cutMu.Unlock()
	if f != nil {
		f()
	}
}

func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return 0, c.rerr
	}
	if c.eof {
		return 0, io.EOF
	}
	for c.left == 0 {
		var pre [2]byte
		if _, err := io.ReadFull(c.st, pre[:]); err != nil {
			c.rerr = c.readErr(err)
			return 0, c.rerr
		}
		c.left = int(binary.BigEndian.Uint16(pre[:]))
		if c.left == 0 {
			c.eof = true
			return 0, io.EOF
		}
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.st.Read(p)
	c.left -= n
	c.in.Add(int64(n))
	if err != nil {
		c.rerr = c.readErr(err)
		if n > 0 {
			return n, nil
		}
		return 0, c.rerr
	}
	return n, nil
}

func (c *Conn) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) {
		return ErrForwardReset
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return fmt.Errorf("%w: %w", ErrForwardReset, err)
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	sent := 0
	for len(p) > 0 {
		n := min(len(p), maxChunk)
		if cap(c.wbuf) < 2+n {
			c.wbuf = make([]byte, 2+min(maxChunk, max(n, 16<<10)))
		}
		b := c.wbuf[:2+n]
		binary.BigEndian.PutUint16(b, uint16(n))
		copy(b[2:], p[:n])
		if _, err := c.st.Write(b); err != nil {
			return sent, err
		}
		c.out.Add(int64(n))
		sent += n
		p = p[n:]
	}
	return sent, nil
}

// CloseWrite sends the end of this direction.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	_, err := c.st.Write([]byte{0, 0})
	return err
}

// Close closes the stream: an abort unless both ends were sent.
func (c *Conn) Close() error {
	err := c.st.Close()
	c.gmu.Lock()
	w := c.watched
	c.gmu.Unlock()
	if w != nil {
		<-w // the closed stream ends its read
	}
	c.once.Do(func() {
		if c.onDone != nil {
			c.onDone()
		}
	})
	return err
}

// Gone returns a channel closed if the forwarding server gives up on c
// before this one replies: it closed the stream (its Open's deadline
// passed, or what it forwards ended), the link died, or the header's
// deadline passed (as long as the forwarding server waits for the
// reply). It is for a handler that waits before it answers; Accept,
// Refuse and Close end the watch. Until the reply the forwarding server
// sends nothing (Peers.Open), so the watch's read takes no data. nil
// once Accept or Refuse began.
func (c *Conn) Gone() <-chan struct{} {
	c.gmu.Lock()
	defer c.gmu.Unlock()
	if c.replied {
		return nil
	}
	if c.gone == nil {
		c.gone, c.watched = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(c.watched)
			var b [1]byte
			c.st.Read(b[:]) // returns on the other's close, the link's death, a deadline
			close(c.gone)
		}()
	}
	return c.gone
}

// unwatch ends Gone's watch, if any, and waits for it: the reply is
// about to be written, and what follows it is the handler's to read.
func (c *Conn) unwatch() {
	c.gmu.Lock()
	c.replied = true
	w := c.watched
	c.gmu.Unlock()
	if w != nil {
		c.st.SetReadDeadline(time.Unix(1, 0))
		<-w
	}
}

// LocalAddr is the address the public connection arrived on.
func (c *Conn) LocalAddr() net.Addr { return addr(c.hdr.Local) }

// RemoteAddr is the public connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return addr(c.hdr.Peer) }

func (c *Conn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// addr is a TCP address from "ip:port" (nil-safe: the zero address).
func addr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}
