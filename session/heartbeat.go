package session

import (
	"fmt"
	"time"
)

// pingsKept is how many recent pings' send times are kept for RTT.
const pingsKept = 16

// rttsKept is how many recent RTTs the heartbeat's fast deadline looks at.
const rttsKept = 8

// Heartbeat deadlines. The peer is declared dead when HeartbeatMisses pings
// in a row went unanswered (no control frame at all came back) and it sent
// nothing at all for HeartbeatMisses intervals: on a link full of data a
// ping may wait behind it, and the data arriving proves the peer alive.
// That takes 15-20 s with the defaults.
//
// While data streams are open (public connections wait on the session)
// and at least minRTTs RTTs have been measured, a shorter deadline applies
// too: a peer that sent nothing at all for fastDeadline, with a ping
// outstanding, is dead. fastDeadline is max(HeartbeatInterval, fastFloor,
// fastRTTs x the largest recent RTT), and pings go every fastDeadline/4
// meanwhile, so a dead peer is noticed within 1.25 fastDeadlines: 5-6.25 s
// with the defaults on any path under 600 ms of RTT. The RTT term keeps a
// slow path's own delay from looking like death; the floor keeps a burst
// of queueing, on a path whose RTT was measured idle, from doing so.
const (
	fastFloor = 2 * time.Second
	fastRTTs  = 8
	minRTTs   = 3
)

// An idle session (no data stream open) skips its ping at a beat when a
// control frame came from the peer within the last two intervals (the
// peer pinged, or answered): the peer is alive, and the other side's
// pings already keep both sides hearing from each other every interval or
// two. It still pings at least every rttEvery intervals, and at every beat
// until minRTTs RTTs are measured, so that its RTT stays fresh and the
// fast deadline can apply once streams open. With thousands of idle
// sessions on a server this cuts the heartbeat records it reads and
// writes: skipping on one interval halved them; on two (issue 21) the two
// sides together send about one ping per two intervals instead of one per
// interval (the sessions scenario of docs/benchmarks.md). The dead-peer
// bound is unchanged: the long deadline wants one ping unanswered and
// misses intervals of silence, and a side that hears nothing pings within
// two intervals, so with misses >= 3 it still ends within misses + 1
// intervals of silence; with fewer misses a side skips on one interval
// only, as before.
const rttEvery = 4

// measured records an RTT.
func (s *Session) measured(rtt time.Duration) {
	s.rtt.Store(int64(rtt))
	n := s.nrtt.Add(1)
	s.rtts[n%rttsKept].Store(int64(rtt))
}

// fastDeadline is the heartbeat's shorter deadline, and whether it applies
// now (see the constants above).
func (s *Session) fastDeadline() (time.Duration, bool) {
	slow := time.Duration(s.cfg.HeartbeatMisses) * s.cfg.HeartbeatInterval
	if s.NumStreams() == 0 || s.nrtt.Load() < minRTTs {
		return slow, false
	}
	var worst time.Duration
	for i := range s.rtts {
		worst = max(worst, time.Duration(s.rtts[i].Load()))
	}
	d := max(s.cfg.HeartbeatInterval, fastFloor, fastRTTs*worst)
	return d, d < slow
}

// beatSlots is how many slots of the idle beat's grid an interval holds.
//
// An idle session's beat falls on a grid of HeartbeatInterval/beatSlots
// counted from the Unix epoch (the client's half a slot after the
// server's), not an interval after the session began: then the beats of
// thousands of sessions come due together, a few times an interval, and
// the runtime wakes for a burst of them where it woke for each one (and
// the peers' answers come back in bursts too). Measured with 10 000 idle
// sessions on one server (the sessions scenario of docs/benchmarks.md):
// the Go scheduler's wake-ups were about 55% of the idle server's CPU,
// for about 4 000 heartbeat records a second spread over every instant.
// The client's half-slot offset keeps the two sides of a session from
// beating at the same instant, where each would ping before hearing the
// other's ping and the skip rule below would skip less.
const beatSlots = 8

// idleBeatIn is how long from now the next idle beat is: the last slot
// boundary of the grid at or before an interval from now, so between
// HeartbeatInterval - slot and HeartbeatInterval (a beat is never late,
// and an interval that is a multiple of the slot keeps a session on its
// slot beat after beat).
func (s *Session) idleBeatIn() time.Duration {
	iv := s.cfg.HeartbeatInterval
	slot := int64(iv / beatSlots)
	if slot <= 0 {
		return iv
	}
	var off int64
	if s.peer == "server" { // this is the client side
		off = slot / 2
	}
	now := s.clk.Now().UnixNano()
	due := now + int64(iv) - off
	due -= due % slot
	return time.Duration(due + off - now)
}

// The heartbeat runs on a clock timer, not in a goroutine of its own: an
// idle session then holds no goroutine (and no stack) for it, and with
// thousands of sessions the runtime's timer heap does the waiting. beat
// runs in the timer's goroutine; hbRun is held while it runs, so that
// stopHeartbeat can wait for it.

// startHeartbeat sets the first beat, an interval from now.
func (s *Session) startHeartbeat() {
	s.hbRun.Lock()
	defer s.hbRun.Unlock()
	s.hb = s.clk.AfterFunc(s.idleBeatIn(), s.beat)
}

// stopHeartbeat cancels the next beat and waits for one under way.
func (s *Session) stopHeartbeat() {
	s.hbRun.Lock()
	defer s.hbRun.Unlock()
	s.hbStopped = true
	if s.hb != nil {
		s.hb.Stop()
	}
}

// beat pings, and sets the next beat an interval later (on the grid of
// idleBeatIn; fastDeadline/4 while the fast deadline applies); it ends the
// session when a deadline passed.
func (s *Session) beat() {
	s.hbRun.Lock()
	defer s.hbRun.Unlock()
	if s.hbStopped {
		return
	}
	select {
	case <-s.die:
		return
	default:
	}
	n, idle := int(s.missed.Load()), s.conn.idle()
	heardNow := s.heard.Swap(false)
	heard := heardNow || s.heardPrev && s.cfg.HeartbeatMisses >= 3
	s.heardPrev = heardNow
	if n >= 1 && idle >= time.Duration(s.cfg.HeartbeatMisses)*s.cfg.HeartbeatInterval {
		s.fail(fmt.Errorf("%w: nothing from the %s for %v, %d pings unanswered (last RTT %s)",
			ErrHeartbeat, s.peer, idle.Round(time.Millisecond), n, fmtRTT(s.RTT())))
		return
	}
	fast, ok := s.fastDeadline()
	if ok && n > 0 && idle >= fast {
		s.fail(fmt.Errorf("%w: nothing from the %s for %v, with data streams open (%d; last RTT %s)",
			ErrHeartbeat, s.peer, idle.Round(time.Millisecond), s.NumStreams(), fmtRTT(s.RTT())))
		return
	}
	next := s.cfg.HeartbeatInterval
	if ok {
		next = min(next, fast/4)
	} else {
		next = s.idleBeatIn()
	}
	if heard && s.NumStreams() == 0 && s.nrtt.Load() >= minRTTs && s.skipped < rttEvery-1 {
		s.skipped++
		s.hb.Reset(next)
		return
	}
	s.skipped = 0
	s.missed.Add(1)
	seq := s.pingSeq.Load() + 1 // only beat sends pings, one at a time
	s.pingSent[seq%pingsKept].Store(s.clk.Now().UnixNano())
	s.pingSeq.Store(seq)
	// The ping counts as missed until a control frame comes back, so
	// nothing waits for it to be written: on the lane it is queued (no
	// channel or timer to wait on, per beat of thousands of sessions);
	// on the control stream a ping that cannot leave before the next is
	// due is given up (a connection's deadline is on real time).
	if s.lane {
		s.lc.sendLane(typePing, Ping{Seq: seq})
	} else {
		s.writeControl(typePing, Ping{Seq: seq}, time.Now().Add(next))
	}
	s.hb.Reset(next)
}
