package transport

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// paceBurst is the most bytes a paced KCP session takes in at once: a few
// TLS records.
const paceBurst = 64 << 10

// pacer lets a KCP session's outgoing data in as its gate allows: at a
// fixed rate (rate_mbit = N), or as the session's rate controller decides
// (rate_mbit = "auto", ratectl.go).
//
// kcp-go's own limiter (SetRateLimit) sits after KCP, in one queue with
// everything KCP sends: a resend waits there behind up to a window of new
// data, and while it waits the window stalls on the hole it repairs. So
// the data is paced where it enters the session instead, before KCP, and
// resends, which KCP sends as soon as it detects a loss, go out at once:
// they and the ACKs are a small share on top of the paced data.
type pacer struct {
	g        gate
	deadline *atomic.Int64   // the session's write deadline, Unix nanoseconds, 0 for none
	ctx      context.Context // cancelled by close: a waiting Write returns
	cancel   context.CancelFunc

	mu      sync.Mutex
	newDead chan struct{} // closed, and replaced, when the deadline changes
}

// newPacer paces through g, and gives up a wait when the write deadline
// in deadline passes.
func newPacer(g gate, deadline *atomic.Int64) *pacer {
	ctx, cancel := context.WithCancel(context.Background())
	return &pacer{g: g, deadline: deadline, ctx: ctx, cancel: cancel, newDead: make(chan struct{})}
}

// write writes b through w in pieces of at most the gate's quantum, each
// when the gate lets it in. It fails with net.ErrClosed when the session
// closes, and with os.ErrDeadlineExceeded when the write deadline passes
// while it waits.
func (p *pacer) write(w func([]byte) (int, error), b []byte) (int, error) {
	done := 0
	for len(b) > 0 {
		n := min(len(b), p.g.quantum())
		if err := p.wait(n); err != nil {
			return done, err
		}
		m, err := w(b[:n])
		done += m
		if err != nil {
			return done, err
		}
		b = b[n:]
	}
	return done, nil
}

// deadlineSet wakes the writes that wait, to look at a new deadline.
func (p *pacer) deadlineSet() {
	p.mu.Lock()
	close(p.newDead)
	p.newDead = make(chan struct{})
	p.mu.Unlock()
}

// wait waits until the gate lets n bytes in, the session closes or the
// write deadline passes. A wait for ACKs is bounded too (ackPoll), in case
// the ACK that would free it was lost and only a resend's will come.
func (p *pacer) wait(n int) error {
	for first := true; ; first = false {
		p.mu.Lock()
		newDead := p.newDead
		p.mu.Unlock()
		dl := p.deadline.Load()
		if dl != 0 && time.Now().UnixNano() >= dl {
			return os.ErrDeadlineExceeded
		}
		wait, ackWait := p.g.admit(n, first)
		if wait == 0 && !ackWait {
			return nil
		}
		if ackWait {
			wait = ackPoll
		}
		if dl != 0 {
			wait = min(wait, time.Duration(dl-time.Now().UnixNano()))
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.g.waitAck():
		case <-newDead:
		case <-p.ctx.Done():
			t.Stop()
			return net.ErrClosed
		}
		t.Stop()
	}
}

// ackPoll bounds a wait for ACKs.
const ackPoll = 20 * time.Millisecond

func (p *pacer) close() { p.cancel() }

// fixedGate lets data in at a fixed rate, with bursts of up to paceBurst
// after a pause (a token bucket, kept as the time the next byte may go).
type fixedGate struct {
	rate  float64 // bytes a second
	clock func() time.Duration
	mu    sync.Mutex
	next  time.Duration
}

func newFixedGate(bytesPerSec float64) *fixedGate {
	return &fixedGate{rate: bytesPerSec, clock: monoClock}
}

func (g *fixedGate) quantum() int { return paceBurst }

func (g *fixedGate) admit(n int, _ bool) (time.Duration, bool) {
	now := g.clock()
	g.mu.Lock()
	defer g.mu.Unlock()
	return spend(&g.next, now, n, g.rate, paceBurst), false
}

// spend lets n bytes go at rate with bursts of up to burst bytes (a token
// bucket kept as the time its next byte may go, next): it returns 0 and
// moves next on when they may go now, else how long to wait.
func spend(next *time.Duration, now time.Duration, n int, rate float64, burst int) time.Duration {
	burst = max(burst, n) // a piece asked for before the burst shrank
	tat := max(*next, now) + time.Duration(float64(n)/rate*1e9)
	if ahead := tat - now - time.Duration(float64(burst)/rate*1e9); ahead > 0 {
		return ahead
	}
	*next = tat
	return 0
}

func (g *fixedGate) waitAck() <-chan struct{} { return nil }

// dataRate is the rate, in bytes a second, at which data may enter a
// session so that it and its FEC parity together send RateMbit.
func (c KCPConfig) dataRate() float64 {
	r := float64(c.RateMbit) * 1e6 / 8
	if c.DataShards > 0 {
		r = r * float64(c.DataShards) / float64(c.DataShards+c.ParityShards)
	}
	return r
}

// PaceState is how one KCP session paces what it sends, for status and
// metrics. Rates are of the session's data (KCP payload: the TLS
// records), in bits a second; resends, headers and FEC parity come on
// top.
type PaceState struct {
	// Rate is rate_mbit as configured: "auto", a number, or "0" for
	// unpaced.
	Rate string
	// Mode is the controller's state with "auto": "startup", "drain",
	// "probe_bw" or "probe_rtt"; "fixed" or "unpaced" otherwise.
	Mode string
	// Bandwidth is the estimated bottleneck bandwidth ("auto" only).
	Bandwidth float64
	// MinRTT is the smallest round trip seen lately, and RTT the
	// smallest of the last round ("auto" only): RTT - MinRTT is the
	// queue the path holds.
	MinRTT, RTT time.Duration
	// PacingRate is the rate new data may enter at now; 0 for unpaced.
	PacingRate float64
	// InFlight is the data sent and not yet acknowledged (each resent
	// copy of a segment counted again, up to 3), and InFlightCap the most
	// the controller allows ("auto" only), in bytes.
	InFlight    int64
	InFlightCap int64
	// Delivered counts the data bytes acknowledged, and Resent the
	// segments sent again, since the session began ("auto" only).
	Delivered int64
	Resent    int64
	// QueueCuts counts the times a standing queue cut the estimate, and
	// ProbeUps the times a probe found more bandwidth ("auto" only).
	QueueCuts int64
	ProbeUps  int64
	// Stuck counts the writes let in past the in-flight cap because
	// nothing had been sent or delivered for a while ("auto" only; see
	// stuckAfter): above 0, something other than the path held the
	// session's data up (docs/benchmarks.md, "A session that waited for
	// good").
	Stuck int64
	// LocalDrops counts the segments whose first transmission kcp-go
	// dropped before the socket (its queue to the socket was full) and
	// sent later as a resend ("auto" only; sampler.unseen): a sender
	// that makes data faster than its socket takes it.
	LocalDrops int64
}

// attrs are the state as log attributes.
func (s PaceState) attrs() []any {
	return []any{"mode", s.Mode, "bandwidth_mbit", round2(s.Bandwidth / 1e6),
		"min_rtt", s.MinRTT.Round(100 * time.Microsecond).String(), "rtt", s.RTT.Round(100 * time.Microsecond).String(), "pacing_mbit", round2(s.PacingRate / 1e6),
		"inflight", s.InFlight, "inflight_cap", s.InFlightCap, "resent", s.Resent,
		"queue_cuts", s.QueueCuts, "probe_ups", s.ProbeUps, "gate_stuck", s.Stuck, "local_drops", s.LocalDrops}
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// KCPPaceState returns the pacing state of c when it is a KCP session
// (also under TLS), and false for any other connection.
func KCPPaceState(c net.Conn) (PaceState, bool) {
	kc, ok := rawConn(c).(*kcpConn)
	if !ok {
		return PaceState{}, false
	}
	return kc.paceState(), true
}

// logger returns l, or a logger that discards.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
