package transport

import (
	"sync"
	"time"
)

// ackSwitch decides, for one KCP session, whether the data it receives is
// acknowledged as each datagram arrives (kcp-go's ACK-no-delay) or in
// kcp-go's batches: at its next flush, once an interval, unless
// ackBatch ACKs are waiting.
//
// Why: the peer times a segment out after srtt + max(interval,
// 4 × rttvar), and takes its RTT sample from the newest ACK of a datagram,
// the one held least. Batched, the oldest ACK of a batch waits up to a
// whole interval (20 ms in fast2), so a segment that arrives just after a
// flush comes back an interval past srtt, at the very edge of its timeout,
// and a few milliseconds of queue on the path then resend it though it
// arrived. Measured on linkem with rate_mbit "auto": in the 20 Mbit/s phase
// of the rate step (0% loss) 48-62% of the resends were segments the
// receiver already had; on 10 Mbit/s at 200 ms with 1% loss resend storms
// of 500-2000 segments (packet capture: 74% of them duplicates) held the
// stream below 8.5 Mbit/s in 9 of 12 windows (docs/benchmarks.md,
// "Spurious resends"). Acknowledging each datagram at once takes the
// batch wait out of the margin; but it sends a datagram back for each one
// in, which cost 1.4× the CPU per byte at 100 Mbit/s and 2.3-3× on
// loopback. So ACKs go at once only below the rate at which a batch of
// ackBatch takes longer than an interval to gather: there every batch
// waits the whole interval, and there an ACK a datagram costs little.
// Above it (about 30 Mbit/s in fast2) batches fill before the interval
// ends and the wait shrinks as the rate grows. Nor on a short path, where
// the timeout's floor (30 ms in fast2) leaves the batch wait its margin
// (RTT + interval at most the floor): there each ACK a datagram only
// costs, the more so for requests and replies, whose reply would carry
// the ACK (on loopback, ACKs at once at every rate raised the echo's p50
// 7% at one connection and 12% at 64). The path's RTT is the smallest
// the session has seen, not its srtt: a process starved of CPU on
// loopback can have an srtt of tens of milliseconds, and ACKs at once
// would only add datagrams to its load.
//
// Its lock is for reads at once, which net.Conn allows (nettest's
// RacyRead); a session has one reader.
type ackSwitch struct {
	below  float64       // bytes a second under which ACKs go at once
	longer time.Duration // and path RTT over which
	mu     sync.Mutex
	minRTT time.Duration // the smallest RTT seen (0: none yet)
	start  time.Duration // the current window's start
	n      int           // bytes read in the window
	atOnce bool
}

// ackBatch is how many ACKs kcp-go gathers before it sends them without
// waiting for its interval: an MTU's worth (kcp.go, Input, "clocking";
// 1350 / 24 is 56).
const ackBatch = 56

// ackWindow is how long the rate is measured over before the switch is
// looked at again.
const ackWindow = 100 * time.Millisecond

// newAckSwitch returns the switch for a session whose segments carry mss
// bytes and which flushes every interval, with a retransmission timeout
// of at least minRTO. A session starts with ACKs at once: it has received
// nothing yet, and knows nothing of its path.
func newAckSwitch(mss int, interval, minRTO, now time.Duration) *ackSwitch {
	return &ackSwitch{below: float64(ackBatch*mss) / interval.Seconds(), longer: minRTO - interval, start: now, atOnce: true}
}

// read counts n bytes the session's reader got at now. It returns whether
// ACKs now go at once, and whether that changed; rtt, called once a
// window, is an RTT of the session's (0 for none yet), of which the
// smallest is kept. Off again only a quarter above the rate it went on
// at, so that a rate near it does not flap.
func (a *ackSwitch) read(n int, now time.Duration, rtt func() time.Duration) (atOnce, changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n += n
	el := now - a.start
	if el < ackWindow {
		return a.atOnce, false
	}
	rate := float64(a.n) / el.Seconds()
	a.start, a.n = now, 0
	if r := rtt(); r > 0 && (a.minRTT == 0 || r < a.minRTT) {
		a.minRTT = r
	}
	want := a.atOnce
	switch {
	case a.atOnce && rate > 1.25*a.below:
		want = false
	case !a.atOnce && rate < a.below:
		want = true
	}
	if want && a.minRTT > 0 && a.minRTT <= a.longer {
		want = false
	}
	changed, a.atOnce = want != a.atOnce, want
	return want, changed
}
