package session

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/clock"
)

// errBudget ends a connection whose peer sent more before authentication
// than the handshake needs.
var errBudget = errors.New("peer sent more than a handshake needs before authenticating")

// budgetConn caps the bytes read from a connection until lift: before
// authentication smux would buffer whatever streams a peer opens, up to the
// whole session window, so an unauthenticated peer is held to what a
// handshake needs.
//
// It also notes when the peer last sent anything, which the heartbeat
// uses: a link busy with data is alive even if a ping waits behind it.
type budgetConn struct {
	net.Conn
	clk  clock.Clock
	left atomic.Int64 // bytes still allowed; < 0 once lifted
	last atomic.Int64 // unix ns of the last read that returned data
}

// preAuthBudget is what a handshake may read: its largest control frame,
// plus smux framing, window updates and the small frames around it.
func preAuthBudget(cfg Config) int64 {
	return int64(cfg.MaxControlFrame) + 16<<10
}

func newBudgetConn(c net.Conn, budget int64, clk clock.Clock) *budgetConn {
	b := &budgetConn{Conn: c, clk: clk}
	b.left.Store(budget)
	b.last.Store(clk.Now().UnixNano())
	return b
}

func (b *budgetConn) Read(p []byte) (int, error) {
	left := b.left.Load()
	if left < 0 {
		n, err := b.Conn.Read(p)
		if n > 0 {
			b.last.Store(b.clk.Now().UnixNano())
		}
		return n, err
	}
	if left == 0 {
		return 0, errBudget
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.Conn.Read(p)
	if b.left.Load() >= 0 { // not lifted meanwhile
		b.left.Add(-int64(n))
	}
	return n, err
}

// lift removes the cap: the peer has authenticated.
func (b *budgetConn) lift() { b.left.Store(-1) }

// idle is how long the peer has sent nothing.
func (b *budgetConn) idle() time.Duration {
	return time.Duration(b.clk.Now().UnixNano() - b.last.Load())
}
