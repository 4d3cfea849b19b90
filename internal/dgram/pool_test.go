package dgram

import "testing"

func TestGetFits(t *testing.T) {
	for _, n := range []int{0, 1, 2044, 2045, 16380, 16381, 65535, 65536} {
		b := Get(n)
		if len(*b) < Head+n {
			t.Fatalf("Get(%d): %d bytes", n, len(*b))
		}
		Put(b)
	}
}

func TestNoAllocationWhenWarm(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	Put(Get(1200))
	allocs := testing.AllocsPerRun(1000, func() { Put(Get(1200)) })
	if allocs > 0 {
		t.Fatalf("%v allocations per Get and Put", allocs)
	}
}
