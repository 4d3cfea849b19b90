package transport

import (
	"container/heap"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"time"
)

// pathSim is a simulated path for the rate controller's tests: a fake
// clock, senders that behave as kcp-go does (segments, fast resend after
// two later ACKs, a retransmission timeout), a bottleneck with a rate and
// a tail-drop queue shared by all senders and by optional cross traffic,
// random or burst loss after the queue (lost packets used the link, as in
// linkem),
// a one-way delay each way, and receivers that acknowledge as kcp-go's
// do: a datagram of ACKs every interval, or at once when 56 are pending,
// each ACK datagram carrying the cumulative una.
//
// Each sender's rateCtl sees the datagrams as KCP bytes, through sent and
// received, exactly as kcpwire.go shows them in production.
type pathSim struct {
	now   time.Duration
	ev    eventHeap
	seq   int64
	rng   *rand.Rand
	seed  uint64 // of the flows' controllers
	flows []*simFlow

	// Bottleneck (forward direction).
	rate     float64 // wire bytes a second
	queueCap int     // bytes
	queued   int     // bytes waiting
	busy     time.Duration
	loss     float64
	burst    float64 // mean burst length of Gilbert-Elliott loss; 0 random
	bad      bool
	delay    time.Duration // one way
	// Cross traffic: unresponsive packets of crossSize at crossRate
	// bytes a second into the same queue while crossRate > 0.
	crossRate float64

	// CPU starvation of the sending process: while starved, what it
	// would do (take in ACKs, write, its timers) waits until it runs
	// again. The process gets the first period-starved of every period.
	period, starved time.Duration

	// ACKs that would reach the sender within [ackStallFrom,
	// ackStallTo) arrive at ackStallTo instead, in order: the peer or
	// the path late for a while (a process not scheduled, an emulator
	// behind), with no queue at the bottleneck (ackStall).
	ackStallFrom, ackStallTo time.Duration

	// kcpRTT: the senders take their RTT (srtt, rttvar, and so the
	// retransmission timeout) as kcp-go does: one sample a datagram of
	// ACKs, from the timestamp its last ACK echoes, whichever
	// transmission that is, a sample below srtt - rttvar weighing 8 x
	// less in rttvar (kcp.go, Input and update_ack). Otherwise only an
	// ACK that names a segment's latest transmission gives a sample.
	// The tests written before 2026-12-06 were calibrated without it;
	// with it a queue raises srtt as it grows (the ACKs of segments
	// resent by timeout echo the first transmission's timestamp), and
	// far fewer timeouts are spurious: docs/benchmarks.md, "Two
	// sessions, and what the simulator got wrong" (pacing-fair).
	kcpRTT bool

	// localDrop is the chance that a datagram the sender's KCP sends
	// never reaches the socket (kcp-go drops it when its queue to the
	// socket is full, and takes it for sent): the controller does not
	// see it, and KCP resends it by its timeouts.
	localDrop float64

	drops, losses, localDrops int
}

const (
	simMTU      = 1350
	simMSS      = simMTU - kcpHeaderLen
	simIPUDP    = 28 // IPv4 + UDP headers on the wire
	simAckEvery = 20 * time.Millisecond
	simAckBatch = simMTU / kcpHeaderLen
	simMinRTO   = 30 * time.Millisecond
)

type simEvent struct {
	at  time.Duration
	seq int64
	f   func()
}

type eventHeap []simEvent

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func newPathSim(rateMbit float64, rtt time.Duration, queueBDPs float64, loss float64) *pathSim {
	p := &pathSim{rng: rand.New(rand.NewPCG(1, 2)), seed: 1, loss: loss, delay: rtt / 2}
	p.setRate(rateMbit)
	p.queueCap = max(int(queueBDPs*p.rate*rtt.Seconds()), 32*(simMTU+simIPUDP))
	return p
}

// reseed makes the loss and the controllers draw from seed.
func (p *pathSim) reseed(seed uint64) {
	p.rng, p.seed = rand.New(rand.NewPCG(seed, 2)), seed
}

func (p *pathSim) setRate(mbit float64) { p.rate = mbit * 1e6 / 8 }

// payloadRate is what the bottleneck carries of segment data, bytes/s.
func (p *pathSim) payloadRate() float64 {
	return p.rate * simMSS / (simMTU + simIPUDP)
}

func (p *pathSim) at(t time.Duration, f func()) {
	p.seq++
	heap.Push(&p.ev, simEvent{at: t, seq: p.seq, f: f})
}

// run advances the clock to end.
func (p *pathSim) run(end time.Duration) {
	for p.ev.Len() > 0 && p.ev[0].at <= end {
		e := heap.Pop(&p.ev).(simEvent)
		p.now = e.at
		e.f()
	}
	p.now = end
}

// atProc runs f at t in the sending process: later, if it is starved
// then.
func (p *pathSim) atProc(t time.Duration, f func()) {
	p.at(t, func() {
		if p.period == 0 {
			f()
			return
		}
		if ph := p.now % p.period; ph >= p.period-p.starved {
			p.at(p.now+p.period-ph, f)
			return
		}
		f()
	})
}

// enqueue puts a datagram of size wire bytes into the bottleneck; deliver
// runs when it arrives at the far end (unless dropped or lost).
func (p *pathSim) enqueue(size int, deliver func()) {
	if p.queued+size > p.queueCap {
		p.drops++
		return
	}
	p.queued += size
	start := max(p.now, p.busy)
	p.busy = start + time.Duration(float64(size)/p.rate*1e9)
	p.at(p.busy, func() {
		p.queued -= size
		if p.lost() {
			p.losses++
			return
		}
		p.at(p.now+p.delay, deliver)
	})
}

// ackStall makes the ACKs that would reach the senders within [from,
// to) arrive at to. Set it before from - the one-way delay: ACKs on
// their way are not held.
func (p *pathSim) ackStall(from, to time.Duration) {
	p.ackStallFrom, p.ackStallTo = from, to
}

// startCross starts cross traffic at rate Mbit/s (0 stops it).
func (p *pathSim) startCross(mbit float64) {
	was := p.crossRate > 0
	p.crossRate = mbit * 1e6 / 8
	if was || p.crossRate == 0 {
		return
	}
	var tick func()
	tick = func() {
		if p.crossRate == 0 {
			return
		}
		p.enqueue(simMTU+simIPUDP, func() {})
		p.at(p.now+time.Duration(float64(simMTU+simIPUDP)/p.crossRate*1e9), tick)
	}
	tick()
}

// simFlow is one KCP session's sending side and its peer's receiving side.
type simFlow struct {
	p   *pathSim
	ctl *rateCtl
	// app is how many bytes the application has to send; <0: unlimited.
	app int64

	sndNxt uint32
	snd    map[uint32]*simSeg // sent, not yet acknowledged
	order  []uint32           // the keys of snd (and some gone), in order
	una    uint32
	srtt   time.Duration
	rttvar time.Duration
	// tried: the current quantum has asked the gate before; parked: it
	// waits for an ACK.
	tried, parked bool

	// receiver
	rcvNxt   uint32
	rcvd     map[uint32]int // out of order: sizes
	acks     []simAck
	ackTimer bool

	delivered int64 // bytes the receiver got in order
	rtts      []time.Duration
	// sentAt and inOrderAt are when each segment (by sequence number)
	// left first and when the receiver had it and all before it.
	sentAt, inOrderAt []time.Duration
	// rtoResends and fastResends count the sender's retransmissions by
	// cause.
	rtoResends, fastResends int
	buf                     []byte
}

type simSeg struct {
	sn, ts   uint32
	size     int
	fastack  int
	resendAt time.Duration
	rto      time.Duration
}

type simAck struct{ sn, ts uint32 }

func (p *pathSim) addFlow(app int64) *simFlow {
	f := &simFlow{p: p, app: app, snd: map[uint32]*simSeg{}, rcvd: map[uint32]int{}, buf: make([]byte, simMTU)}
	f.ctl = newRateCtl(7, simMSS, 4096, simAckEvery, func() time.Duration { return p.now }, nil)
	// The controller's own randomness, from the path's seed: a run is
	// deterministic, and each flow draws differently.
	f.ctl.m.rng = rand.New(rand.NewPCG(p.seed, uint64(len(p.flows))))
	p.flows = append(p.flows, f)
	p.atProc(p.now, f.write)
	p.atProc(p.now+10*time.Millisecond, f.tick)
	return f
}

func (f *simFlow) ms() uint32 { return uint32(f.p.now / time.Millisecond) }

// write is the application's writer: it offers a quantum to the gate
// and sends what enters, as kcp-go's Write does (segments at once).
func (f *simFlow) write() {
	f.parked = false
	if f.app == 0 {
		return
	}
	q := f.ctl.quantum()
	if f.app > 0 {
		q = int(min(int64(q), f.app))
	}
	wait, ackWait := f.ctl.admit(q, !f.tried)
	f.tried = true
	if ackWait {
		// An ACK wakes the writer, or the pacer's poll (pace.go).
		f.parked = true
		f.p.atProc(f.p.now+ackPoll, f.resume)
		return
	}
	if wait > 0 {
		f.p.atProc(f.p.now+wait, f.write)
		return
	}
	f.tried = false
	if f.app > 0 {
		f.app -= int64(q)
	}
	for q > 0 {
		n := min(q, simMSS)
		q -= n
		s := &simSeg{sn: f.sndNxt, size: n}
		f.sndNxt++
		f.sentAt = append(f.sentAt, f.p.now)
		f.snd[s.sn] = s
		f.order = append(f.order, s.sn)
		f.transmit(s)
	}
	f.p.atProc(f.p.now, f.write)
}

// resume lets a writer parked on ACKs try again.
func (f *simFlow) resume() {
	if f.parked {
		f.parked = false
		f.p.atProc(f.p.now, f.write)
	}
}

// more gives the application n more bytes to send.
func (f *simFlow) more(n int64) {
	idle := f.app == 0
	f.app += n
	if idle {
		f.p.atProc(f.p.now, f.write)
	}
}

// rto is kcp-go's: srtt + max(interval, 4 rttvar), at least the minimum.
func (f *simFlow) rto() time.Duration {
	if f.srtt == 0 {
		return 200 * time.Millisecond
	}
	return max(f.srtt+max(simAckEvery, 4*f.rttvar), simMinRTO)
}

func (f *simFlow) transmit(s *simSeg) {
	s.ts = f.ms()
	s.fastack = 0
	s.rto = f.rto()
	s.resendAt = f.p.now + s.rto
	b := f.buf[:kcpHeaderLen+s.size]
	putSeg(b, 7, kcpCmdPush, s.ts, s.sn, f.rcvNxt, uint32(s.size))
	if f.p.localDrop > 0 && f.p.rng.Float64() < f.p.localDrop {
		f.p.localDrops++
		return
	}
	f.ctl.sent(b)
	sn, ts, size := s.sn, s.ts, s.size
	f.p.enqueue(size+kcpHeaderLen+simIPUDP, func() { f.arrive(sn, ts, size) })
}

func putSeg(b []byte, conv uint32, cmd byte, ts, sn, una, ln uint32) {
	binary.LittleEndian.PutUint32(b, conv)
	b[4] = cmd
	b[5] = 0
	binary.LittleEndian.PutUint16(b[6:], 2048)
	binary.LittleEndian.PutUint32(b[8:], ts)
	binary.LittleEndian.PutUint32(b[12:], sn)
	binary.LittleEndian.PutUint32(b[16:], una)
	binary.LittleEndian.PutUint32(b[20:], ln)
}

// inOrder returns the segments sent and not acknowledged, by sequence
// number (the simulation is deterministic).
func (f *simFlow) inOrder() []*simSeg {
	out := make([]*simSeg, 0, len(f.snd))
	keep := f.order[:0]
	for _, sn := range f.order {
		if s, ok := f.snd[sn]; ok {
			out = append(out, s)
			keep = append(keep, sn)
		}
	}
	f.order = keep
	return out
}

// tick is KCP's interval timer on both ends: the receiver's ACK flush
// and the sender's retransmission timeouts.
func (f *simFlow) tick() {
	f.flushAcks()
	for _, s := range f.inOrder() {
		if f.p.now >= s.resendAt {
			f.rtoResends++
			f.transmit(s)
			s.rto *= 2
			s.resendAt = f.p.now + s.rto
		}
	}
	f.resume()
	f.p.atProc(f.p.now+simAckEvery, f.tick)
}

// arrive is a data segment reaching the receiver.
func (f *simFlow) arrive(sn, ts uint32, size int) {
	f.acks = append(f.acks, simAck{sn, ts})
	if _, dup := f.rcvd[sn]; !before(sn, f.rcvNxt) && !dup {
		f.rcvd[sn] = size
		for {
			n, ok := f.rcvd[f.rcvNxt]
			if !ok {
				break
			}
			delete(f.rcvd, f.rcvNxt)
			f.rcvNxt++
			f.inOrderAt = append(f.inOrderAt, f.p.now)
			f.delivered += int64(n)
		}
	}
	if len(f.acks) >= simAckBatch {
		f.flushAcks()
	}
}

// flushAcks sends the pending ACKs, as kcp-go does: those below rcv_nxt
// are left out (una covers them), except the last.
func (f *simFlow) flushAcks() {
	if len(f.acks) == 0 {
		return
	}
	var b []byte
	for i, a := range f.acks {
		if !before(a.sn, f.rcvNxt) || i == len(f.acks)-1 {
			seg := make([]byte, kcpHeaderLen)
			putSeg(seg, 7, kcpCmdAck, a.ts, a.sn, f.rcvNxt, 0)
			b = append(b, seg...)
		}
	}
	f.acks = f.acks[:0]
	// ACKs go back uncongested, after the one-way delay.
	at := f.p.now + f.p.delay
	if at >= f.p.ackStallFrom && at < f.p.ackStallTo {
		at = f.p.ackStallTo
	}
	f.p.atProc(at, func() { f.ackArrive(b) })
}

// ackArrive is an ACK datagram reaching the sender.
func (f *simFlow) ackArrive(b []byte) {
	f.ctl.received(b)
	var una uint32
	var maxAcked uint32
	first := true
	var latest uint32
	anyAck := false
	for seg := range kcpSegments(b) {
		una = seg.una
		latest, anyAck = seg.ts, true
		if s, ok := f.snd[seg.sn]; ok {
			if s.ts == seg.ts {
				rtt := f.p.now - time.Duration(seg.ts)*time.Millisecond
				f.rtts = append(f.rtts, rtt)
				if !f.p.kcpRTT {
					f.rttSample(rtt)
				}
			}
			delete(f.snd, seg.sn)
		}
		if first || before(maxAcked, seg.sn) {
			maxAcked, first = seg.sn, false
		}
	}
	if anyAck && f.p.kcpRTT {
		f.rttSample(f.p.now - time.Duration(latest)*time.Millisecond)
	}
	for _, s := range f.inOrder() {
		sn := s.sn
		if before(sn, una) {
			delete(f.snd, sn)
			continue
		}
		if before(sn, maxAcked) {
			s.fastack++
			if s.fastack == 2 {
				f.fastResends++
				f.transmit(s)
				s.fastack = 3 // once, until its timeout
			}
		}
	}
	f.una = una
	f.resume()
}

// echoes returns, for a request sent every 100 ms over [from, to), how
// long its answer took: the request's way (uncongested, the one-way
// delay), then the answer's data behind what the flow sends, up to when
// the receiver has it in order. Segments that were not delivered by to
// are left out.
func (p *pathSim) echoes(f *simFlow, from, to time.Duration) []time.Duration {
	p.run(to)
	var out []time.Duration
	for t := from; t < to; t += 100 * time.Millisecond {
		sn, _ := slices.BinarySearch(f.sentAt, t+p.delay)
		if sn < len(f.inOrderAt) {
			out = append(out, f.inOrderAt[sn]-t)
		}
	}
	return out
}

// goodput is the flow's in-order delivery rate over [from, to], measured
// by running the simulation: bits a second.
func (p *pathSim) goodput(f *simFlow, from, to time.Duration) float64 {
	p.run(from)
	d0 := f.delivered
	p.run(to)
	return float64(f.delivered-d0) * 8 / (to - from).Seconds()
}

// lost decides a datagram's loss: random, or with burst > 0 Gilbert's
// model with mean loss p.loss and mean burst p.burst (as linkem's).
func (p *pathSim) lost() bool {
	if p.burst <= 0 {
		return p.rng.Float64() < p.loss
	}
	r := 1 / p.burst
	if p.bad {
		if p.rng.Float64() < r {
			p.bad = false
		}
	} else if p.rng.Float64() < p.loss*r/(1-p.loss) {
		p.bad = true
	}
	return p.bad
}

// rttSample updates srtt and rttvar as kcp-go's update_ack does (its
// smaller weight for a low sample only with kcpRTT).
func (f *simFlow) rttSample(rtt time.Duration) {
	if f.srtt == 0 {
		f.srtt, f.rttvar = rtt, rtt/2
		return
	}
	d := rtt - f.srtt
	f.srtt += d / 8
	if f.p.kcpRTT && rtt < f.srtt-f.rttvar {
		f.rttvar += (max(d, -d) - f.rttvar) / 32
	} else {
		f.rttvar += (max(d, -d) - f.rttvar) / 4
	}
}
