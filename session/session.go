package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/clock"
	"github.com/xtaci/smux"
)

// goodbyeTimeout bounds how long Close waits to deliver its Goodbye and to
// see the peer hang up after it.
const goodbyeTimeout = 2 * time.Second

// Session is one authenticated client session: a smux session whose first
// stream is the control stream. The server opens data streams with Open; on
// the client, Run hands each one to a handler.
//
// Close ends the session (telling the peer why) and is idempotent; Run
// returns after the session ended and all its goroutines, handlers
// included, have returned.
type Session struct {
	cfg  Config
	log  *slog.Logger
	conn *budgetConn
	lc   *laneConn
	lane bool // control frames go on the lane, not the control stream
	mux  *smux.Session
	ctrl *smux.Stream
	peer string // "server" or "client": the other side, for errors
	bufs sync.Pool
	led  *ledger
	info Info
	clk  clock.Clock // cfg.Clock or the system clock

	hbRun     sync.Mutex  // held while a heartbeat beat runs (heartbeat.go)
	hb        clock.Timer // the next beat
	hbStopped bool
	skipped   int         // beats in a row without a ping (heartbeat.go), under hbRun
	heard     atomic.Bool // a control frame came since the last beat
	heardPrev bool        // one came between the two beats before, under hbRun

	wmu sync.Mutex // one control frame at a time

	die     chan struct{}
	dieOnce sync.Once
	err     error // why the session ended; set before die closes
	ctx     context.Context
	cancel  context.CancelFunc // cancels ctx when the session ends

	mu         sync.Mutex
	running    bool // Run started readControl
	closing    bool // Close started
	closeOnce  sync.Once
	readerDone chan struct{} // closed when readControl returns

	updMu   sync.Mutex    // one Update at a time
	updSeq  atomic.Uint64 // of the last Update sent
	updated chan Updated  // answers, from readControl to Update

	missed   atomic.Int32           // pings sent since the last frame received
	rtt      atomic.Int64           // last measured, ns
	rtts     [rttsKept]atomic.Int64 // the last rttsKept measured, ns
	nrtt     atomic.Uint64          // RTTs measured so far
	pingSeq  atomic.Uint64
	pingSent [pingsKept]atomic.Int64 // unix ns of ping seq, at seq % pingsKept
}

// Info describes a session for logs and status.
type Info struct {
	// Client is the client's name on the server (from the Welcome).
	Client string
	// ID identifies the session in both sides' logs.
	ID string
	// Instance is the client process's run identity.
	Instance string
	// Remote is the peer's transport address.
	Remote net.Addr
	// Services are the granted claims.
	Services []Service
	// Groups: the server accepts parallel sessions (Welcome.Groups).
	Groups bool
	// UDP: the server serves UDP claims (Challenge.UDP); client side.
	UDP bool
	// PrivateUDP: the server serves private UDP services and UDP
	// visitors (Challenge.PrivateUDP); client side.
	PrivateUDP bool
	// DrainNotice: the server sends Drain when it shuts down (both sides
	// said so: Auth.DrainNotice, Welcome.DrainNotice).
	DrainNotice bool
	// Private: the server knows private services and visitors
	// (Welcome.Private); PrivateServices and Visitors are those granted.
	Private         bool
	PrivateServices []Service
	Visitors        []Visitor
	// Dial: the client takes dial streams (Auth.Dial; server side).
	Dial bool
	// Started is when authentication completed.
	Started time.Time
}

func newSession(cfg Config, log *slog.Logger, conn *budgetConn, lc *laneConn, lane bool, mux *smux.Session, ctrl *smux.Stream, peer string, info Info) *Session {
	s := &Session{
		cfg:  cfg,
		log:  log,
		conn: conn,
		lc:   lc,
		lane: lane,
		mux:  mux,
		ctrl: ctrl,
		peer: peer,
		info: info,
		led:  lc.led,
		clk:  clock.Or(cfg.Clock),
		die:  make(chan struct{}),

		updated: make(chan Updated, 1),

		readerDone: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.bufs.New = func() any {
		b := make([]byte, chunkBufSize(cfg.Mux.FrameSize))
		return &b
	}
	return s
}

// Info returns the session's description.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// Update replaces the services this client claims, without ending the
// session (the client's case). On a *RejectError the server kept the old
// claims. It waits for the answer up to the handshake timeout.
func (s *Session) Update(services []Service) ([]Service, error) {
	for _, svc := range services {
		if svc.IsUDP() && s.peer == "server" && !s.Info().UDP {
			return nil, fmt.Errorf("%w: service %q has protocol = \"udp\"", ErrNoUDP, svc.Name)
		}
	}
	s.updMu.Lock()
	defer s.updMu.Unlock()
	select {
	case <-s.updated: // a late answer to an earlier update
	default:
	}
	seq := s.updSeq.Add(1)
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	if err := s.writeControl(typeUpdate, Update{Seq: seq, Services: services}, deadline); err != nil {
		return nil, s.orErr(fmt.Errorf("sending the update: %w", err))
	}
	t := s.clk.NewTimer(s.cfg.HandshakeTimeout)
	defer t.Stop()
	for {
		select {
		case u := <-s.updated:
			if u.Seq != seq {
				continue // the answer to an update that timed out
			}
			if u.Code != "" {
				return nil, &RejectError{Code: u.Code, Reason: u.Reason}
			}
			s.mu.Lock()
			s.info.Services = u.Services
			s.mu.Unlock()
			return u.Services, nil
		case <-s.die:
			return nil, s.Err()
		case <-t.C():
			return nil, fmt.Errorf("no answer to the update within %v", s.cfg.HandshakeTimeout)
		}
	}
}

// RTT is the last heartbeat round trip, 0 before the first.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// NumStreams is the number of data streams open.
func (s *Session) NumStreams() int {
	n := s.mux.NumStreams() - 1 // the control stream
	return max(n, 0)
}

// Drain tells the server that this client takes no new connections; the
// streams open go on. It gives up at deadline, or after the Goodbye wait
// (2 s) if that comes first.
func (s *Session) Drain(deadline time.Time) error {
	return s.writeControl(typeDrain, Drain{}, earliest(deadline, time.Now().Add(goodbyeTimeout)))
}

// ErrNoDrainNotice: the client did not say it reads a server's Drain.
var ErrNoDrainNotice = errors.New("the client does not read a server's drain notice")

// Draining tells the client that this server is shutting down: it takes
// no new public connections, the streams open go on, and the client
// should come back no sooner than returnAfter after the session ends
// (the server's case). It returns ErrNoDrainNotice, sending nothing, to
// a client that did not announce it reads it (Info.DrainNotice).
func (s *Session) Draining(returnAfter time.Duration) error {
	if !s.Info().DrainNotice {
		return ErrNoDrainNotice
	}
	return s.writeControl(typeDrain, Drain{ReturnAfter: returnAfter.Milliseconds()}, time.Now().Add(goodbyeTimeout))
}

// Missed is how many pings in a row are unanswered now: above 0 the peer
// is late, at Config.HeartbeatMisses it is declared dead.
func (s *Session) Missed() int { return int(s.missed.Load()) }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.die }

// Context is cancelled when the session ends: work done for one of its
// streams (dialing a target, say) stops with it.
func (s *Session) Context() context.Context { return s.ctx }

// Err says why the session ended, nil while it runs.
func (s *Session) Err() error {
	select {
	case <-s.die:
		return s.err
	default:
		return nil
	}
}

// Handlers receive what the peer does on its own initiative. Both are
// called from the session's goroutines and must not block for long.
type Handlers struct {
	// Stream gets each stream the peer opens, with its header read, in a
	// goroutine of its own. nil refuses such streams (the server's case).
	Stream func(*Stream)
	// Drain is called when the client says it takes no new connections
	// (the server's case).
	Drain func()
	// Draining is called when the server says it is shutting down and
	// when to come back (the client's case; only after both sides
	// announced the notice, Info.DrainNotice). nil ignores it.
	Draining func(returnAfter time.Duration)
	// Update is called when the client replaces its claims (the server's
	// case): it returns the claims as granted, or why they were refused
	// (the old claims then stay). nil refuses every update.
	Update func([]Service) ([]Service, *RejectError)
}

// Run serves the session until it ends or ctx is done (then it closes the
// session with Goodbye code CodeShuttingDown): it answers and sends
// heartbeats, and hands what the peer does to h. Run returns why the session
// ended, after every goroutine it started has returned, stream handlers
// included. Calling Run more than once returns ErrClosed.
func (s *Session) Run(ctx context.Context, h Handlers) error {
	s.mu.Lock()
	if s.running || s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	s.running = true
	s.mu.Unlock()
	var wg sync.WaitGroup
	if s.lane {
		f := s.answerPing
		s.lc.ping.Store(&f)
	}
	wg.Go(func() { s.readControl(h) })
	wg.Go(func() { s.acceptStreams(h.Stream) })
	// The heartbeat and the ledger's guard wait on timers, not goroutines.
	s.startHeartbeat()
	s.led.startGuard(s.relieved)
	select {
	case <-ctx.Done():
		s.Close(CodeShuttingDown, "shutting down")
	case <-s.die:
	}
	s.stopHeartbeat()
	s.led.stopGuard()
	wg.Wait()
	return s.err
}

// Open opens a data stream to the client and sends its header.
func (s *Session) Open(hdr Header) (*Stream, error) { return s.OpenWith(hdr, nil) }

// OpenWith is Open, sending first, the connection's first bytes, as a data
// chunk in the same smux frame as the header: a new connection whose first
// bytes are in costs one write to the transport, not two, and the client
// has them as it reads the header.
func (s *Session) OpenWith(hdr Header, first []byte) (*Stream, error) {
	b, err := hdr.encode()
	if err != nil {
		return nil, err
	}
	st, err := s.mux.OpenStream()
	if err != nil {
		return nil, s.orErr(err)
	}
	// Entered before the header goes out: the client sends nothing on the
	// stream before it has read the header.
	s.led.opened(st.ID())
	ds := s.newStream(st, hdr, 0)
	var bp *[]byte
	if len(first) > 0 {
		bp = s.bufs.Get().(*[]byte)
		buf := *bp
		k := min(len(first), len(buf)-len(b)-chunkHeaderLen)
		if k > 0 {
			n := copy(buf, b)
			putChunkHeader(buf[n:], chunkData, k)
			n += chunkHeaderLen
			n += copy(buf[n:], first[:k])
			b, first = buf[:n], first[k:]
		}
	}
	if _, err := st.Write(b); err != nil {
		ds.Close() // b may be queued in smux still: not put back
		return nil, s.orErr(err)
	}
	if bp != nil {
		s.bufs.Put(bp)
	}
	if len(first) > 0 { // more than a frame holds beside the header
		if _, err := ds.Write(first); err != nil {
			ds.Close()
			return nil, s.orErr(err)
		}
	}
	return ds, nil
}

// newStream makes st, entered in the ledger already, a data stream, of
// which taken bytes were read already (its header, when the peer opened
// it).
func (s *Session) newStream(st *smux.Stream, hdr Header, taken int) *Stream {
	ds := &Stream{st: st, hdr: hdr, bufs: &s.bufs, led: s.led, endDone: make(chan struct{}), lc: s.lc, window: uint32(s.cfg.Mux.StreamWindow)}
	ds.taken.Store(uint32(taken))
	if s.lane {
		ds.lane = s.lc
	}
	ds.moved.Store(s.led.now().UnixNano())
	s.led.attach(ds)
	return ds
}

// Close ends the session: it sends Goodbye{code, reason}, waits briefly for
// the peer to hang up (so the Goodbye arrives even over KCP, which has no
// FIN), then closes the transport. Streams still open are cut off.
func (s *Session) Close(code, reason string) {
	s.closeOnce.Do(func() {
		select {
		case <-s.die:
			return
		default:
		}
		s.mu.Lock()
		s.closing = true
		running := s.running
		s.mu.Unlock()
		deadline := time.Now().Add(goodbyeTimeout) // the connection's, on real time
		t := s.clk.NewTimer(goodbyeTimeout)
		defer t.Stop()
		if s.writeControl(typeGoodbye, Goodbye{Code: code, Reason: reason}, deadline) == nil {
			if running { // readControl is the reader; it returns at the hang-up
				select {
				case <-s.readerDone:
				case <-s.die:
				case <-t.C():
				}
			} else if s.lane {
				s.lc.in.waitEnd(deadline)
			} else {
				waitHangUp(s.ctrl, deadline)
			}
		}
		s.fail(fmt.Errorf("%w: %s", ErrClosed, reason))
	})
}

func (s *Session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// fail ends the session with err as its reason, unless it has ended already.
func (s *Session) fail(err error) {
	s.dieOnce.Do(func() {
		s.err = err
		close(s.die)
		s.cancel()
		s.mux.Close()
		s.lc.in.fail(err) // smux may have stopped reading before the close
		// Every relay's connection is reset now, whatever its peer does:
		// nothing waits for a relay to drain.
		s.led.end(fmt.Errorf("%w: the session ended", ErrTruncated))
	})
}

// relieved logs the streams the pressure rule killed since it last did
// (the ledger's guard calls it: not from smux's receive loop).
func (s *Session) relieved(n int64) {
	s.log.Warn("session receive buffer nearly full: reset the connections holding the most unread data the longest", "reset", n, "session", s.info.ID)
}

// orErr prefers the session's end reason to the error of an operation that
// failed because of it.
func (s *Session) orErr(err error) error {
	if serr := s.Err(); serr != nil {
		return serr
	}
	return err
}

// writeControl sends one control frame by deadline: on the lane, ahead of
// the data streams, or on the control stream with a peer that has no lane.
func (s *Session) writeControl(typ byte, msg any, deadline time.Time) error {
	if s.lane {
		return s.lc.writeLane(typ, msg, deadline)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ctrl.SetWriteDeadline(deadline)
	return writeFrame(s.ctrl, typ, msg)
}

// readControlFrame reads the peer's next control frame, from the lane or
// the control stream.
func (s *Session) readControlFrame() (byte, []byte, error) {
	if s.lane {
		return s.lc.in.next()
	}
	return readFrame(drained{s.ctrl}, s.cfg.MaxControlFrame)
}

// answerPing answers a Ping from the lane in the transport's reader,
// as readControl would: an idle server of 10 000 sessions would otherwise
// wake readControl's goroutine, and make a channel and a timer, for each
// of the peers' pings (docs/benchmarks.md, sessions). Only while no data
// stream is open: the pong is queued without waiting, and written at once
// unless a write is under way (whose writer sends it next), so the reader
// waits on a write only when the transport takes nothing, which an idle
// session's does. Otherwise, or closing, it leaves the frame to
// readControl.
func (s *Session) answerPing(payload []byte) (bool, error) {
	if s.NumStreams() > 0 || s.isClosing() {
		return false, nil
	}
	var p Ping
	if err := decodeFrame(typePing, payload, &p); err != nil {
		return false, nil // readControl reports it
	}
	s.missed.Store(0)
	s.heard.Store(true)
	if err := s.lc.pong(p); err != nil {
		s.log.Debug("pong not sent", "err", err) // as good as lost, as readControl's
	}
	return true, nil
}

// readControl reads control frames until the session ends. Once Close has
// begun it only waits for the peer to hang up; Close then ends the session.
func (s *Session) readControl(h Handlers) {
	defer close(s.readerDone)
	for {
		typ, payload, err := s.readControlFrame()
		if s.isClosing() {
			if err != nil || typ == typeGoodbye {
				return
			}
			continue
		}
		if errors.Is(err, ErrProtocol) || errors.Is(err, ErrVersion) {
			s.abandon(err)
			return
		}
		if err != nil {
			s.fail(s.connErr(err))
			return
		}
		s.missed.Store(0)
		s.heard.Store(true)
		switch typ {
		case typePing:
			var p Ping
			if err := decodeFrame(typ, payload, &p); err != nil {
				s.abandon(err)
				return
			}
			// A pong that cannot leave within an interval is as good as lost.
			s.writeControl(typePong, Pong(p), time.Now().Add(s.cfg.HeartbeatInterval))
		case typePong:
			var p Pong
			if err := decodeFrame(typ, payload, &p); err != nil {
				s.abandon(err)
				return
			}
			// A pong for any recent ping measures: on a slow or busy
			// link the RTT may exceed the interval.
			if last := s.pingSeq.Load(); p.Seq <= last && last-p.Seq < pingsKept {
				s.measured(time.Duration(s.clk.Now().UnixNano() - s.pingSent[p.Seq%pingsKept].Load()))
			}
		case typeDrain:
			var d Drain
			if err := decodeFrame(typ, payload, &d); err != nil {
				s.abandon(err)
				return
			}
			switch {
			case s.peer == "client" && h.Drain != nil:
				h.Drain()
			case s.peer == "server" && s.Info().DrainNotice && d.ReturnAfter >= 0:
				if h.Draining != nil {
					h.Draining(time.Duration(min(d.ReturnAfter, maxReturnAfter.Milliseconds())) * time.Millisecond)
				}
			case s.peer == "server":
				s.abandon(fmt.Errorf("%w: the server sent a drain notice it did not announce", ErrProtocol))
				return
			default:
				s.abandon(fmt.Errorf("%w: unexpected drain frame", ErrProtocol))
				return
			}
		case typeUpdate:
			var u Update
			if err := decodeFrame(typ, payload, &u); err != nil {
				s.abandon(err)
				return
			}
			if h.Update == nil {
				s.abandon(fmt.Errorf("%w: a server may not update claims", ErrProtocol))
				return
			}
			ans := Updated{Seq: u.Seq}
			if granted, rej := h.Update(u.Services); rej != nil {
				ans.Code, ans.Reason = rej.Code, rej.Reason
			} else {
				ans.Services = granted
				s.mu.Lock()
				s.info.Services = granted
				s.mu.Unlock()
			}
			s.writeControl(typeUpdated, ans, time.Now().Add(s.cfg.HandshakeTimeout))
		case typeUpdated:
			var u Updated
			if err := decodeFrame(typ, payload, &u); err != nil {
				s.abandon(err)
				return
			}
			if u.Seq != s.updSeq.Load() {
				break // the answer to an update that gave up waiting
			}
			select {
			case s.updated <- u:
			default:
			}
		case typeReset:
			var r Reset
			if err := decodeFrame(typ, payload, &r); err != nil {
				s.abandon(err)
				return
			}
			if !s.lane {
				s.abandon(fmt.Errorf("%w: a reset frame, which goes on the control lane only", ErrProtocol))
				return
			}
			s.led.peerReset(r.Stream, r.Reason)
		case typeGoodbye:
			var g Goodbye
			if err := decodeFrame(typ, payload, &g); err != nil {
				s.fail(err)
				return
			}
			s.fail(&GoodbyeError{Code: g.Code, Reason: g.Reason, Peer: s.peer})
			return
		default:
			s.abandon(fmt.Errorf("%w: unexpected %s frame after authentication", ErrProtocol, typeName(typ)))
			return
		}
	}
}

// abandon ends the session over a protocol error, telling the peer why
// (without waiting: the peer is not behaving).
func (s *Session) abandon(err error) {
	s.mu.Lock()
	s.closing = true // the peer hanging up now is not the reason
	s.mu.Unlock()
	s.writeControl(typeGoodbye, Goodbye{Code: CodeProtocol, Reason: err.Error()}, time.Now().Add(goodbyeTimeout))
	s.fail(err)
}

// maxReturnAfter caps the wait a server's drain notice may ask for: a
// server cannot keep its clients away for long.
const maxReturnAfter = time.Minute

// acceptStreams drains smux's accept queue for the session's whole life: an
// undrained queue would stall every stream of the session. It leaves saying
// why the session ended to readControl, which sees every end of the mux and
// may still have the peer's Goodbye to read.
func (s *Session) acceptStreams(handle func(*Stream)) {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			// smux stopped reading (a protocol error, say): the lane's
			// reader must hear of it too.
			s.lc.in.fail(err)
			return
		}
		handlers.Go(func() {
			// The header follows the stream's opening at once; a peer that
			// does not send it does not get to hold the goroutine.
			st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
			cr := &countedReader{st: st, led: s.led}
			hdr, err := readHeader(cr)
			if err != nil {
				s.log.Warn("bad stream header; closed the stream", "stream", st.ID(), "err", err)
				s.led.leave(st.ID())
				st.Close()
				return
			}
			if handle == nil {
				// Refused only once its header is in: smux v1.5.57's
				// OpenStream enters a stream in its table after its SYN
				// is written, and drops a FIN that arrives before; the
				// peer writes the header after OpenStream returned, so
				// a FIN sent after it reaches the stream.
				s.log.Warn("peer opened a stream it may not; closed it", "stream", st.ID())
				s.led.leave(st.ID())
				st.Close()
				return
			}
			st.SetReadDeadline(time.Time{})
			handle(s.newStream(st, hdr, cr.n))
		})
	}
}

// countedReader reads a smux stream as the ledger counts it, and counts
// the bytes read.
type countedReader struct {
	st  *smux.Stream
	led *ledger
	n   int
}

func (r *countedReader) Read(p []byte) (int, error) {
	n, err := r.st.Read(p)
	r.led.read(r.st.ID(), n)
	r.n += n
	return n, err
}

// connErr turns the error that ended reading the session into its reason.
func (s *Session) connErr(err error) error {
	if serr := s.Err(); serr != nil {
		return serr
	}
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrVersion) {
		return err
	}
	if err == io.EOF || errors.Is(err, io.ErrClosedPipe) {
		return fmt.Errorf("%w: %s hung up", ErrConnLost, s.peer)
	}
	return fmt.Errorf("%w: %v", ErrConnLost, err)
}

// drained reads a smux stream so that data that arrived before the
// connection failed is not lost: smux's Read may report the failure while
// such data is still buffered, at random; a second Read returns the data.
type drained struct{ r io.Reader }

func (d drained) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if n == 0 && err != nil && !isTimeout(err) {
		if n2, _ := d.r.Read(p); n2 > 0 {
			return n2, nil
		}
	}
	return n, err
}

// waitHangUp reads (and drops) from r until the peer closes or the deadline
// passes, so that what was written last is delivered before we close.
func waitHangUp(r interface {
	io.Reader
	SetReadDeadline(time.Time) error
}, deadline time.Time) {
	r.SetReadDeadline(deadline)
	var buf [256]byte
	for {
		if _, err := r.Read(buf[:]); err != nil {
			return
		}
	}
}

func fmtRTT(d time.Duration) string {
	if d <= 0 {
		return "none measured"
	}
	if d < time.Millisecond {
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}
