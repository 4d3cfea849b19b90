package transport

import "time"

// sampler estimates the delivery rate of one direction of a KCP session
// from the segments it sends and the acknowledgements it gets back, as
// TCP's delivery rate estimation does (draft-cheng-iccrg-delivery-rate-
// estimation): every transmission remembers how much had been delivered
// when it left, and when it is acknowledged, the bytes delivered since
// over the time they took are one rate sample.
//
// It sees KCP only on the wire (kcpwire.go): a data segment's sequence
// number, size and timestamp going out; a peer's cumulative una and
// selective ACKs (which echo the timestamp of the transmission they
// acknowledge) coming in. Times are durations since an arbitrary epoch,
// so that tests drive it with a fake clock. It is not safe for concurrent
// use; rateCtl locks it.
type sampler struct {
	recs []segRecord // by sequence number modulo len(recs), a power of two
	mask uint32
	// most is the most records recs grows to (a power of two): it starts
	// at minRecs and doubles as more segments are in flight at once.
	most int

	started bool
	una     uint32 // oldest sequence number not known delivered
	nxt     uint32 // one past the highest sequence number sent

	delivered     int64         // bytes delivered in all
	deliveredTime time.Duration // when delivered last grew
	firstSent     time.Duration // send time of the latest segment delivered
	// inflight is the bytes sent and not yet delivered, every copy of
	// a segment sent again counted (as TCP's pipe counts
	// retransmissions): a resend takes the bottleneck's queue as much as
	// new data does.
	inflight    int64
	sentBytes   int64 // bytes sent for the first time, in all
	resent      int64 // retransmissions seen, in all
	resentBytes int64 // and their bytes
	// unseen counts the segments whose first transmission was not seen
	// (segUnseen), counted sent at the next.
	unseen int64
	// appLimitedUntil marks segments sent while the sender had nothing
	// to send as app-limited until delivered passes it (as Linux's
	// tp->app_limited); 0: none. A segment is marked when it is set at
	// all, not when it is above delivered: with nothing in flight it
	// equals delivered, and comparing it so left the first write after
	// an idle spell unmarked, so that a tunnel's handshake and heartbeats
	// counted as a full pipe and ended Startup at an estimate of a few
	// hundred kbit/s (on linkem, the session set up first then took 4 s
	// to climb from the pacing floor beside the other, and kept less than
	// it for the whole run).
	appLimitedUntil int64

	ev ackEvent // the incoming datagram being taken in
}

// maxCopies bounds the resent copies of one segment counted in flight:
// a segment resent this often was lost again and again, and its copies
// are gone from the path.
const maxCopies = 3

// segRecord is what the sampler remembers of one segment in flight: the
// delivery state at its first transmission and at its latest.
type segRecord struct {
	first, last txState
	size        int32
	ts0, ts     uint32 // KCP's timestamps of the first and the latest transmission
	state       uint8
	copies      uint8 // transmissions after the first, counted in flight
}

// txState is the delivery state when a transmission left.
type txState struct {
	sent          time.Duration
	delivered     int64
	deliveredTime time.Duration
	firstSent     time.Duration
	appLimited    bool
}

const (
	segFree = iota
	segOut
	segDelivered
	// segUnseen: KCP gave the sequence number to a segment and sent a
	// later one, but this one was not seen leaving. kcp-go hands its
	// datagrams to its sender goroutine through a queue of 2048
	// (sess.go, chPostProcessing) and drops a datagram when that queue is
	// full, taking it for sent: the segment's first transmission that
	// reaches the socket is a resend.
	segUnseen
)

// ackEvent gathers what one incoming datagram acknowledged.
type ackEvent struct {
	newly int64 // bytes newly delivered
	// latest is the most recently sent transmission among those known
	// delivered: an ACK names its transmission by its timestamp; a
	// segment covered by una alone counts by its first transmission
	// (which copy arrived is unknown, and taking a resend that was not
	// needed would make the sample look fast).
	latest txState
	rtt    time.Duration
	any    bool // latest is set
}

// rateSample is what one incoming datagram taught: see rateCtl.onSample.
type rateSample struct {
	// delivered is the bytes delivered during interval, ending now;
	// 0 when the datagram acknowledged nothing new.
	delivered int64
	interval  time.Duration
	// priorDelivered is the sampler's delivered count when the latest
	// acknowledged segment was sent: rounds are counted with it.
	priorDelivered int64
	// totalDelivered is the sampler's delivered count now.
	totalDelivered int64
	newly          int64
	// rtt is the smallest round trip measured by an ACK in the
	// datagram; 0 for none.
	rtt        time.Duration
	appLimited bool
	inflight   int64
	// late: the process was starved of CPU lately (rateCtl.admit), so
	// the sample may show our lateness rather than the path's.
	late bool
}

// minRecs is how many segment records a sampler starts with.
const minRecs = 64

// newSampler keeps records for up to window segments in flight (rounded
// up to a power of two), allocated as they are needed: an idle session
// holds 64 (6 KiB). Allocated whole for the default window, the records
// were 188 KiB of every idle KCP session's heap, the largest single item
// (TestIdleSessionHeap over KCP, 500 sessions, 2026-12-06).
func newSampler(window int) *sampler {
	most := minRecs
	for most < window {
		most <<= 1
	}
	return &sampler{recs: make([]segRecord, minRecs), mask: minRecs - 1, most: most}
}

// grow doubles the records, keeping those of the segments from una on.
func (s *sampler) grow() {
	recs := make([]segRecord, 2*len(s.recs))
	mask := uint32(len(recs) - 1)
	for sn := s.una; before(sn, s.nxt) && sn-s.una <= s.mask; sn++ {
		recs[sn&mask] = s.recs[sn&s.mask]
	}
	s.recs, s.mask = recs, mask
}

// before reports whether sequence number a comes before b (modulo 2^32).
func before(a, b uint32) bool { return int32(a-b) < 0 }

// onSend records a data segment leaving: sn, its size and KCP's
// timestamp. A sequence number seen before is a retransmission.
func (s *sampler) onSend(now time.Duration, sn, ts uint32, size int) {
	if !s.started {
		s.started, s.una, s.nxt = true, sn, sn
	}
	if before(sn, s.una) {
		return // delivered already
	}
	first := !before(sn, s.nxt)
	for sn-s.una > s.mask && len(s.recs) < s.most {
		s.grow()
	}
	if sn-s.una > s.mask {
		// Beyond what the records hold: KCP's own una may run ahead of
		// the peer's, which s.una follows. Not counted in flight, but
		// counted sent: rateCtl.admit takes what was let in and not
		// sent for queued in KCP, and a first transmission left out of
		// sentBytes stayed "queued" for good, so that the gate waited
		// for ACKs with nothing in flight (a session stalled for good on
		// the simulator at 500 Mbit/s, 1 ms).
		if first {
			s.nxt = sn + 1
			s.sentBytes += int64(size)
		}
		return
	}
	r := &s.recs[sn&s.mask]
	if first {
		for ; before(s.nxt, sn); s.nxt++ { // not seen leaving (segUnseen)
			s.recs[s.nxt&s.mask].state = segUnseen
		}
		s.nxt = sn + 1
	} else if r.state == segUnseen {
		// Its first transmission never reached the socket: this one is
		// the first that leaves. Until 2026-12-06 it counted as a resend
		// of nothing and was dropped: never counted sent, so that what
		// rateCtl.admit counts queued in KCP grew by its size for good;
		// on loopback at 1.5 Gbit/s, where kcp-go's queue to the socket
		// overflows, that shut the gate for good with nothing in flight
		// once the cap fell below one write (a 100 µs minimum RTT):
		// docs/benchmarks.md, "A session that waited for good".
		first = true
		s.unseen++
	}
	if first {
		if s.inflight == 0 {
			// Nothing in flight: the delivery clock restarts, so that
			// the idle time is not counted as sending time.
			s.firstSent, s.deliveredTime = now, now
		}
		r.size, r.state, r.copies = int32(size), segOut, 0
		s.inflight += int64(size)
		s.sentBytes += int64(size)
	} else {
		if r.state != segOut {
			return
		}
		s.resent++
		s.resentBytes += int64(r.size)
		if r.copies < maxCopies {
			r.copies++
			s.inflight += int64(r.size)
		}
	}
	r.last = txState{sent: now, delivered: s.delivered, deliveredTime: s.deliveredTime, firstSent: s.firstSent,
		appLimited: s.appLimitedUntil != 0}
	r.ts = ts
	if first {
		r.first, r.ts0 = r.last, ts
	}
}

// markAppLimited says the sender has nothing more to send now: what it
// sends until what is in flight now (and queued) is delivered measures
// the application, not the path.
func (s *sampler) markAppLimited(queued int64) {
	s.appLimitedUntil = max(s.delivered+s.inflight+queued, 1)
}

// onAck takes in a selective ACK of sn, which echoes the timestamp of the
// transmission that arrived.
func (s *sampler) onAck(now time.Duration, sn, ts uint32) {
	if !s.started || before(sn, s.una) || !before(sn, s.nxt) {
		return
	}
	r := &s.recs[sn&s.mask]
	if r.state != segOut {
		return
	}
	var tx *txState
	switch ts {
	case r.ts:
		tx = &r.last
	case r.ts0:
		tx = &r.first // a resend that was not needed
	}
	if tx != nil {
		if rtt := now - tx.sent; rtt > 0 && (s.ev.rtt == 0 || rtt < s.ev.rtt) {
			s.ev.rtt = rtt
		}
	} else {
		tx = &r.first
	}
	s.deliver(now, r, tx)
}

// onUna takes in the peer's cumulative acknowledgement: everything before
// una has arrived.
func (s *sampler) onUna(now time.Duration, una uint32) {
	if !s.started || !before(s.una, una) || before(s.nxt, una) {
		return
	}
	for ; before(s.una, una); s.una++ {
		r := &s.recs[s.una&s.mask]
		if r.state == segOut {
			s.deliver(now, r, &r.first)
		}
		r.state = segFree
	}
}

func (s *sampler) deliver(now time.Duration, r *segRecord, tx *txState) {
	r.state = segDelivered
	s.delivered += int64(r.size)
	s.inflight -= int64(r.size) * (1 + int64(r.copies))
	s.deliveredTime = now
	s.ev.newly += int64(r.size)
	if !s.ev.any || tx.sent > s.ev.latest.sent {
		s.ev.latest, s.ev.any = *tx, true
	}
}

// endEvent closes the incoming datagram's acknowledgements into a rate
// sample.
func (s *sampler) endEvent(now time.Duration) rateSample {
	ev := s.ev
	s.ev = ackEvent{}
	rs := rateSample{rtt: ev.rtt, newly: ev.newly, inflight: s.inflight, totalDelivered: s.delivered}
	if s.appLimitedUntil != 0 && s.delivered > s.appLimitedUntil {
		s.appLimitedUntil = 0
	}
	if !ev.any {
		return rs
	}
	p := ev.latest
	s.firstSent = p.sent
	rs.delivered = s.delivered - p.delivered
	rs.priorDelivered = p.delivered
	rs.appLimited = p.appLimited
	// The longer of the sending and the acknowledging spans: ACKs that
	// arrive bunched (KCP sends them every interval) would otherwise
	// make the rate look higher than the path's.
	rs.interval = max(p.sent-p.firstSent, now-p.deliveredTime)
	return rs
}
