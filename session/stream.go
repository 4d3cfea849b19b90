package session

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/warren-tunnel/warren/relay"
	"github.com/xtaci/smux"
)

// abortWriteTimeout bounds the write of an abort chunk: the stream is being
// given up, so a full window must not hold the caller.
const abortWriteTimeout = time.Second

// Stream is one relayed connection over a session. Read, WriteTo, Write and
// ReadFrom move the connection's bytes, framed as data chunks; CloseWrite
// sends the end chunk (a half-close the peer reads as io.EOF); Abort sends a
// reason and closes. One goroutine may read while another writes.
//
// After Close, Read and Write fail and the stream's buffers are released;
// Close may be called more than once.
type Stream struct {
	st   *smux.Stream
	hdr  Header
	bufs *sync.Pool // chunk buffers of the session's frame size
	led  *ledger    // the session's account of its streams
	lane *laneConn  // the session's, when the peer speaks the lane; else nil

	// What the ledger watches: writes in progress (into the stream or to
	// the relay's connection) and when the last one completed, unix ns.
	busy  atomic.Int32
	moved atomic.Int64

	// The meter (SetMeter): bytes moved and not reported yet, and when it
	// was last called, unix ns.
	meter              func(sent, received int64)
	unsent, unreceived atomic.Int64
	metered            atomic.Int64
	// drained: the last Read left nothing of this stream unread in smux
	// (the ledger's count). A relay that reads this stream as its
	// connection (a Conn: a visitor's, on the server) has no socket to
	// wait on, so this is how it learns that the connection drained.
	drained atomic.Bool

	dead    atomic.Bool // killed: what it holds is being freed
	kmu     sync.Mutex
	cut     func()      // what the relay installed to cut its connection off
	gone    func() bool // reports the relay's connection reset by its peer
	killErr error       // why the stream was killed; nil while it lives

	dec  decoder
	rerr error                // sticky read result: io.EOF, *AbortError, ErrTruncated...
	dhdr [chunkHeaderLen]byte // ReadDatagram's chunk header

	// wmu keeps chunks whole; it is held across smux writes, which may wait
	// for window, so nothing on a closing path may wait for it.
	wmu     sync.Mutex
	wclosed bool          // no more chunks: end or abort sent, or a write failed
	endSent atomic.Bool   // the end chunk went out (read without wmu)
	ending  atomic.Bool   // the end chunk's write began
	endDone chan struct{} // closed when it returned
	// awaiting: AwaitClose is watching the stream, and CloseWrite wakes
	// it when the end goes out.
	awaiting atomic.Bool

	closeOnce sync.Once
	closed    atomic.Bool

	// wake is what NotifyReadable was given, until it is called.
	wake atomic.Pointer[func()]
	// taken counts the bytes read from smux (header included), which is
	// smux's own count of what the peer may send more of (its window
	// updates); window is the stream window; lc the session's transport.
	taken  atomic.Uint32
	window uint32
	lc     *laneConn
	// idleFor (IdleAfter), ns: WriteTo's read deadline, renewed by each
	// write; 0 for none.
	idleFor atomic.Int64
}

// IdleAfter makes WriteTo return a timeout once the stream has had nothing
// for it for d, counted from now and renewed by each write it makes (a
// relay's spell of quiet before it waits with NotifyReadable); 0 ends it
// and clears the read deadline.
func (s *Stream) IdleAfter(d time.Duration) {
	s.idleFor.Store(int64(d))
	if d > 0 {
		s.st.SetReadDeadline(time.Now().Add(d))
	} else {
		s.st.SetReadDeadline(time.Time{})
	}
}

// NotifyReadable calls f once, in a goroutine of its own, when the stream
// may have something for a read: data or the peer's end (seen as they
// arrive, a moment before smux hands them to a read), the peer closing the
// stream, or the stream killed or closed; at once if it has already. So a
// relay waits for an idle stream without a goroutine (relay.Relay). A
// later call replaces an f not called yet.
//
// It first sends the peer a window update for what was read: a read that
// a deadline ended (the relay's, to go idle) may have left smux's own
// unsent, and without it a peer whose window is spent would wait for good.
func (s *Stream) NotifyReadable(f func()) {
	s.lc.updateWindow(s.ID(), s.taken.Load(), s.window)
	s.wake.Store(&f)
	if s.closed.Load() || s.dead.Load() || s.led.readable(s.ID()) {
		s.wakeReader()
	}
}

// wakeReader calls what NotifyReadable was given, if anything.
func (s *Stream) wakeReader() {
	if f := s.wake.Swap(nil); f != nil {
		go (*f)()
	}
}

// Header is the stream header the server sent.
func (s *Stream) Header() Header { return s.hdr }

// ID is the smux stream id, unique within the session.
func (s *Stream) ID() uint32 { return s.st.ID() }

// Read reads the peer's data. It returns io.EOF after the peer's end chunk,
// an *AbortError after its abort chunk, and an error wrapping ErrTruncated
// when the stream was cut off before either.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for s.rerr == nil {
		want := s.dec.want()
		if want == 0 { // inside a data payload: read straight into p
			n, err := s.read(p[:min(len(p), s.dec.left)])
			s.dec.feed(p[:n])
			if err != nil {
				if isTimeout(err) {
					return n, err
				}
				s.rerr = s.cutOff(err)
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		// Header or abort reason: read no more than they need, so that no
		// payload byte lands in scratch.
		var scratch [64]byte
		n, err := s.read(scratch[:min(want, len(scratch))])
		if _, _, ferr := s.dec.feed(scratch[:n]); ferr != nil {
			s.rerr = ferr
			break
		}
		if err != nil {
			if isTimeout(err) {
				return 0, err
			}
			s.rerr = s.cutOff(err)
		}
	}
	return 0, s.rerr
}

// WriteTo writes the peer's data to w until the peer's end chunk (it then
// returns nil), its abort chunk, or an error. It holds no buffer of its own
// while it waits: the bytes go from smux's receive buffer to w.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	if s.rerr != nil {
		return 0, eofIsNil(s.rerr)
	}
	pw := payloadWriter{st: s, dec: &s.dec, dst: w}
	_, err := s.st.WriteTo(&pw)
	switch {
	case pw.end != nil:
		s.rerr = pw.end
	case pw.werr != nil:
		// smux handed over a whole buffer and the decoder did not see all
		// of it: the stream cannot be read further.
		s.rerr = pw.werr
		return pw.n, pw.werr
	case isTimeout(err):
		return pw.n, err
	default:
		s.rerr = s.cutOff(err)
	}
	return pw.n, eofIsNil(s.rerr)
}

// payloadWriter receives the raw stream from smux and writes the data
// payloads to dst; it stops smux at the end of the direction.
type payloadWriter struct {
	st   *Stream
	dec  *decoder
	dst  io.Writer
	n    int64
	end  error // io.EOF, *AbortError or a protocol error
	werr error // dst failed
}

var errStop = errors.New("stop")

func (p *payloadWriter) Write(b []byte) (int, error) {
	total := len(b)
	p.st.taken.Add(uint32(total))
	// smux frees b's bytes when Write returns: they are read then. When
	// that leaves nothing unread for the stream, this direction goes idle:
	// the meter hears of what moved now, not at the next burst.
	defer func() {
		if p.st.led.read(p.st.ID(), total) {
			p.st.Idle()
		}
		// Renewed before smux goes on, and sends the window update it
		// may owe for b under this deadline.
		if d := p.st.idleFor.Load(); d > 0 && p.st.Killed() == nil {
			p.st.st.SetReadDeadline(time.Now().Add(time.Duration(d)))
		}
	}()
	for len(b) > 0 {
		data, n, err := p.dec.feed(b)
		b = b[n:]
		if len(data) > 0 {
			m, werr := p.st.writeTo(p.dst, data)
			p.n += int64(m)
			p.st.count(&p.st.unreceived, m, p.st.moved.Load())
			if werr != nil {
				p.werr = werr
				return total, errStop
			}
		}
		if err != nil {
			if len(b) > 0 { // let the decoder report the stray bytes
				_, _, err = p.dec.feed(b)
			}
			p.end = err
			return total, errStop
		}
	}
	return total, nil
}

// writeTo writes data to the relay's connection w, as the ledger sees it.
func (s *Stream) writeTo(w io.Writer, data []byte) (int, error) {
	s.busy.Add(1)
	n, err := w.Write(data)
	s.busy.Add(-1)
	if n > 0 {
		s.moved.Store(s.led.now().UnixNano())
	}
	return n, err
}

// Write sends p as data chunks.
func (s *Stream) Write(p []byte) (int, error) {
	bp := s.bufs.Get().(*[]byte)
	buf := *bp
	n := 0
	for len(p) > 0 {
		k := copy(buf[chunkHeaderLen:], p)
		putChunkHeader(buf, chunkData, k)
		if err := s.writeChunk(buf[:chunkHeaderLen+k]); err != nil {
			return n, err // buf may still be queued in smux: not reused
		}
		n += k
		s.count(&s.unsent, k, s.moved.Load())
		p = p[k:]
	}
	s.bufs.Put(bp)
	return n, nil
}

// ReadFrom sends everything r yields as data chunks, until r returns io.EOF
// (ReadFrom then returns nil; the stream stays open for CloseWrite) or an
// error. Each chunk is read straight into the buffer that smux sends, and
// between bursts ReadFrom waits for a socket to become readable without
// holding a buffer, so an idle connection costs no buffer memory.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	wait := relay.ReadWaiter(r)
	var total int64
	for {
		if wait != nil {
			s.Idle() // r is drained: the meter hears of what moved
			if err := wait(); err != nil {
				return total, err
			}
		}
		n, eof, err := s.ReadBurst(r)
		total += n
		if eof {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// ReadBurst sends what r has to give now as data chunks: it reads until a
// read comes back short (r is drained, for a socket), r is a Conn whose
// stream has nothing unread (the meter is then called: no socket wait
// tells the relay), or r ends. eof reports that r returned io.EOF.
func (s *Stream) ReadBurst(r io.Reader) (n int64, eof bool, err error) {
	for {
		bp := s.bufs.Get().(*[]byte)
		buf := *bp
		m, rerr := r.Read(buf[chunkHeaderLen:])
		if m > 0 {
			putChunkHeader(buf, chunkData, m)
			if err := s.writeChunk(buf[:chunkHeaderLen+m]); err != nil {
				// A write that gave up (a deadline, the stream killed)
				// may leave buf queued in smux, to be sent later: it must
				// not be reused for another stream's bytes.
				return n, false, err
			}
			n += int64(m)
			s.count(&s.unsent, m, s.moved.Load())
		}
		s.bufs.Put(bp)
		switch {
		case rerr == io.EOF:
			return n, true, nil
		case rerr != nil:
			return n, false, rerr
		case drainedConn(r):
			// r is a stream relayed into this one, which no socket wait
			// reports drained: the meter hears of what moved now. Else a
			// one-way transfer would show only at the next burst or
			// Close, or when the other direction's drain happened to
			// flush it.
			s.Idle()
			return n, false, nil
		case m < len(buf)-chunkHeaderLen:
			return n, false, nil
		}
	}
}

// writeChunk writes one complete chunk. The lock keeps chunks whole: smux
// may split a write across window waits, and an abort must not land inside.
// After a failed write (perhaps half a chunk on the wire) nothing more is
// written.
func (s *Stream) writeChunk(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wclosed {
		return ErrClosed
	}
	s.busy.Add(1)
	_, err := s.st.Write(b)
	s.busy.Add(-1)
	if err != nil {
		s.wclosed = true
		return s.cutOff(err)
	}
	s.moved.Store(s.led.now().UnixNano())
	return nil
}

// CloseWrite sends the end chunk: the peer reads io.EOF after the data
// written so far. Later writes fail. Calling it again does nothing.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wclosed {
		return nil
	}
	s.wclosed = true
	var h [chunkHeaderLen]byte
	putChunkHeader(h[:], chunkEnd, 0)
	s.ending.Store(true)
	_, err := s.st.Write(h[:])
	if err == nil {
		s.endSent.Store(true)
	}
	close(s.endDone)
	if err != nil {
		return s.cutOff(err)
	}
	if s.awaiting.Load() {
		// AwaitClose may be reading already, having seen no end yet: a
		// past read deadline wakes it to see it now.
		s.st.SetReadDeadline(time.Now())
	}
	return nil
}

// endGrace bounds how long AwaitClose, seeing the peer close the stream
// while this side's end is being written, waits for that write: the peer
// closes once it has the end, often before the writer has returned; but a
// peer gone without it leaves the write blocked for good on its window.
const endGrace = time.Second

// AwaitClose is for after the peer's end chunk. When this side's end has
// gone out too, both directions are done and it returns nil at once.
// Otherwise it waits until the peer closes the stream (which the peer does
// once it has this side's end) or the stream or its session dies: nil if
// this side's end went out meanwhile, ErrTruncated if the peer went away
// first, since then nobody reads what this side still sends.
func (s *Stream) AwaitClose() error {
	s.awaiting.Store(true) // before ended(): see CloseWrite
	var b [1]byte
	for {
		if s.ended() {
			return nil
		}
		n, err := s.read(b[:])
		if n > 0 {
			return fmt.Errorf("%w: data after the end of a data stream", ErrProtocol)
		}
		// A timeout is CloseWrite's wake-up (ended now) or a kill's.
		switch {
		case err == nil, s.ended():
		case s.Killed() != nil:
			return s.Killed()
		case s.ending.Load() && s.waitEnd():
		default:
			return s.cutOff(err)
		}
	}
}

// waitEnd waits up to endGrace for the end chunk's write under way and
// reports whether it went out.
func (s *Stream) waitEnd() bool {
	t := s.led.clk.NewTimer(endGrace)
	defer t.Stop()
	select {
	case <-s.endDone:
		return s.ended()
	case <-t.C():
		return false
	}
}

// ended reports whether this side's end chunk went out. It does not take
// wmu: a writer may hold it for good, blocked on a window that the peer,
// gone, never opens again, and only the peer's end seen here lets the
// relay close the stream that wakes that writer.
func (s *Stream) ended() bool { return s.endSent.Load() }

// Abort tells the peer why this side gives the stream up, then closes it.
// If a write is blocked mid-chunk, or the end was already sent, it closes
// without the reason; the peer then sees the stream cut off.
func (s *Stream) Abort(reason string) error {
	if s.wmu.TryLock() {
		if !s.wclosed {
			s.wclosed = true
			reason = truncateUTF8(reason, maxAbortReason)
			b := make([]byte, chunkHeaderLen+len(reason))
			putChunkHeader(b, chunkAbort, len(reason))
			copy(b[chunkHeaderLen:], reason)
			s.st.SetWriteDeadline(time.Now().Add(abortWriteTimeout))
			s.st.Write(b)
		}
		s.wmu.Unlock()
	}
	if s.lane != nil { // the abort chunk may wait behind data: say it ahead
		s.lane.sendLane(typeReset, Reset{Stream: s.ID(), Reason: truncateUTF8(reason, maxAbortReason)})
	}
	return s.Close()
}

// Close closes both directions at once and releases the stream.
func (s *Stream) Close() error {
	err := ErrClosed
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.meter != nil {
			s.flushMeter()
		}
		s.led.leave(s.ID())
		err = s.st.Close()
		s.wakeReader()
	})
	return err
}

// meterInterval is how often, at most, a stream that moves bytes calls its
// meter: the dashboard samples once a second.
const meterInterval = time.Second

// SetMeter makes the stream report the bytes it moves to f: those written
// into it (Write, ReadFrom) as sent, those WriteTo delivered to its
// connection as received, each call with what moved since the last one.
// f is called by the goroutines moving the bytes: when a direction goes
// idle (all that arrived was moved), at least once per meterInterval while
// bytes keep moving, and a last time by Close, so that a transfer shows in
// counters and charts as it goes, not only when its connection ends.
// Set it before the stream moves bytes; f must be quick and safe for
// concurrent use. A datagram stream's chunks are not metered (its flow
// counts its datagrams).
func (s *Stream) SetMeter(f func(sent, received int64)) {
	s.metered.Store(s.led.now().UnixNano())
	s.meter = f
}

// count adds n moved bytes to c, and calls the meter when it is due. now
// (unix ns, the session's clock) is when they moved: the stamp the write
// just left in moved, so a chunk reads the clock once, not twice.
func (s *Stream) count(c *atomic.Int64, n int, now int64) {
	if s.meter == nil || n == 0 {
		return
	}
	c.Add(int64(n))
	last := s.metered.Load()
	if now-last >= int64(meterInterval) && s.metered.CompareAndSwap(last, now) {
		s.flushMeter()
	}
}

// Idle calls the meter for what moved, as a direction goes idle (its
// relay's connection is drained).
func (s *Stream) Idle() {
	if s.meter != nil {
		s.metered.Store(s.led.now().UnixNano())
		s.flushMeter()
	}
}

// flushMeter reports what moved since the meter's last call.
func (s *Stream) flushMeter() {
	if sent, received := s.unsent.Swap(0), s.unreceived.Swap(0); sent != 0 || received != 0 {
		s.meter(sent, received)
	}
}

// Own installs cut, which the stream calls (once) when it is killed, to
// cut off the connection its relay carries, and gone, which reports that
// connection reset by its peer (the ledger asks while the relay is stuck
// writing into the stream, and not reading it); if the stream was killed
// already, cut runs at once.
func (s *Stream) Own(cut func(), gone func() bool) {
	s.kmu.Lock()
	s.cut, s.gone = cut, gone
	killed := s.killErr != nil
	s.kmu.Unlock()
	if killed {
		cut()
	}
}

// connGone reports whether the relay's connection was reset by its peer.
func (s *Stream) connGone() bool {
	s.kmu.Lock()
	gone := s.gone
	s.kmu.Unlock()
	return gone != nil && gone()
}

// abortGrace is how long a stream whose peer sent a Reset may go on
// writing without progress before it is killed: the abort chunk, in band,
// normally ends it within a round trip.
const abortGrace = 250 * time.Millisecond

// peerReset acts on the peer's Reset: it kills the stream if its relay
// makes no progress for abortGrace while it has data to write, for then it
// would never read the abort chunk behind that data.
func (s *Stream) peerReset(reason string) {
	err := &AbortError{Reason: reason}
	mark := s.moved.Load()
	var check func()
	check = func() {
		switch {
		case s.closed.Load() || s.Killed() != nil:
		case s.busy.Load() > 0 && s.moved.Load() == mark:
			s.kill(err)
		default:
			mark = s.moved.Load()
			s.led.clk.AfterFunc(abortGrace, check)
		}
	}
	s.led.clk.AfterFunc(abortGrace, check)
}

// Killed says why the stream was killed, nil while it lives.
func (s *Stream) Killed() error {
	s.kmu.Lock()
	defer s.kmu.Unlock()
	return s.killErr
}

// kill ends the stream for err without waiting for anything: it cuts off
// the relay's connection, fails every smux read and write under way or to
// come (deadlines in the past), and discards what smux holds unread for
// the stream. The stream's owner sees its operations fail, and closes it.
// Killing it again only discards again.
func (s *Stream) kill(err error) {
	s.kmu.Lock()
	first := s.killErr == nil
	if first {
		s.killErr = err
		s.dead.Store(true)
	}
	cut := s.cut
	s.kmu.Unlock()
	if first && cut != nil {
		cut()
	}
	now := time.Now()
	s.st.SetReadDeadline(now)
	s.st.SetWriteDeadline(now)
	s.discard()
	s.wakeReader()
}

// discard reads and drops what smux holds for the stream now (its reads
// fail at once after kill's past deadline).
func (s *Stream) discard() {
	var buf [4 << 10]byte
	for {
		if _, err := s.read(buf[:]); err != nil {
			return
		}
	}
}

// read reads from smux, as the ledger counts it.
func (s *Stream) read(p []byte) (int, error) {
	n, err := s.st.Read(p)
	s.taken.Add(uint32(n))
	s.drained.Store(s.led.read(s.ID(), n))
	return n, err
}

// drainedConn reports that r is a Conn whose last Read left nothing of
// its stream unread.
func drainedConn(r io.Reader) bool {
	c, ok := r.(*Conn)
	return ok && c.st.drained.Load()
}

// SetReadDeadline sets the deadline for Read and WriteTo.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.st.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for Write and ReadFrom.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.st.SetWriteDeadline(t) }

// Abrupt reports whether err, from WriteTo or AwaitClose, ended the far
// side without a clean close: the peer aborted, or the stream was cut off.
// (The relay then resets its connection: relay.Stream.)
func (s *Stream) Abrupt(err error) bool {
	var ab *AbortError
	return errors.As(err, &ab) || errors.Is(err, ErrTruncated)
}

// cutOff maps the error that ended smux's stream early to Read's error.
// smux reports a FIN, its session's end and our own Close alike (io.EOF or
// io.ErrClosedPipe), so only our own Close can be told apart.
func (s *Stream) cutOff(err error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err == io.EOF || errors.Is(err, io.ErrClosedPipe) {
		return ErrTruncated
	}
	return fmt.Errorf("%w: %v", ErrTruncated, err)
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func eofIsNil(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}
