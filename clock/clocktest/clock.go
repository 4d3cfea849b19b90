// Package clocktest is the in-memory twin of clock.Clock: a clock that
// stands still until the test moves it with Advance, firing the timers
// that fall due in order of their time.
package clocktest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/clock"
)

// Clock is a manual clock. Create it with New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer      // pending, in no order
	changed chan struct{} // closed and replaced when timers come or go
}

var _ clock.Clock = (*Clock)(nil)

// Start is the time a New clock shows: fixed, so that test output is
// stable.
var Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// New returns a clock showing Start.
func New() *Clock { return &Clock{now: Start, changed: make(chan struct{})} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that sends the clock's time on its channel once
// Advance has moved the clock d past now.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	t := &timer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc returns a timer that calls f once Advance has moved the clock
// d past now. Advance calls f itself, before it returns.
func (c *Clock) AfterFunc(d time.Duration, f func()) clock.Timer {
	t := &timer{c: c, f: f}
	t.Reset(d)
	return t
}

// Advance moves the clock forward by d, firing every timer that falls due,
// earliest first, each at its own time: Now, read from an AfterFunc
// function, says when it was due. It returns after the AfterFunc
// functions due have returned. Timers set while it runs fire too if they
// fall due within d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		i := -1
		for j, t := range c.timers {
			if !t.when.After(end) && (i < 0 || t.when.Before(c.timers[i].when)) {
				i = j
			}
		}
		if i < 0 {
			break
		}
		t := c.timers[i]
		c.removeLocked(t)
		if t.when.After(c.now) {
			c.now = t.when
		}
		now := c.now
		if t.f == nil {
			select {
			case t.ch <- now:
			default: // a value is waiting already
			}
			continue
		}
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

// Pending is the number of timers set and not yet fired or stopped.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitPending blocks until at least n timers are pending, or ctx ends.
// Tests use it to know that the code under test has set the timer they
// are about to make fire.
func (c *Clock) WaitPending(ctx context.Context, n int) error {
	return c.wait(ctx, func() bool { return len(c.timers) >= n })
}

// WaitTimer blocks until a timer set for d (given d by NewTimer,
// AfterFunc or Reset) is pending, or ctx ends: a test waits for the very
// timer it means to fire, whatever else is pending.
func (c *Clock) WaitTimer(ctx context.Context, d time.Duration) error {
	return c.WaitTimerIn(ctx, d, d)
}

// WaitTimerIn is WaitTimer for a timer set for lo to hi: one whose
// duration is jittered.
func (c *Clock) WaitTimerIn(ctx context.Context, lo, hi time.Duration) error {
	return c.wait(ctx, func() bool {
		return slices.ContainsFunc(c.timers, func(t *timer) bool { return lo <= t.d && t.d <= hi })
	})
}

// Durations returns what each pending timer was set for (by NewTimer,
// AfterFunc or Reset), shortest first.
func (c *Clock) Durations() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	ds := make([]time.Duration, len(c.timers))
	for i, t := range c.timers {
		ds[i] = t.d
	}
	slices.Sort(ds)
	return ds
}

// wait blocks until ok, called with c.mu held, or ctx ends.
func (c *Clock) wait(ctx context.Context, ok func() bool) error {
	for {
		c.mu.Lock()
		done, ch := ok(), c.changed
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Clock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Clock) removeLocked(t *timer) bool {
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	c.notifyLocked()
	return true
}

type timer struct {
	c    *Clock
	ch   chan time.Time // nil for AfterFunc
	f    func()
	when time.Time     // guarded by c.mu
	d    time.Duration // as set, guarded by c.mu
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.drainLocked()
	return t.c.removeLocked(t)
}

// Reset sets the timer to fire d from the clock's now; d <= 0 fires it at
// once, as the system clock's timers do.
func (t *timer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.drainLocked()
	was := t.c.removeLocked(t)
	t.when, t.d = t.c.now.Add(d), d
	switch {
	case d > 0:
		t.c.timers = append(t.c.timers, t)
		t.c.notifyLocked()
	case t.f != nil:
		go t.f()
	default:
		t.ch <- t.when // drained above: there is room
	}
	return was
}

// drainLocked drops a value sent but not received: after Stop or Reset no
// stale time arrives, as with the system clock's timers since Go 1.23.
func (t *timer) drainLocked() {
	if t.ch == nil {
		return
	}
	select {
	case <-t.ch:
	default:
	}
}
