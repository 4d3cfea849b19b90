package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/transport"
)

// The lane carries control frames beside smux, ahead of its data, so that
// a heartbeat, a Goodbye or a Drain never waits behind data streams in
// smux's queues (its shaper serves streams round robin, the control
// stream's turn after every other stream's) or its shared receive buffer.
//
// laneConn sits between smux and the transport connection. On the wire, a
// lane frame is one marker byte followed by a control frame:
//
//	0x80 | layout (1) | type (1) | length (4, BE) | JSON payload
//
// and stands between two smux frames, whose first byte is smux's version
// (2). Writing, smux's sendLoop hands laneConn one whole frame per call
// (WriteBuffers, header and payload), and lane frames queued meanwhile go out
// before the next smux frame: a control frame waits at most for the smux
// frame being written and what the transport has queued below (bounded for
// TCP by TCP_NOTSENT_LOWAT, see transport). Reading, laneConn follows
// smux's frame headers, hands smux its frames and keeps the lane frames for
// readControl; so it also sees, per stream, how many bytes arrive for it
// (the ledger's account of unread data).
//
// A peer sends lane frames only when both sides said they speak the lane
// (ClientHello.Lane, Welcome.Lane); until this side has said so, a lane
// frame is a protocol error.
type laneConn struct {
	net.Conn
	maxFrame int
	in       laneIn
	accept   atomic.Bool // this side announced the lane: lane frames may come

	// track, set once the control stream is open, makes every stream
	// opened after it (SYN) and every byte arriving for one (PSH) known to
	// the ledger.
	track atomic.Bool
	led   *ledger

	// ping, once the session runs, answers a Ping in the reader itself
	// (see answerPing); it reports false to leave the frame to
	// readControl.
	ping atomic.Pointer[func(payload []byte) (bool, error)]

	// Reading: only smux's recvLoop reads.
	hdr  [smuxHeaderLen]byte
	pend []byte // header bytes not yet handed to smux
	left int    // payload bytes of the current smux frame not yet handed over

	// Writing: wmu is held across every write to the transport; lane
	// frames wait in queue for whoever holds it to send them first.
	wmu   sync.Mutex
	batch func(write func() (int, error)) (int, error) // transport.Batcher's; nil: none
	// frame is the smux frame batchWrite writes, made once so that a
	// batched Write allocates no closure per frame.
	frame      []byte
	batchWrite func() (int, error)

	qmu   sync.Mutex
	queue []*laneWrite
	werr  error // the transport failed: no more lane writes
}

// offerLane: clients offer the lane. Tests turn it off to play a client
// of a version without it.
var offerLane = true

// laneMarker opens a lane frame; smux frames open with their version.
const laneMarker = 0x80

// maxLaneQueue caps the lane frames waiting to be written; a session whose
// transport takes none for that long is failing its heartbeats anyway.
const maxLaneQueue = 64

// smux commands, as laneConn needs them (smux's frame.go).
const (
	smuxSYN = 0
	smuxFIN = 1
	smuxPSH = 2
	smuxUPD = 4
)

var errLaneFull = errors.New("too many control frames waiting to be written")

type laneWrite struct {
	b    []byte
	done chan error // gets the write's result
}

// newLaneConn wraps c for a session of cfg, with the session's ledger.
func newLaneConn(c net.Conn, cfg Config) *laneConn {
	l := &laneConn{Conn: c, maxFrame: cfg.MaxControlFrame, led: newLedger(cfg)}
	if b, ok := c.(*budgetConn); ok {
		l.batch = transport.Batcher(b.Conn)
		l.batchWrite = func() (int, error) { return l.Conn.Write(l.frame) }
	}
	l.in.init(cfg.MaxControlFrame)
	return l
}

// Read hands smux the bytes of its frames and takes lane frames out.
func (l *laneConn) Read(p []byte) (int, error) {
	for {
		if len(l.pend) > 0 {
			n := copy(p, l.pend)
			l.pend = l.pend[n:]
			return n, nil
		}
		if l.left > 0 {
			n, err := l.Conn.Read(p[:min(len(p), l.left)])
			l.left -= n
			if err != nil {
				l.in.fail(err)
			}
			return n, err
		}
		// A frame boundary: smux's header and the shortest lane frame
		// (its payload is a JSON object, 2 bytes at least) are both at
		// least 8 bytes long.
		if _, err := io.ReadFull(l.Conn, l.hdr[:]); err != nil {
			l.in.fail(err)
			return 0, err
		}
		if l.hdr[0] == laneMarker {
			if err := l.readLane(); err != nil {
				l.in.fail(err)
				return 0, err
			}
			continue
		}
		length := int(binary.LittleEndian.Uint16(l.hdr[2:]))
		if l.track.Load() {
			sid := binary.LittleEndian.Uint32(l.hdr[4:])
			switch l.hdr[1] {
			case smuxSYN:
				l.led.opened(sid)
			case smuxFIN:
				l.led.finned(sid)
			case smuxPSH:
				l.led.arrived(sid, length)
			}
		}
		l.left = length
		l.pend = l.hdr[:]
	}
}

// readLane reads the rest of the lane frame whose first 8 bytes are in hdr.
func (l *laneConn) readLane() error {
	if !l.accept.Load() {
		return fmt.Errorf("%w: a control lane frame, which this side did not offer", ErrProtocol)
	}
	typ := l.hdr[2]
	if l.hdr[1] != frameLayout {
		return fmt.Errorf("%w: peer sent a control frame of layout %d; this build reads layout %d", ErrVersion, l.hdr[1], frameLayout)
	}
	n := int(binary.BigEndian.Uint32(l.hdr[3:]))
	if n < 2 || n > l.maxFrame {
		return fmt.Errorf("%w: %s frame of %d bytes on the control lane (2 to %d allowed)", ErrProtocol, typeName(typ), n, l.maxFrame)
	}
	payload := make([]byte, n)
	payload[0] = l.hdr[7]
	if _, err := io.ReadFull(l.Conn, payload[1:]); err != nil {
		return err
	}
	if f := l.ping.Load(); f != nil && typ == typePing {
		if done, err := (*f)(payload); done || err != nil {
			return err
		}
	}
	return l.in.push(typ, payload)
}

// pong queues the answer to a Ping for the lane without waiting for it
// to be written: the reader must not wait on the transport's writes.
func (l *laneConn) pong(p Ping) error {
	_, err := l.sendLane(typePong, Pong(p))
	return err
}

// Write is smux's: one whole smux frame. Lane frames waiting go first, in
// writes of their own: gathered with the frame, they would wait for room
// for all of it (TestPressure/tcp+tls saw its Resets and pings late and
// too few streams killed). Over TLS the frame's records leave in one
// system call (transport.Batcher): a 64 KiB frame is four records.
func (l *laneConn) Write(b []byte) (int, error) {
	l.wmu.Lock()
	defer l.unlock()
	l.flushLane()
	if l.batch == nil {
		return l.Conn.Write(b)
	}
	l.frame = b
	n, err := l.batch(l.batchWrite)
	l.frame = nil
	return n, err
}

// framePool holds the buffers WriteBuffers puts smux frames together in,
// shared by every session of the process. Without WriteBuffers smux's
// sendLoop keeps a 64 KiB frame buffer per session for its whole life
// (smux v1.5.57 session.go); with it an idle session holds none.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, 0, smuxHeaderLen+maxFrameSize)
	return &b
}}

// WriteBuffers is smux's sendLoop's: one smux frame, as its header and its
// payload. It goes to the transport in one Write (one TLS record, as
// before), put together in a buffer borrowed for the length of the write.
func (l *laneConn) WriteBuffers(v [][]byte) (int, error) {
	bp := framePool.Get().(*[]byte)
	b := (*bp)[:0]
	for _, p := range v {
		b = append(b, p...)
	}
	n, err := l.Write(b)
	*bp = b[:0]
	framePool.Put(bp)
	return n, err
}

// writeLane sends one control frame on the lane, ahead of smux's data. It
// waits until deadline for the frame to be written; a frame still queued
// then goes out later all the same (frames are whole, and in order).
func (l *laneConn) writeLane(typ byte, msg any, deadline time.Time) error {
	w, err := l.sendLane(typ, msg)
	if err != nil {
		return err
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err := <-w.done:
		return err
	case <-t.C:
		return fmt.Errorf("control frame not written by its deadline: %w", errLaneTimeout)
	}
}

var errLaneTimeout = errors.New("the transport is busy")

// sendLane queues one control frame for the lane and returns without
// waiting for it to be written; the frame goes out as soon as the transport
// takes it.
func (l *laneConn) sendLane(typ byte, msg any) (*laneWrite, error) {
	frame, err := encodeFrame(typ, msg, 1)
	if err != nil {
		return nil, err
	}
	frame[0] = laneMarker
	w := &laneWrite{b: frame, done: make(chan error, 1)}
	l.qmu.Lock()
	switch {
	case l.werr != nil:
		err = l.werr
	case len(l.queue) >= maxLaneQueue:
		err = errLaneFull
	default:
		l.queue = append(l.queue, w)
	}
	l.qmu.Unlock()
	if err != nil {
		return nil, err
	}
	if l.wmu.TryLock() { // else its holder sends the frame when done
		l.flushLane()
		l.unlock()
	}
	return w, nil
}

// updateWindow queues an smux window update for stream sid: consumed
// bytes of it read, window its window (smux v2's UPD frame, which any
// peer's smux reads). It goes out ahead of smux's queued frames, as lane
// frames do; the caller sends it only once its reads stopped, so no later
// update of smux's carries less.
func (l *laneConn) updateWindow(sid, consumed, window uint32) {
	b := make([]byte, smuxHeaderLen+8)
	b[0], b[1] = 2, smuxUPD
	binary.LittleEndian.PutUint16(b[2:], 8)
	binary.LittleEndian.PutUint32(b[4:], sid)
	binary.LittleEndian.PutUint32(b[8:], consumed)
	binary.LittleEndian.PutUint32(b[12:], window)
	w := &laneWrite{b: b, done: make(chan error, 1)}
	l.qmu.Lock()
	if l.werr == nil { // a full queue takes it too: it is small and rare
		l.queue = append(l.queue, w)
	}
	l.qmu.Unlock()
	if l.wmu.TryLock() { // else its holder sends it when done
		l.flushLane()
		l.unlock()
	}
}

// flushLane writes the queued lane frames; wmu is held.
func (l *laneConn) flushLane() {
	l.qmu.Lock()
	q := l.queue
	l.queue = nil
	l.qmu.Unlock()
	for _, w := range q {
		_, err := l.Conn.Write(w.b)
		if err != nil {
			l.qmu.Lock()
			l.werr = err
			l.qmu.Unlock()
		}
		w.done <- err
	}
}

// unlock releases wmu, first sending what was queued while it was held
// (a lane writer that found wmu taken left its frame to the holder).
func (l *laneConn) unlock() {
	for {
		l.wmu.Unlock()
		l.qmu.Lock()
		more := len(l.queue) > 0
		l.qmu.Unlock()
		if !more || !l.wmu.TryLock() {
			return
		}
		l.flushLane()
	}
}

// laneIn holds the control frames read from the lane until readControl
// takes them, and then the error that ended reading.
type laneIn struct {
	mu     sync.Mutex
	frames []laneFrame
	bytes  int
	max    int // bytes held at most: a peer must not outrun readControl by more
	err    error
	ready  chan struct{} // has a value while frames or err wait
}

type laneFrame struct {
	typ     byte
	payload []byte
}

func (q *laneIn) init(maxFrame int) {
	q.max = max(1<<20, 2*maxFrame)
	q.ready = make(chan struct{}, 1)
}

func (q *laneIn) push(typ byte, payload []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.bytes+len(payload) > q.max {
		return fmt.Errorf("%w: peer sent %d bytes of control frames not handled yet (at most %d)", ErrProtocol, q.bytes+len(payload), q.max)
	}
	q.frames = append(q.frames, laneFrame{typ, payload})
	q.bytes += len(payload)
	q.signal()
	return nil
}

// fail records why reading ended; frames read before stay readable.
func (q *laneIn) fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
		q.signal()
	}
}

func (q *laneIn) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// next returns the next frame, waiting for one; after the last, the error
// that ended reading.
func (q *laneIn) next() (byte, []byte, error) {
	for {
		q.mu.Lock()
		if len(q.frames) > 0 {
			f := q.frames[0]
			q.frames = q.frames[1:]
			q.bytes -= len(f.payload)
			if len(q.frames) > 0 {
				q.signal()
			}
			q.mu.Unlock()
			return f.typ, f.payload, nil
		}
		err := q.err
		q.mu.Unlock()
		if err != nil {
			return 0, nil, err
		}
		<-q.ready
	}
}

// waitEnd waits until reading ended or deadline passes, dropping frames:
// after a Goodbye, for the peer to hang up.
func (q *laneIn) waitEnd(deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		q.mu.Lock()
		q.frames, q.bytes = nil, 0
		err := q.err
		q.mu.Unlock()
		if err != nil {
			return
		}
		select {
		case <-q.ready:
		case <-t.C:
			return
		}
	}
}
