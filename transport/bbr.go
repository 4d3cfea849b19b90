package transport

import (
	"math"
	"math/rand/v2"
	"time"
)

// bbr is the rate model of rate_mbit = "auto", in the spirit of BBR
// (Cardwell et al., "BBR: Congestion-Based Congestion Control", 2016):
// it estimates the path's bottleneck bandwidth and its round-trip
// propagation time from rate samples (delivery.go), and from them sets
// how fast new data may enter the session and how much may be in flight.
// It is pure arithmetic on the samples it is given, with time passed in,
// so that tests run it on a simulated path with a fake clock.
//
// The rules, in one place:
//
//   - Bandwidth is the largest delivery rate of the last bwRounds round
//     trips ("rounds": a round ends when a segment sent after it began is
//     acknowledged). Samples taken while the application had nothing to
//     send count only if they raise it.
//   - The minimum RTT is the smallest round trip of the last minRTTWindow.
//   - Startup: pace at startupGain x bandwidth, in flight growing by what
//     is delivered (doubling per round trip) up to startupCapGain x BDP
//     (bandwidth x min RTT), until three rounds in a row raise the
//     bandwidth by less than 25% or a standing queue shows (below).
//     Drain: pace at drainGain and cap what is in flight at one BDP until
//     it fits and the queue is gone (maxDrainRounds at the most).
//   - ProbeBW: pace at bandwidth x a gain that cycles per round through
//     cycleGains: one round at 1.25 (plus initCapSegs segments per RTT,
//     at most probeAddMax of the bandwidth, the same for every session:
//     see setRateAndCap) to find more, one at 0.75 (less that added
//     part) to drain what that queued, six at 1. Where such a probe
//     would queue more than KCP's retransmission timeout allows for
//     (long paths: newProbeScale), probe and drain are scaled down; a
//     probe after one that found room is twice as large, up to a full
//     one. A cruise starts at a random round of gain 1, so
//     that sessions sharing a path do not probe in step (BBR does the
//     same). When a probe raised
//     the bandwidth by probeGrowth (1.15; a scaled one by its share of
//     that) or more, the path had room for
//     nearly all of it (a rate step up, a competitor gone: on a full path
//     a probe gains only its share of the queue): probe again at once,
//     instead of eight rounds later. When it raised it by less, the path
//     was full, and the estimate keeps of the probe only the equal share
//     it added (clampBw): a probe at 1.25 x a session's own rate let the
//     larger of two sessions grow by more, and their shares drifted
//     apart (on linkem the smaller got 0.48-0.98 of the larger over 7
//     runs, median 0.81; with the clamp 0.60-0.98 over 10, median 0.86).
//   - In flight is capped at cwndGain x BDP (2), or one BDP plus what
//     ACKs that come in bunches need (updateAckAggregation, ackBDP) when
//     that is more, never below initCapSegs
//     (minCapSegs in ProbeRTT); the pacing rate is never below floorRate.
//   - Loss is not a signal: random loss does not mean the path is full
//     (resends count against the pacing budget: ratectl.go). A queue is:
//     when every RTT of the last queueWindow (two minimum RTTs: longer
//     than another session's probe and the drain after it) is above the minimum by
//     queueSlack or more, during Startup or a stretch of gain 1, the path
//     delivers less than the estimate (a rate step down, a competitor
//     arrived, or the estimate was high). The estimate drops to cutFactor
//     of itself, or, when the last two rounds delivered less than deepCut
//     of it, to what they delivered (a quarter of it at the least); then
//     Drain.
//   - After such a cut, until a probe finds room again, the estimate
//     grows by the probe's equal share per round at the most (ceil):
//     outside the probe's two rounds, delivery samples above it are the
//     filter's noise, not room. The filter keeps the largest sample of
//     ten rounds, which raised each session's estimate in proportion to
//     its rate; beside cuts in proportion to it too, nothing drew two
//     sessions' shares together, and they wandered (on linkem the
//     smaller got 0.59-0.98 of the larger over 10 runs, median 0.84;
//     with the ceiling 0.76-0.98, median 0.90).
//   - Only a session that had more to send than the pacer let through
//     acts on a queue: one that sends little cannot be its cause (it may
//     be on the path its ACKs take back, behind the other direction's
//     data).
//   - ProbeRTT: when the minimum RTT has not been seen again for
//     minRTTWindow, cap what is in flight at half a BDP for
//     probeRTTTime and a round, so that a queue that has been there all
//     along drains and the true minimum shows; the minimum is then the
//     smallest RTT seen in ProbeRTT. (Until 2026-12-05 an expired minimum
//     was replaced by the next sample at once, queue included, which also
//     kept ProbeRTT from ever starting: of two sessions on the simulated
//     path, the one that took a queued RTT for its minimum never cut and
//     took 93 of 96 Mbit/s.)
type bbr struct {
	mss int64
	// ackDelay is how long the peer may hold an ACK (its KCP interval).
	ackDelay time.Duration
	// rng picks the round of the cycle a cruise starts at.
	rng *rand.Rand

	mode  bbrMode
	round int64
	// nextRound is the delivered count that ends the current round.
	nextRound  int64
	roundStart bool

	// bwRound holds the largest sample of each of the last bwRounds
	// rounds; bwRound[round%bwRounds] is the current one's.
	bwRound [bwRounds]float64
	// bwSpan holds the largest sample of the last bwSpanTime at least,
	// whatever the number of rounds: on a short path ten rounds are a few
	// milliseconds, and a process starved of CPU for longer (ACKs read
	// late, in bunches) saw every sample of them low; the estimate fell,
	// the in-flight cap with it, and delivery with the cap.
	bwSpan spanMax
	bw     float64 // max of bwRound and bwSpan: the bottleneck bandwidth, bytes/s

	// roundRate and prevRate: what the round that just ended, and the
	// one before, delivered on average (bytes/s; 0: unknown).
	roundStartTime      time.Duration
	roundStartDelivered int64
	roundRate, prevRate float64

	minRTT      time.Duration // 0: no sample yet
	minRTTStamp time.Duration
	// roundMinRTT is the smallest RTT of the current round (0: none);
	// pastMinRTT the smallest of each of the rounds before it, the latest
	// at pastMinRTT[(round-1)%len].
	roundMinRTT time.Duration
	pastMinRTT  [8]time.Duration
	// roundBusy and prevBusy: the current round, and the one before, had
	// samples that were not app-limited.
	roundBusy, prevBusy bool

	// Startup's plateau detection.
	fullBw      float64
	fullBwCount int
	filled      bool

	cycle   int     // index into cycleGains
	cycleBw float64 // the bandwidth estimate when the probe began
	// scale is the share of a full probe the current probe makes
	// (probeScale; 0: none under way), and next the least share the
	// next one makes: twice this one's when it found room.
	scale, next float64

	// lateAt is when the process was last seen starved of CPU (0: never),
	// lateBy the most it was late by since lateHold before that.
	lateAt, lateBy time.Duration
	now            time.Duration // of the latest sample

	// recent holds the RTT samples of the last queueWindow, as a
	// monotonic queue: its first entry is their minimum.
	recent []rttAt
	// queueFrom is when the current stretch began over which a standing
	// queue counts (Startup, a cruise at gain 1, Drain).
	queueFrom time.Duration

	// Ack aggregation: the current epoch of ACKs arriving faster than
	// the bandwidth, and the largest excess of two spans of 5 rounds.
	ackEpochStart time.Duration
	ackEpochAcked int64
	extraAcked    [2]int64
	extraIdx      int
	extraRounds   int

	drainFrom int64 // the round Drain began

	probeRTTDone  time.Duration // 0: cap not reached yet
	probeRTTRound bool          // a round has ended since the cap was reached
	probeMinRTT   time.Duration // the smallest RTT seen in ProbeRTT (0: none)

	pacingRate float64 // bytes/s
	cap        int64   // bytes in flight allowed

	// ceil bounds the samples the filter takes outside probes once a
	// queue has cut the estimate, until a probe finds room (0: none); it
	// rises by probeAdd a round.
	ceil float64

	// counters, for the state shown to users
	queueCuts int64 // times a standing queue cut the estimate
	probeUps  int64 // times a probe found more and Startup resumed
}

// spanMax is the largest value added over the last bwSpanTime at least
// (up to twice that): two buckets of bwSpanTime, the current and the one
// before.
type spanMax struct {
	start    time.Duration // of the current bucket
	cur, old float64
}

func (m *spanMax) roll(now time.Duration) {
	switch d := now - m.start; {
	case d >= 2*bwSpanTime:
		m.start, m.cur, m.old = now, 0, 0
	case d >= bwSpanTime:
		m.start, m.cur, m.old = now, 0, m.cur
	}
}

func (m *spanMax) add(now time.Duration, v float64) {
	m.roll(now)
	m.cur = max(m.cur, v)
}

func (m *spanMax) max(now time.Duration) float64 {
	m.roll(now)
	return max(m.cur, m.old)
}

type rttAt struct {
	at, rtt time.Duration
}

// bbrMode is the model's state.
type bbrMode uint8

const (
	modeStartup bbrMode = iota
	modeDrain
	modeProbeBW
	modeProbeRTT
)

func (m bbrMode) String() string {
	switch m {
	case modeStartup:
		return "startup"
	case modeDrain:
		return "drain"
	case modeProbeBW:
		return "probe_bw"
	case modeProbeRTT:
		return "probe_rtt"
	}
	return "unknown"
}

// Parameters. The gains are BBR's (2/ln 2 doubles the rate per round
// trip); the rest are discussed in docs/benchmarks.md, "What the
// controller does".
const (
	bwRounds     = 10
	bwSpanTime   = 250 * time.Millisecond
	minRTTWindow = 10 * time.Second
	probeRTTTime = 200 * time.Millisecond
	startupGain  = 2.885
	drainGain    = 0.5
	cwndGain     = 2.0
	// startupCapGain bounds what Startup keeps in flight: with a queue of
	// one BDP (linkem's default, and a common buffer size), 2 would
	// overflow it in Startup's last round, and the burst of losses that
	// KCP resends keeps a queue for seconds on a long path.
	startupCapGain = 1.5
	probeRTTGain   = 0.5 // of a BDP, the cap during ProbeRTT
	probeGrowth    = 1.15
	// probeAddMax bounds the equal share a probe adds: at 20 ms,
	// initCapSegs segments per RTT is 8.5 Mbit/s, which on a 20 Mbit/s
	// link overflowed the queue at every probe.
	probeAddMax = 0.1
	// roomScaleMax bounds how much larger than newProbeScale a probe
	// after one that found room may be: its queue grows by twice
	// probeQueue at most, should the path be full by then.
	roomScaleMax = 2
	initCapSegs  = 16
	minCapSegs   = 4
	fullBwGrowth = 1.25
	fullBwRounds = 3
	// queueSpan is the least time a standing queue must last to count.
	queueSpan = 40 * time.Millisecond
	// cutFactor is what a standing queue leaves of the estimate, unless
	// the last rounds delivered less than deepCut of it (the path's rate
	// fell): then it drops to what they delivered.
	cutFactor = 0.85
	deepCut   = 0.6
	// maxDrainRounds bounds Drain once what is in flight fits a BDP.
	maxDrainRounds = 4
	// assumedRTT stands in for the RTT until the first sample, for the
	// initial pacing rate.
	assumedRTT = 100 * time.Millisecond
	// minRate is the lowest pacing rate (bytes/s) before the first RTT
	// sample; after it, floorRate applies.
	minRate = 8 * 1350
)

// cycleGains is ProbeBW's pacing gain per round.
var cycleGains = [...]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

func newBBR(mss int, ackDelay time.Duration) *bbr {
	b := &bbr{mss: int64(mss), ackDelay: ackDelay, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	b.cap = initCapSegs * b.mss
	b.pacingRate = startupGain * float64(b.cap) / assumedRTT.Seconds()
	return b
}

// bdp is bandwidth x min RTT in bytes, 0 before both are known.
func (b *bbr) bdp() float64 {
	if b.minRTT == 0 {
		return 0
	}
	return b.bw * b.minRTT.Seconds()
}

// ackBDP is what is in flight at the bandwidth over a round trip whose
// ACK the peer held for its whole interval (bandwidth x (min RTT + ACK
// delay)). KCP sends its ACKs once per interval unless 56 are waiting, so
// a session that sends less than 56 segments per interval sees every ACK
// that late: on a short path (loopback, 1 ms) a cap of twice the BDP by
// the min RTT alone let 2 x 1 ms of data go per 20 ms, the delivery
// rate fell with it, and the cap with the rate (500 Mbit/s carried 13 on
// the simulator; the KCP suites on loopback stalled echoes for seconds).
//
// A process starved of CPU reads ACKs later still: the wait covers how
// late it was lately too, or the cap holds the rate down to what the cap
// carries over the late round trips (a 1 ms path starved 30 of every 50 ms
// settled at 7.6 of 962 Mbit/s on the simulator).
func (b *bbr) ackBDP() float64 {
	if b.minRTT == 0 {
		return 0
	}
	return b.bw * (b.minRTT + b.ackDelay + b.lateness(b.now)).Seconds()
}

// queueSlack is how far above the minimum RTT the smallest RTT of a round
// may be before a queue counts: a quarter of the minimum (the queue one
// probe at 1.25 builds), and at least 4 ms (KCP sends ACKs in bunches,
// and the sender's own scheduling adds some).
func (b *bbr) queueSlack() time.Duration {
	return max(b.minRTT/4, 4*time.Millisecond)
}

// onSample takes in one rate sample at now.
func (b *bbr) onSample(now time.Duration, rs rateSample) {
	b.now = now
	if rs.rtt > 0 {
		// An expired minimum stays until ProbeRTT has measured the
		// path with its own queue gone (checkProbeRTT): taken from a
		// sample now, it would include the queue this session holds,
		// and a queue it takes for the path's own delay it never cuts.
		if b.minRTT == 0 || rs.rtt <= b.minRTT {
			b.minRTT, b.minRTTStamp = rs.rtt, now
		}
		if b.mode == modeProbeRTT && (b.probeMinRTT == 0 || rs.rtt < b.probeMinRTT) {
			b.probeMinRTT = rs.rtt
		}
		if b.roundMinRTT == 0 || rs.rtt < b.roundMinRTT {
			b.roundMinRTT = rs.rtt
		}
		for len(b.recent) > 0 && b.recent[len(b.recent)-1].rtt >= rs.rtt {
			b.recent = b.recent[:len(b.recent)-1]
		}
		b.recent = append(b.recent, rttAt{now, rs.rtt})
	}
	if rs.newly == 0 {
		b.setRateAndCap(rs)
		return
	}
	b.roundStart = false
	if rs.priorDelivered >= b.nextRound {
		b.nextRound = rs.totalDelivered
		b.prevRate, b.roundRate = b.roundRate, 0
		if d := now - b.roundStartTime; b.roundStartTime > 0 && d > 0 {
			b.roundRate = float64(rs.totalDelivered-b.roundStartDelivered) / d.Seconds()
		}
		b.roundStartTime, b.roundStartDelivered = now, rs.totalDelivered
		b.round++
		b.roundStart = true
		b.pastMinRTT[(b.round)%int64(len(b.pastMinRTT))] = b.roundMinRTT
		b.roundMinRTT = 0
		b.prevBusy, b.roundBusy = b.roundBusy, false
		b.bwRound[b.round%bwRounds] = 0
		if b.ceil > 0 {
			b.ceil += b.probeAdd(b.ceil)
		}
	}
	if !rs.appLimited {
		b.roundBusy = true
	}
	if rs.delivered > 0 && rs.interval > 0 && (b.minRTT == 0 || rs.interval >= b.minRTT*3/4) {
		sample := float64(rs.delivered) / rs.interval.Seconds()
		if b.ceil > 0 && (b.mode == modeDrain || b.mode == modeProbeBW && b.cycle >= 2) {
			sample = min(sample, b.ceil)
		}
		if (!rs.appLimited && !rs.late) || sample >= b.bw {
			i := b.round % bwRounds
			b.bwRound[i] = max(b.bwRound[i], sample)
			b.bwSpan.add(now, sample)
		}
	}
	bw := b.bwSpan.max(now)
	for _, v := range b.bwRound {
		bw = max(bw, v)
	}
	if bw > 0 { // else no sample counted for bwRounds rounds: keep what we had
		b.bw = bw
	}
	b.updateAckAggregation(now, rs.newly)
	if b.roundStart {
		b.endRound(now, rs)
	}
	b.checkQueue(now, rs)
	b.checkDrain(now, rs)
	b.checkProbeRTT(now, rs)
	b.setRateAndCap(rs)
}

// endRound runs the per-round rules, at the start of a new round.
func (b *bbr) endRound(now time.Duration, rs rateSample) {
	switch b.mode {
	case modeStartup:
		if rs.appLimited || !b.prevBusy {
			return
		}
		if b.bw >= b.fullBw*fullBwGrowth {
			b.fullBw, b.fullBwCount = b.bw, 0
			return
		}
		if b.fullBwCount++; b.fullBwCount >= fullBwRounds {
			b.filled = true
			b.enterDrain(now)
		}
	case modeProbeBW:
		b.cycle = (b.cycle + 1) % len(cycleGains)
		if b.cycle == 2 {
			b.queueFrom = now // a cruise begins
		}
		// The samples of the probe round come back during the round
		// after it: judge the probe at the end of that one.
		if b.cycle == 2 && b.cycleBw > 0 && b.bw >= b.cycleBw*(1+(probeGrowth-1)*b.scale) && !rs.appLimited {
			// The path had room: probe again at once (a rate grows by
			// a quarter per two rounds so, without the overshoot of
			// Startup).
			b.probeUps++
			b.cycle = 0
			b.ceil = 0
			b.next = min(1, 2*b.scale)
		} else if b.cycle == 2 && b.cycleBw > 0 {
			b.next = 0
			// The path was full: the probe earns the same share for
			// every session, not a quarter of its own rate.
			b.clampBw(b.cycleBw + b.newProbeScale()*b.probeAdd(b.cycleBw))
			if b.ceil > 0 {
				b.ceil = b.bw
			}
		}
		if b.cycle == 0 {
			b.cycleBw = b.bw
			k := b.newProbeScale()
			b.scale = max(k, min(b.next, roomScaleMax*k))
		}
	case modeProbeRTT:
		if b.probeRTTDone != 0 {
			b.probeRTTRound = true
		}
	}
}

// cutToRecent drops the bandwidth estimate to what the last two rounds
// delivered (the larger samples of the filter are from before the path
// gave less), at most to a quarter of it at once, and drains the queue.
func (b *bbr) cutToRecent(now time.Duration) {
	recent := max(b.roundRate, b.prevRate)
	if recent == 0 {
		return // nothing to go by
	}
	b.queueCuts++
	bw := b.bw * cutFactor
	if recent < deepCut*b.bw {
		bw = max(recent, b.bw/4)
	}
	b.bwRound = [bwRounds]float64{}
	b.bwRound[b.round%bwRounds] = bw
	b.bwSpan = spanMax{}
	b.bw = bw
	b.ceil = bw
	b.enterDrain(now)
}

// clampBw holds the bandwidth estimate, and every sample the filter
// keeps, to at most v.
func (b *bbr) clampBw(v float64) {
	for i := range b.bwRound {
		b.bwRound[i] = min(b.bwRound[i], v)
	}
	b.bwSpan.cur, b.bwSpan.old = min(b.bwSpan.cur, v), min(b.bwSpan.old, v)
	b.bw = min(b.bw, v)
}

// probeAdd is what a probe adds to the pacing rate of bandwidth bw on top
// of its gain: initCapSegs segments per RTT, the same for every session,
// at most probeAddMax of bw.
func (b *bbr) probeAdd(bw float64) float64 {
	if b.minRTT == 0 {
		return 0
	}
	return min(float64(initCapSegs*b.mss)/b.minRTT.Seconds(), probeAddMax*bw)
}

// probeScale is the share of a full probe (gain 1.25 plus probeAdd for a
// round), and of the drain round after it, that the probe under way
// makes (newProbeScale when none is).
func (b *bbr) probeScale() float64 {
	if b.mode == modeProbeBW && b.cycle <= 1 && b.scale > 0 {
		return b.scale
	}
	return b.newProbeScale()
}

// newProbeScale is the share of a full probe a probe starting now makes:
// 1, unless the queue the gain of a full probe (1.25) builds in its round
// would take longer than probeQueue to cross; then less, so that it
// does not. It depends on the min RTT alone, so that sessions sharing a
// path probe alike: counted with probeAdd, which is a larger part of a
// smaller session's rate, the smaller session probed less, and two
// sessions on linkem's 100 Mbit/s / 50 ms link shared it 0.44-0.81 over
// 6 runs (main 0.79-0.89 in 3 of them); without, 0.65-0.99 over 3.
//
// KCP times a segment out after srtt + max(interval, 4 rttvar), with
// srtt of the segments acknowledged when it left: a queue that grows by
// more than that margin within a round trip makes KCP resend what was
// not lost, and the resends queue too. A full probe builds a quarter of
// the min RTT (and the probeAdd part): 12.5-17.5 ms at 50 ms, 50-67 ms
// at 200 ms, where a 10 Mbit/s / 200 ms path at 1% loss carried 5.6-6.9
// of 9.6 Mbit/s on the simulator, thousands of spurious timeouts keeping
// its queue full (now 9.3-9.4: TestRateCtlLongPath).
//
// A probe that found room (the path was not full, so it built no queue)
// makes the next one twice as large, up to a full one and to roomScaleMax
// x this share, so that a rate that stepped up is found about as fast
// as before (on a 50 ms path the next is a full one). Scaled probes
// alone found 1-2% a cycle (1.6 s) on the 200 ms path, where on linkem
// Startup had left the estimate at 8.4 of 9.6 Mbit/s; going straight to
// a full probe after one that found room, a full probe met the
// bottleneck there with 50 ms of queue, and the timeouts and the cut
// that followed left the estimate at 7.8-8.3 (TestRateCtlLongPathRoom).
func (b *bbr) newProbeScale() float64 {
	if b.minRTT == 0 || b.bw == 0 {
		return 1
	}
	growth := (cycleGains[0] - 1) * b.minRTT.Seconds()
	return min(1, b.probeQueue().Seconds()/growth)
}

// probeQueue is the most queue a probe may build: half of KCP's
// interval, the least margin of its retransmission timeout over the RTT,
// less the up to one interval the peer holds an ACK (half of it on
// average, which srtt includes). 10 ms in mode fast2. On the simulated
// 100 -> 20 Mbit/s step, echo p99 from 2 s after the step down (3 x RTT
// allowed: 150 ms) was 91-184 ms over 6 draws with full probes; with
// probes held to 15 ms of queue 100-191, to 10 ms 80-104, and 77-89
// once the drain round also takes probeAdd off (TestRateCtlStepEcho).
func (b *bbr) probeQueue() time.Duration {
	return max(b.ackDelay/2, time.Millisecond)
}

// lastRoundRTT is the smallest RTT of the round that ended last.
func (b *bbr) lastRoundRTT() time.Duration {
	if b.round == 0 {
		return b.roundMinRTT
	}
	return b.pastMinRTT[(b.round-1)%int64(len(b.pastMinRTT))]
}

// windowMin is the smallest RTT of the last queueWindow (0: none).
func (b *bbr) windowMin(now time.Duration) time.Duration {
	w := b.queueWindow()
	i := 0
	for i < len(b.recent) && b.recent[i].at < now-w {
		i++
	}
	if i > 0 {
		b.recent = append(b.recent[:0], b.recent[i:]...)
	}
	if len(b.recent) == 0 {
		return 0
	}
	return b.recent[0].rtt
}

// lateHold is how long after the process was starved its samples are
// suspect: those of data it sent late come back a round trip later, and a
// queue must then be seen for a whole queueWindow after it.
func (b *bbr) lateHold() time.Duration { return b.minRTT + b.queueWindow() }

// noteLate records that the process was late by late at now.
func (b *bbr) noteLate(now, late time.Duration) {
	if now-b.lateAt >= b.lateHold() {
		b.lateBy = 0
	}
	b.lateAt, b.lateBy = now, max(b.lateBy, late)
}

// lateness is how late the process was lately: what its RTT samples may
// carry on top of the path's and of a queue (0 after lateHold).
func (b *bbr) lateness(now time.Duration) time.Duration {
	if b.lateAt == 0 || now-b.lateAt >= b.lateHold() {
		return 0
	}
	return b.lateBy
}

// queueWindow is how long every RTT must stay above the minimum by
// queueSlack for a queue to count: two minimum RTTs (a queue another
// session's probe built lasts about that, its probe round and the drain
// after it, and must not cut this one's estimate: with one RTT, two
// sessions on the simulated 100 Mbit/s path shared it 0.83 on average,
// with two 0.86, the worst draw 0.63 against 0.69), and at least queueSpan
// (KCP acknowledges every interval, 20 ms in mode fast2, so a short
// path's RTT samples carry that wait; over queueSpan some ACK went out
// at once).
func (b *bbr) queueWindow() time.Duration { return max(2*b.minRTT, queueSpan) }

// standingQueue reports whether the RTT stayed above the minimum by
// queueSlack or more for the whole queueWindow, within the current
// stretch (queueFrom). While the process is starved of CPU, the slack
// grows by how late it was: a late process reads ACKs late, which is no
// queue; but a queue deeper than that still counts (ignoring every queue
// while starved, sessions never cut: two of them on a starved machine
// kept 6 and 48 Mbit/s of a 100 Mbit/s link).
func (b *bbr) standingQueue(now time.Duration) bool {
	if b.minRTT == 0 || now-b.queueFrom < b.queueWindow() {
		return false
	}
	m := b.windowMin(now)
	return m > 0 && m > b.minRTT+b.queueSlack()+b.lateness(now)
}

// checkQueue acts on a standing queue: Startup ends (the pipe is full),
// and in a cruise of ProbeBW the estimate is cut (cutToRecent). Only when
// the session had more to send than the pacer let through: a session that
// sends little cannot be the cause of a queue (which may be on the path
// its ACKs take back, behind the other direction's data).
func (b *bbr) checkQueue(now time.Duration, rs rateSample) {
	if rs.appLimited || !(b.roundBusy || b.prevBusy) {
		return
	}
	switch {
	case b.mode == modeStartup && b.fullBwCount > 0 && b.lateness(now) == 0 && b.standingQueue(now):
		// Only once a round did not raise the estimate by a quarter: a
		// busy host delays the first packets too, and Startup must not
		// end before it has found more than the handshake's trickle.
		// Nor while the process is starved: a late process's RTTs are
		// up by more than it measured late, and once out of Startup,
		// delivery samples stretched by the starved time never pass the
		// estimate (a 1 ms path starved 30 of every 50 ms left Startup
		// at 12 Mbit/s and stayed there).
		b.filled = true
		b.enterDrain(now)
	case b.mode == modeProbeBW && cycleGains[b.cycle] == 1 && b.standingQueue(now):
		b.cutToRecent(now)
	}
}

func (b *bbr) enterStartup(now time.Duration) {
	b.mode = modeStartup
	b.fullBw, b.fullBwCount, b.filled = 0, 0, false
	b.queueFrom = now
	b.ceil = 0
}

func (b *bbr) enterDrain(now time.Duration) {
	b.mode = modeDrain
	b.drainFrom = b.round
	b.queueFrom = now
}

// checkDrain leaves Drain once what is in flight fits one BDP.
func (b *bbr) checkDrain(now time.Duration, rs rateSample) {
	if b.mode != modeDrain || float64(rs.inflight) > b.bdp() {
		return
	}
	// What KCP resends is not in flight as counted here but queues all
	// the same: drain until the RTT shows the queue gone, for up to
	// maxDrainRounds (a queue that is not ours does not go away).
	if b.standingQueue(now) && b.round-b.drainFrom < maxDrainRounds {
		return
	}
	b.enterCruise(now)
}

// enterCruise goes to ProbeBW at a round of gain 1 (after the 0.75 one).
func (b *bbr) enterCruise(now time.Duration) {
	b.mode = modeProbeBW
	b.cycle, b.cycleBw, b.scale, b.next = 2+b.rng.IntN(len(cycleGains)-2), 0, 0, 0
	b.queueFrom = now
}

// checkProbeRTT enters and leaves ProbeRTT.
func (b *bbr) checkProbeRTT(now time.Duration, rs rateSample) {
	if b.mode != modeProbeRTT {
		if b.minRTT > 0 && now-b.minRTTStamp > minRTTWindow && b.mode != modeStartup {
			b.mode = modeProbeRTT
			b.probeRTTDone, b.probeRTTRound, b.probeMinRTT = 0, false, 0
		}
		return
	}
	if b.probeRTTDone == 0 {
		if float64(rs.inflight) <= b.probeRTTCap() {
			b.probeRTTDone = now + probeRTTTime
			b.nextRound = rs.totalDelivered // a full round from here
		}
		return
	}
	if b.probeRTTRound && now >= b.probeRTTDone {
		// The smallest RTT with the cap held is the path's now (a
		// route may have changed it either way).
		if b.probeMinRTT > 0 {
			b.minRTT = b.probeMinRTT
		}
		b.minRTTStamp = now
		if b.filled {
			b.enterCruise(now)
		} else {
			b.enterStartup(now)
		}
	}
}

func (b *bbr) probeRTTCap() float64 {
	return max(probeRTTGain*b.bdp(), float64(minCapSegs*b.mss))
}

// floorRate is the lowest pacing rate: initCapSegs segments per minimum
// RTT at the startup gain (9.8 Mbit/s at 50 ms), what a session may
// always send. A session that sent little (the reverse direction of a
// transfer: window updates, replies) has a small estimate, and pacing its
// few bytes any slower would hold up the other direction.
//
// At 20 ms it is 24.5 Mbit/s, above a 20 Mbit/s link's rate: sessions
// there are held by the in-flight cap, not paced, and two of them on the
// simulated path share it 30 / 70 to 53 / 47. A floor without the gain
// (3.4 Mbit/s at 50 ms) made them fair on the simulator, but on linkem
// with the machine starved (80-88% of it other users' work) one stream
// on the 20 Mbit/s link then carried 0.47-0.85 of main's and a session
// beside another fell to the floor: docs/benchmarks.md, "Sharing".
func (b *bbr) floorRate() float64 {
	if b.minRTT == 0 {
		return minRate
	}
	return startupGain * float64(initCapSegs*b.mss) / b.minRTT.Seconds()
}

// gain is the pacing gain of the current mode.
func (b *bbr) gain() float64 {
	switch b.mode {
	case modeStartup:
		return startupGain
	case modeDrain:
		return drainGain
	case modeProbeBW:
		return 1 + (cycleGains[b.cycle]-1)*b.probeScale()
	}
	return 1
}

// setRateAndCap sets the pacing rate and the in-flight cap.
func (b *bbr) setRateAndCap(rs rateSample) {
	rate := b.gain() * b.bw
	if b.mode == modeProbeBW && b.cycle == 0 && b.minRTT > 0 {
		// A probe also adds initCapSegs segments per RTT, the same for
		// every session: of two sessions on one path, the smaller gains
		// the larger share by probing, and they converge (the cuts of a
		// standing queue take the same share of both).
		rate += b.probeScale() * b.probeAdd(b.bw)
	}
	if b.mode == modeProbeBW && b.cycle == 1 && b.minRTT > 0 {
		// and the drain round after it takes that off again, or what
		// it queued stays.
		rate -= b.probeScale() * b.probeAdd(b.bw)
	}
	if b.mode == modeStartup && !b.filled {
		// Startup never slows down: the first samples come from the
		// handshake and say little about the path.
		if b.minRTT > 0 {
			rate = max(rate, startupGain*float64(initCapSegs*b.mss)/b.minRTT.Seconds())
		}
		rate = max(rate, b.pacingRate)
	}
	b.pacingRate = math.Max(rate, b.floorRate())

	bdp := b.bdp()
	extra := float64(max(b.extraAcked[0], b.extraAcked[1]))
	var c float64
	switch b.mode {
	case modeStartup:
		// Grow by what was delivered (doubling per round, as slow start
		// does) up to the target.
		c = float64(b.cap)
		if target := startupCapGain*bdp + extra; c < target || bdp == 0 {
			c += float64(rs.newly)
		}
		c = max(c, initCapSegs*float64(b.mss))
	case modeDrain:
		c = bdp + max(extra, b.ackBDP()-bdp)
	case modeProbeRTT:
		c = b.probeRTTCap()
	default:
		// The ACKs' wait is covered within the two BDPs, not on top of
		// them: on a 20 Mbit/s, 20 ms path with a one-BDP queue, KCP's
		// 20 ms ACK interval is another BDP, and a cap of 2 BDP plus it
		// (3.4 BDP with the min RTT the ACK wait inflates) kept the queue
		// full: 866 tail drops in 13 s beside 222 random losses at 1%,
		// 17.8 of 19.25 Mbit/s on the simulator; now 185 drops, 18.5.
		// On a long path two BDPs hold the wait (unchanged at 50 ms); on
		// a short one the wait is the cap, as before.
		c = max(cwndGain*bdp, bdp+max(extra, b.ackBDP()-bdp))
	}
	floor := int64(initCapSegs) * b.mss
	if b.mode == modeProbeRTT {
		floor = minCapSegs * b.mss
	}
	b.cap = max(int64(c), floor)
}

// updateAckAggregation estimates how much more than bandwidth x time
// arrives acknowledged in a burst (BBR's extra_acked): KCP sends its ACKs
// once per interval (20 ms in mode fast2) unless 56 are waiting, so on a
// slow or short path the data in flight must cover the RTT and that wait.
// The estimate is the largest excess of the last 10 rounds, at most 100 ms
// of data.
func (b *bbr) updateAckAggregation(now time.Duration, newly int64) {
	if b.roundStart {
		if b.extraRounds++; b.extraRounds >= bwRounds/2 {
			b.extraRounds = 0
			b.extraIdx ^= 1
			b.extraAcked[b.extraIdx] = 0
		}
	}
	expected := int64(b.bw * (now - b.ackEpochStart).Seconds())
	if b.ackEpochStart == 0 || b.ackEpochAcked <= expected {
		b.ackEpochStart, b.ackEpochAcked, expected = now, 0, 0
	}
	b.ackEpochAcked += newly
	extra := min(b.ackEpochAcked-expected, int64(b.bw*0.1))
	b.extraAcked[b.extraIdx] = max(b.extraAcked[b.extraIdx], extra)
}
