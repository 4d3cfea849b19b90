// Package clock is the time seam of warren's daemons: the server and the
// client read the time and set their timers through a Clock, so that tests
// can run their policy (reconnect grace, backoff, drain timeouts) on a
// clock that moves only when told to (clocktest.Clock) instead of waiting
// on real time.
//
// Deadlines set on connections are not part of the seam: a connection
// enforces its own deadlines, on real time.
package clock

import "time"

// Clock tells the time and makes timers.
//
// Now returns the current time. NewTimer returns a timer whose channel
// receives the time once d has passed. AfterFunc returns a timer that
// calls f in its own goroutine once d has passed; its C is nil. A Clock is
// safe for concurrent use.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending event of a Clock, as *time.Timer is of the system
// clock (with Go 1.23 semantics: after Stop or Reset returns, no stale
// value is received from C).
//
// C is the channel the time is sent on (nil for AfterFunc timers). Stop
// prevents the timer from firing and reports whether it did so. Reset
// makes it fire d from now instead, and reports whether it was pending.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Real is the system clock.
type Real struct{}

var _ Clock = Real{}

func (Real) Now() time.Time { return time.Now() }

func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

// Or returns c, or the system clock when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return Real{}
	}
	return c
}
