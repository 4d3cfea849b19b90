package session

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/clock"
)

// Errors a stream is killed with (Result.Err of its relay); match them with
// errors.Is.
var (
	// ErrStalled: the relay made no progress for Config.StallTimeout while
	// data waited to be written.
	ErrStalled = errors.New("relay stalled")
	// ErrPressure: the session's unread data neared its receive window, and
	// this stream held the most of it, for the longest.
	ErrPressure = errors.New("session receive buffer full")
)

// KillReason names why this side killed a relay whose Result.Err is err:
// "stall" (ErrStalled), "pressure" (ErrPressure), or "" when it did not
// (the values of metrics.AbortStall and AbortPressure).
func KillReason(err error) string {
	switch {
	case errors.Is(err, ErrStalled):
		return "stall"
	case errors.Is(err, ErrPressure):
		return "pressure"
	}
	return ""
}

// ledger keeps account of a session's data streams, so that nothing the
// peers of one stream do can hold the session or outlive it. Its rules,
// which hold together:
//
//   - Ownership. A data stream is entered when it is opened: by this side
//     (Open), or by the peer (its SYN, seen by the lane reader). It leaves
//     when it is closed. When the session ends, every stream still entered
//     is killed: the connection its relay carries is reset, and every smux
//     operation on it fails at once. So no relay outlives its session, and
//     Run, which waits for the stream handlers, never waits for one to
//     drain.
//   - Stall. A stream with a write in progress (into the stream, or to its
//     relay's connection) and no write completed in either direction for
//     Config.StallTimeout is killed with ErrStalled. A relay that is merely
//     idle, with nothing to write, is never stalled.
//   - Pressure. smux buffers what arrives for every stream in one receive
//     window (Mux.SessionWindow); when it is full smux stops reading the
//     connection, and every stream, the control lane and the heartbeats
//     with it, would wait for the slowest reader. So the ledger counts, per
//     stream, the bytes that arrived (PSH frames, from the lane reader) and
//     that its reader took, and keeps their sum, the unread bytes, under
//     highWater: past it, it kills the stream whose unread bytes times the
//     time since its reader last took any is greatest (the one stuck the
//     longest with the most), until the sum is under again. One stream
//     holds at most Mux.StreamWindow (smux's per-stream window), and a kill
//     frees its bytes at once, so the window never fills.
//
// Killing a stream (Stream.kill) resets its relay's connection, wakes its
// blocked reads and writes with past deadlines, and reads and discards what
// smux holds for it; the relay then sends an abort with the reason and
// closes the stream. kill never blocks on the network, so the ledger may
// kill from any goroutine; it never kills with mu held.
type ledger struct {
	stall     time.Duration // 0: no stall rule
	highWater int64         // unread bytes allowed across the session's streams
	clk       clock.Clock   // the session's
	pressed   atomic.Int64  // streams it killed since the guard last logged

	// The guard is a clock timer that applies the stall rule (check) and
	// logs what the pressure rule did, every tick while streams are
	// entered; an idle session has no timer pending (with thousands of
	// sessions, a ticker each cost a wake-up per second per session).
	// gRun is held while a tick runs, so that stopGuard can wait for it;
	// the other guard fields are under mu.
	gRun     sync.Mutex
	guard    clock.Timer
	relieved func(n int64) // logs n streams killed by the pressure rule
	gStarted bool
	gArmed   bool
	gStopped bool

	mu     sync.Mutex
	accts  map[uint32]*account // entered streams, by smux stream id
	unread int64               // the sum of their unread bytes
	peak   int64               // the most unread there ever was (for tests)
	ended  error               // set when the session ended: new streams are killed at once
}

// account is one stream's entry.
type account struct {
	st       *Stream // nil until the stream is accepted (its header read)
	id       uint32
	unread   int64 // bytes arrived and not read yet
	fin      bool  // the peer's FIN arrived
	lastRead time.Time
}

// highWater leaves, below the session window, room for four streams'
// windows (the data in flight while a kill takes effect, and what killed
// streams receive until their peers learn of it), or half the window when
// that is less.
func highWater(m Mux) int64 {
	w, s := int64(m.SessionWindow), int64(m.StreamWindow)
	return w - min(4*s, w/2)
}

func newLedger(cfg Config) *ledger {
	return &ledger{
		stall:     cfg.StallTimeout,
		highWater: highWater(cfg.Mux),
		clk:       clock.Or(cfg.Clock),
		accts:     make(map[uint32]*account),
	}
}

// opened enters the stream id, opened by this side or the peer; after the
// session ended it does nothing.
func (l *ledger) opened(id uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended == nil && l.accts[id] == nil {
		l.accts[id] = &account{id: id, lastRead: l.clk.Now()}
		l.armLocked()
	}
}

// now is the session's time.
func (l *ledger) now() time.Time { return l.clk.Now() }

// startGuard starts the guard, which logs with relieved.
func (l *ledger) startGuard(relieved func(n int64)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gStarted, l.relieved = true, relieved
	if len(l.accts) > 0 {
		l.armLocked()
	}
}

// armLocked sets the guard's next tick, unless one is set already, the
// guard has not started or it has stopped.
func (l *ledger) armLocked() {
	if !l.gStarted || l.gStopped || l.gArmed {
		return
	}
	l.gArmed = true
	if l.guard == nil {
		l.guard = l.clk.AfterFunc(l.tick(), l.guardTick)
	} else {
		l.guard.Reset(l.tick())
	}
}

// guardTick runs in the timer's goroutine: the stall rule, the log of the
// pressure rule's kills, and the next tick while streams are entered.
func (l *ledger) guardTick() {
	l.gRun.Lock()
	defer l.gRun.Unlock()
	l.mu.Lock()
	if l.gStopped {
		l.mu.Unlock()
		return
	}
	l.gArmed = false
	l.mu.Unlock()
	l.check(l.clk.Now())
	if n := l.pressed.Swap(0); n > 0 {
		l.relieved(n)
	}
	l.mu.Lock()
	if len(l.accts) > 0 || l.pressed.Load() > 0 {
		l.armLocked()
	}
	l.mu.Unlock()
}

// stopGuard cancels the next tick and waits for one under way.
func (l *ledger) stopGuard() {
	l.mu.Lock()
	l.gStopped = true
	if l.guard != nil {
		l.guard.Stop()
	}
	l.mu.Unlock()
	l.gRun.Lock()
	l.gRun.Unlock()
}

// attach gives the entered stream its Stream; after the session ended, or
// for a stream never entered, it kills st.
func (l *ledger) attach(st *Stream) {
	l.mu.Lock()
	a := l.accts[st.ID()]
	if a != nil {
		a.st = st
	}
	ended := l.ended
	l.mu.Unlock()
	if a == nil {
		if ended == nil {
			ended = fmt.Errorf("%w: stream unknown to its session", ErrTruncated)
		}
		st.kill(ended)
	}
}

// leave forgets stream id, which was closed: smux frees what it held.
func (l *ledger) leave(id uint32) {
	l.mu.Lock()
	if a := l.accts[id]; a != nil {
		l.unread -= a.unread
		delete(l.accts, id)
	}
	l.mu.Unlock()
}

// arrived counts n bytes that arrived for stream id, and when the unread
// bytes pass highWater applies the pressure rule at once, in the caller
// (the lane reader, inside smux's receive loop): smux reads no further
// frame before there is room again. A kill takes no lock the receive loop
// holds and waits for no network, so doing it here is safe.
func (l *ledger) arrived(id uint32, n int) {
	l.mu.Lock()
	a := l.accts[id]
	if a == nil { // the control stream, or a stream closed already
		l.mu.Unlock()
		return
	}
	a.unread += int64(n)
	l.unread += int64(n)
	l.peak = max(l.peak, l.unread)
	over := l.unread > l.highWater
	st := a.st
	l.mu.Unlock()
	if st != nil {
		st.wakeReader()
	}
	if over {
		if k := l.relieveOnce(l.clk.Now()); k > 0 {
			l.pressed.Add(int64(k))
			l.mu.Lock()
			l.armLocked() // the guard logs it
			l.mu.Unlock()
		}
	}
}

// finned notes the peer's FIN for stream id (it closed the stream), which
// an idle relay must see as it sees data.
func (l *ledger) finned(id uint32) {
	l.mu.Lock()
	var st *Stream
	if a := l.accts[id]; a != nil {
		a.fin = true
		st = a.st
	}
	l.mu.Unlock()
	if st != nil {
		st.wakeReader()
	}
}

// readable reports whether stream id has something for a read: unread
// bytes, the peer's FIN, or no entry any more (closed, or the session
// ended).
func (l *ledger) readable(id uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.accts[id]
	return a == nil || a.unread > 0 || a.fin
}

// read counts n bytes that stream id's reader took from smux.
func (l *ledger) read(id uint32, n int) (drained bool) {
	if n <= 0 {
		return false
	}
	now := l.clk.Now()
	l.mu.Lock()
	if a := l.accts[id]; a != nil {
		a.unread -= int64(n)
		l.unread -= int64(n)
		a.lastRead = now
		drained = a.unread <= 0
	}
	l.mu.Unlock()
	return drained
}

// relieveOnce applies the pressure rule at now and reports how many
// streams it killed. The bytes of streams killed already, by this pass or
// before, do not count: discard frees what smux holds for them at once,
// but a buffer their relay is still writing to its connection is freed
// only when that write returns, a moment after the kill reset the
// connection; counting it would kill further streams for nothing. What
// such streams still receive until their peers learn of the kill is
// discarded here, at each pass.
func (l *ledger) relieveOnce(now time.Time) int {
	killed := 0
	for {
		l.mu.Lock()
		live := l.unread
		var dead []*Stream
		var worst *account
		var worstScore float64
		for _, a := range l.accts {
			if a.st == nil || a.unread <= 0 {
				continue
			}
			if a.st.dead.Load() {
				live -= a.unread
				dead = append(dead, a.st)
				continue
			}
			idle := max(now.Sub(a.lastRead), time.Millisecond)
			if score := float64(a.unread) * idle.Seconds(); worst == nil || score > worstScore {
				worst, worstScore = a, score
			}
		}
		var held int64
		var idle time.Duration
		if worst != nil {
			held, idle = worst.unread, now.Sub(worst.lastRead)
		}
		l.mu.Unlock()
		if live <= l.highWater || worst == nil {
			// Done, or what is unread belongs to killed streams and to
			// streams not accepted yet (their header unread).
			for _, st := range dead {
				st.discard()
			}
			return killed
		}
		worst.st.kill(fmt.Errorf("%w: %d of the session's %d bytes unread were this connection's, unread for %v",
			ErrPressure, held, live, idle.Round(time.Millisecond)))
		killed++
	}
}

// end kills every stream with err, and every stream entered later: the
// session is over.
func (l *ledger) end(err error) {
	l.mu.Lock()
	if l.ended != nil {
		l.mu.Unlock()
		return
	}
	l.ended = err
	var all []*Stream
	for _, a := range l.accts {
		if a.st != nil {
			all = append(all, a.st)
		}
	}
	clear(l.accts)
	l.unread = 0
	l.mu.Unlock()
	for _, st := range all {
		st.kill(err)
	}
}

// peerReset passes the peer's Reset of stream id to the stream.
func (l *ledger) peerReset(id uint32, reason string) {
	l.mu.Lock()
	var st *Stream
	if a := l.accts[id]; a != nil {
		st = a.st
	}
	l.mu.Unlock()
	if st != nil {
		st.peerReset(reason)
	}
}

// stuckAfter is how long a relay waits on a write before the ledger looks
// at its connection: one stuck writing into the stream does not read its
// connection, and would not see it reset.
const stuckAfter = time.Second

// check applies the stall rule at now, and kills the streams stuck writing
// whose relay's connection was reset meanwhile.
func (l *ledger) check(now time.Time) {
	type verdict struct {
		st  *Stream
		err error
	}
	var stuck []*Stream
	var kill []verdict
	l.mu.Lock()
	for _, a := range l.accts {
		st := a.st
		if st == nil || st.busy.Load() == 0 {
			continue
		}
		switch idle := now.Sub(time.Unix(0, st.moved.Load())); {
		case l.stall > 0 && idle >= l.stall:
			kill = append(kill, verdict{st, fmt.Errorf("%w: nothing moved either way for %v while data waited", ErrStalled, l.stall)})
		case idle >= stuckAfter:
			stuck = append(stuck, st)
		}
	}
	l.mu.Unlock()
	for _, st := range stuck { // a system call each: not under mu
		if st.connGone() {
			kill = append(kill, verdict{st, fmt.Errorf("%w: its connection was reset while it waited to write", ErrTruncated)})
		}
	}
	for _, v := range kill {
		v.st.kill(v.err)
	}
}

// tick is how often check runs: a stall is caught between StallTimeout and
// a quarter more, a reset connection within a second or two.
func (l *ledger) tick() time.Duration {
	d := stuckAfter
	if l.stall > 0 {
		d = min(d, l.stall/4)
	}
	return max(d, 10*time.Millisecond)
}
