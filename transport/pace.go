package transport

import (
	"context"
	"net"

	"golang.org/x/time/rate"
)

// paceBurst is how many bytes a paced KCP session takes in at once: a few
// TLS records.
const paceBurst = 64 << 10

// pacer lets a KCP session's outgoing data in at a fixed rate.
//
// kcp-go's own limiter (SetRateLimit) sits after KCP, in one queue with
// everything KCP sends: a resend waits there behind up to a window of new
// data, and while it waits the window stalls on the hole it repairs. So
// the data is paced where it enters the session instead, before KCP, and
// resends, which KCP sends as soon as it detects a loss, go out at once:
// they and the ACKs are a small share on top of the paced data.
type pacer struct {
	lim    *rate.Limiter
	ctx    context.Context // cancelled by close: a waiting Write returns
	cancel context.CancelFunc
}

// newPacer lets bytesPerSec in.
func newPacer(bytesPerSec float64) *pacer {
	ctx, cancel := context.WithCancel(context.Background())
	return &pacer{lim: rate.NewLimiter(rate.Limit(bytesPerSec), paceBurst), ctx: ctx, cancel: cancel}
}

// dataRate is the rate, in bytes a second, at which data may enter a
// session so that it and its FEC parity together send RateMbit.
func (c KCPConfig) dataRate() float64 {
	r := float64(c.RateMbit) * 1e6 / 8
	if c.DataShards > 0 {
		r = r * float64(c.DataShards) / float64(c.DataShards+c.ParityShards)
	}
	return r
}

// write writes b through w in pieces of at most paceBurst, each when the
// rate allows it.
func (p *pacer) write(w func([]byte) (int, error), b []byte) (int, error) {
	done := 0
	for len(b) > 0 {
		n := min(len(b), paceBurst)
		// WaitN fails only when close cancelled the wait (n is within
		// the burst).
		if p.lim.WaitN(p.ctx, n) != nil {
			return done, net.ErrClosed
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

func (p *pacer) close() { p.cancel() }
