package transport

import (
	"testing"
	"time"
)

// TestAckSwitch: ACKs go at once from the start and while the session
// reads less than the rate at which a batch fills before the interval
// ends; batched above a quarter over it; and at once again after a
// pause, from the first read.
func TestAckSwitch(t *testing.T) {
	const mss, interval = 1326, 20 * time.Millisecond
	below := float64(ackBatch*mss) / interval.Seconds() // 3.7 MB/s
	type step struct {
		rate       float64       // bytes a second read, in reads every 10 ms
		dur        time.Duration // for this long
		wantAtOnce bool          // at the end
		wantFlips  int           // changes in the step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"slow stays at once", []step{{0.5 * below, time.Second, true, 0}}},
		{"fast batches", []step{{2 * below, time.Second, false, 1}}},
		{"just over does not flip", []step{{1.1 * below, time.Second, true, 0}}},
		{"down and up", []step{{2 * below, time.Second, false, 1}, {0.5 * below, time.Second, true, 1}, {2 * below, time.Second, false, 1}}},
		{"between keeps the state", []step{{2 * below, time.Second, false, 1}, {1.1 * below, time.Second, false, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Duration(0)
			a := newAckSwitch(mss, interval, 30*time.Millisecond, now)
			for i, s := range tc.steps {
				flips := 0
				var atOnce bool
				for end := now + s.dur; now < end; {
					now += 10 * time.Millisecond
					var changed bool
					atOnce, changed = a.read(int(s.rate/100), now, longPath)
					if changed {
						flips++
					}
				}
				if atOnce != s.wantAtOnce || flips != s.wantFlips {
					t.Errorf("step %d (%.1f × the threshold): at once %v after %d changes, want %v after %d", i, s.rate/below, atOnce, flips, s.wantAtOnce, s.wantFlips)
				}
			}
		})
	}
	t.Run("pause", func(t *testing.T) {
		a := newAckSwitch(mss, interval, 30*time.Millisecond, 0)
		now := time.Duration(0)
		for range 100 {
			now += 10 * time.Millisecond
			a.read(int(2*below/100), now, longPath)
		}
		// A read after 5 s of nothing: what the window saw is little.
		if atOnce, changed := a.read(64<<10, now+5*time.Second, longPath); !atOnce || !changed {
			t.Errorf("after a pause: at once %v (changed %v), want at once", atOnce, changed)
		}
	})
}

func longPath() time.Duration { return 50 * time.Millisecond }

// TestAckSwitchShortPath: on a path whose RTT and interval together stay
// under the timeout's floor ACKs are batched however slow the session;
// before the first RTT sample they go at once; and the smallest RTT seen
// counts, not the latest (a starved CPU inflates those).
func TestAckSwitchShortPath(t *testing.T) {
	const mss, interval, minRTO = 1326, 20 * time.Millisecond, 30 * time.Millisecond
	for _, tc := range []struct {
		srtt time.Duration
		want bool
	}{
		{0, true}, // no sample yet
		{time.Millisecond, false},
		{10 * time.Millisecond, false}, // srtt + interval = the floor
		{11 * time.Millisecond, true},
		{200 * time.Millisecond, true},
	} {
		a := newAckSwitch(mss, interval, minRTO, 0)
		got, _ := a.read(1000, ackWindow, func() time.Duration { return tc.srtt })
		if got != tc.want {
			t.Errorf("srtt %v: at once %v, want %v", tc.srtt, got, tc.want)
		}
	}
	a := newAckSwitch(mss, interval, minRTO, 0)
	now := time.Duration(0)
	for _, rtt := range []time.Duration{200 * time.Millisecond, time.Millisecond, 80 * time.Millisecond} {
		now += ackWindow
		a.read(1000, now, func() time.Duration { return rtt })
	}
	if a.atOnce {
		t.Errorf("at once after an RTT of 1 ms was seen, then 80 ms: want batched")
	}
}
