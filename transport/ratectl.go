package transport

import (
	"log/slog"
	"sync"
	"time"
)

// rateCtl is the pacing controller of one KCP session with rate_mbit =
// "auto": it watches the session's datagrams (kcpwire.go feeds it every
// datagram sent and received), estimates the path with sampler and bbr,
// and gates the data entering the session (pacer) by the pacing rate and
// the in-flight cap.
//
// Only new data waits here. KCP sends resends and ACKs as soon as it
// decides to, so they never queue behind new data; they are a small share
// on top of the paced data, and the delivery rate counts what arrives of
// both.
//
// Its methods are safe for concurrent use: KCP's sender and receiver
// goroutines and the session's writer call them.
type rateCtl struct {
	clock func() time.Duration
	log   *slog.Logger // debug lines on mode changes and every logEvery

	mu       sync.Mutex
	s        *sampler
	m        *bbr
	mss      int
	conv     uint32
	next     time.Duration // virtual clock: when the next byte may enter
	admitted int64         // bytes let in, in all
	lastMode bbrMode
	lastLog  time.Duration
	// wakeAt is when the writer that was told to wait should be back
	// (0: none); lateUntil is until when the rate samples are suspect
	// because the process was not scheduled (see admit).
	wakeAt, lateUntil time.Duration
	// progress is when data last left for the first time or was
	// delivered; stuck counts the writes let in past the cap because
	// nothing had for stuckAfter (admit).
	progress time.Duration
	stuck    int64

	acked chan struct{} // a token when something was delivered
}

// stuckAfter is how long the gate may hold a writer back for what is in
// flight and queued while nothing leaves and nothing is delivered. Past
// it the hold-up is not the path's (admit): the gate forgets what it
// thinks KCP still has queued and lets one write in. Its floor is above any
// wait for ACKs (ackPoll, KCP's ACK delay, a loaded machine's lateness);
// a path's round trip raises it (stuckFor).
const stuckAfter = 250 * time.Millisecond

// lateBy is how much later than its timer the writer may come back before
// the process counts as starved: more than a Go timer's usual lateness,
// and what the smallest queue slack (queueSlack) would take for a queue.
const lateBy = 4 * time.Millisecond

// resendDebt is how far resends may push the pacer's clock ahead of now.
const resendDebt = 10 * time.Millisecond

// logEvery is how often a busy session logs its controller state at debug.
const logEvery = 10 * time.Second

// epoch is the origin of the production clock (monotonic).
var epoch = time.Now()

func monoClock() time.Duration { return time.Since(epoch) }

// newRateCtl controls a session of KCP conversation conv whose segments
// carry up to mss bytes and whose send window is window segments; the
// peer holds an ACK for up to ackDelay (its KCP interval).
func newRateCtl(conv uint32, mss, window int, ackDelay time.Duration, clock func() time.Duration, log *slog.Logger) *rateCtl {
	if clock == nil {
		clock = monoClock
	}
	return &rateCtl{
		clock: clock, log: log, progress: clock(),
		s: newSampler(window), m: newBBR(mss, ackDelay), mss: mss, conv: conv,
		acked: make(chan struct{}, 1),
	}
}

// quantum is how many bytes enter at once: about two milliseconds at the
// pacing rate, whole segments, between minQuantum and 64 KiB.
func (c *rateCtl) quantum() int {
	c.mu.Lock()
	rate := c.m.pacingRate
	c.mu.Unlock()
	return quantumFor(rate, c.mss)
}

func quantumFor(rate float64, mss int) int {
	q := int(rate * quantumTime.Seconds())
	q = min(max(q, minQuantum), paceBurst)
	return max(q/mss*mss, mss)
}

// Pacing granularity. A Go timer wakes a sleeping writer a millisecond or
// more late, and on a busy machine tens of milliseconds; the pacer lets
// the writer catch up on up to catchUp of that (a burst), so that late
// wake-ups do not lower the rate, and lets at least minQuantum in at once,
// so that a slow rate does not mean many short sleeps each woken late (on
// a machine busy with other work, pieces of 2 segments held a 9.7 Mbit/s
// rate to 6). A writer that comes back after longer than catchUp was not
// sending: the application limited the rate.
const (
	quantumTime = 2 * time.Millisecond
	minQuantum  = 16 << 10
	catchUp     = 10 * time.Millisecond
)

// admit asks whether n bytes may enter the session now. When they may, it
// counts them and returns 0; otherwise how long to wait, or ackWait when
// they wait for ACKs (the in-flight cap). first says this is the first
// try for these bytes: finding the pacer idle then means the application
// is what limits the rate.
func (c *rateCtl) admit(n int, first bool) (wait time.Duration, ackWait bool) {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wakeAt != 0 {
		// A writer back later than its timer asked: the process was
		// starved of CPU. For a while, what the samples show (RTTs up,
		// delivery down) is our lateness, not the path's.
		if late := now - c.wakeAt; late > lateBy {
			c.lateUntil = now + c.m.lateHold()
			c.m.noteLate(now, late)
		}
		c.wakeAt = 0
	}
	queued := max(c.admitted-c.s.sentBytes, 0) // in KCP's queue, not yet sent
	if busy := c.s.inflight + queued; busy > 0 && busy+int64(n) > c.m.cap {
		if now-c.progress < c.stuckFor() {
			// The pacer polls again by ackPoll at the latest (an ACK
			// wakes it sooner).
			c.wakeAt = now + ackPoll
			return 0, true
		}
		// Nothing sent or delivered for that long, with the gate shut:
		// the counts are off from KCP's. Found on loopback at about
		// 1.5 Gbit/s, where both sides of a session waited for good
		// with 3 KB to 1.2 MB counted queued, nothing in flight and a cap
		// below one write: segments whose first transmission kcp-go
		// dropped before the socket were never counted sent
		// (sampler.onSend, segUnseen; fixed). Kept as a safety net for
		// a drift not known: let this write in; KCP's own window still
		// bounds what it holds.
		c.admitted = c.s.sentBytes
		c.progress = now
		c.stuck++
	}
	if first && c.next < now-catchUp {
		// Nothing waited to be paced: the application, not the path,
		// limits what is sent.
		c.s.markAppLimited(queued)
	}
	rate := c.m.pacingRate
	burst := max(quantumFor(rate, c.mss), int(rate*catchUp.Seconds()))
	if wait := spend(&c.next, now, n, rate, burst); wait > 0 {
		c.wakeAt = now + wait
		return wait, false
	}
	c.admitted += int64(n)
	return 0, false
}

// minRTT is the model's smallest RTT lately (0: none yet).
func (c *rateCtl) minRTT() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.minRTT
}

// stuckFor is stuckAfter, or three of the path's minimum round trips
// where that is longer.
func (c *rateCtl) stuckFor() time.Duration { return max(stuckAfter, 3*c.m.minRTT) }

// waitAck returns a channel that gets a token when data is delivered.
func (c *rateCtl) waitAck() <-chan struct{} { return c.acked }

// sent takes in a datagram going out: its data segments. Resends went
// out at once, ahead of new data; new data pays for them (the pacer's
// clock moves on by their size, up to resendDebt), so that what the
// session sends in all keeps to the pacing rate.
//
// It reports whether the datagram holds only ACKs: the caller sends those
// twice. KCP acknowledges each segment once, in datagrams of up to 56
// ACKs, and has no SACK ranges to repeat them: when such a datagram is
// lost while a segment is missing, the peer takes every segment it
// acknowledged for lost and sends them all again. On the emulated link at
// 5% loss that was half of all resends (warren_kcp_duplicate_segments_total
// at the receiver); sent twice, a datagram of ACKs is lost at 0.25%. They
// are a few per cent of the data's packets, and small but for the largest.
func (c *rateCtl) sent(b []byte) (ackOnly bool) {
	now := c.clock()
	c.mu.Lock()
	resent, sent := c.s.resentBytes, c.s.sentBytes
	acks, other := 0, 0
	for seg := range kcpSegments(b) {
		switch {
		case seg.conv != c.conv:
			other++
		case seg.cmd == kcpCmdPush:
			c.s.onSend(now, seg.sn, seg.ts, int(seg.ln))
			other++
		case seg.cmd == kcpCmdAck:
			acks++
		default:
			other++
		}
	}
	if c.s.sentBytes != sent { // new data left
		c.progress = now
	}
	if r := c.s.resentBytes - resent; r > 0 {
		// At most resendDebt ahead of now: KCP resends on its own
		// schedule, and a storm of them (a queue overflowed) must not
		// stop new data for longer than the storm lasts.
		next := max(c.next, now) + time.Duration(float64(r)/c.m.pacingRate*1e9)
		c.next = max(c.next, min(next, now+resendDebt))
	}
	c.mu.Unlock()
	return acks > 0 && other == 0
}

// received takes in a datagram from the peer: its cumulative una and ACKs.
func (c *rateCtl) received(b []byte) {
	now := c.clock()
	c.mu.Lock()
	var una uint32
	seen := false
	for seg := range kcpSegments(b) {
		if seg.conv != c.conv {
			continue
		}
		if !seen || before(una, seg.una) {
			una, seen = seg.una, true
		}
		if seg.cmd == kcpCmdAck {
			c.s.onAck(now, seg.sn, seg.ts)
		}
	}
	if !seen {
		c.mu.Unlock()
		return
	}
	c.s.onUna(now, una)
	rs := c.s.endEvent(now)
	if rs.newly > 0 {
		c.progress = now
	}
	rs.late = now < c.lateUntil
	c.m.onSample(now, rs)
	var logNow bool
	if c.log != nil && (c.m.mode != c.lastMode || now-c.lastLog >= logEvery) {
		logNow = true
		c.lastMode, c.lastLog = c.m.mode, now
	}
	var st PaceState
	if logNow {
		st = c.stateLocked()
	}
	c.mu.Unlock()
	if rs.newly > 0 {
		select {
		case c.acked <- struct{}{}:
		default:
		}
	}
	if logNow {
		c.log.Debug("kcp pacing", st.attrs()...)
	}
}

// state returns what the controller knows now.
func (c *rateCtl) state() PaceState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateLocked()
}

func (c *rateCtl) stateLocked() PaceState {
	return PaceState{
		Rate:        "auto",
		Mode:        c.m.mode.String(),
		Bandwidth:   c.m.bw * 8,
		MinRTT:      c.m.minRTT,
		RTT:         c.m.lastRoundRTT(),
		PacingRate:  c.m.pacingRate * 8,
		InFlight:    c.s.inflight,
		InFlightCap: c.m.cap,
		Delivered:   c.s.delivered,
		Resent:      c.s.resent,
		QueueCuts:   c.m.queueCuts,
		ProbeUps:    c.m.probeUps,
		Stuck:       c.stuck,
		LocalDrops:  c.s.unseen,
	}
}

// gate is what a pacer asks before letting bytes into a session.
type gate interface {
	quantum() int
	admit(n int, first bool) (wait time.Duration, ackWait bool)
	waitAck() <-chan struct{}
}
