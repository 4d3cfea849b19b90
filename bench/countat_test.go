package main

import "testing"

func TestCountAt(t *testing.T) {
	seen := []ackAt{{t: 10, n: 100}, {t: 20, n: 200}, {t: 50, n: 900}}
	for _, c := range []struct{ at, want int64 }{
		{5, 0},    // before the first acknowledgement
		{10, 100}, // at one
		{15, 100}, // between two: what was acknowledged, not a line (a stall's data comes in one read)
		{49, 200}, // in a stall
		{50, 900}, // the read after it
		{99, 900}, // after the last
	} {
		if got := countAt(seen, c.at); got != c.want {
			t.Errorf("countAt(%d) = %d, want %d", c.at, got, c.want)
		}
	}
	if got := countAt(nil, 5); got != 0 {
		t.Errorf("countAt of nothing = %d, want 0", got)
	}
}
