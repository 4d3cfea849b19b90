package client

import (
	"math/rand/v2"
	"time"
)

// Reconnect timing: exponential backoff with full jitter, from minBackoff
// doubling up to maxBackoff, so that many clients cut off at once do not
// return at once. It starts over after a session stayed up stableAfter.
// Toward a server that was serving it stops doubling at servedBackoff:
// such a server is most likely restarting, and is served again within
// that (and a handshake) of accepting connections.
const (
	minBackoff    = 500 * time.Millisecond
	maxBackoff    = 30 * time.Second
	servedBackoff = 2 * time.Second
	stableAfter   = 15 * time.Second
)

type backoff struct {
	min, max time.Duration
	attempt  int
}

// next returns how long to wait before the next attempt: a uniform random
// duration up to the current ceiling.
func (b *backoff) next() time.Duration {
	ceil := b.max
	if b.attempt < 30 {
		ceil = min(b.max, b.min<<b.attempt)
	}
	b.attempt++
	return rand.N(ceil) + 1
}

func (b *backoff) reset() { b.attempt = 0 }
