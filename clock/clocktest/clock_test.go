package clocktest

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestAdvanceFiresInOrder(t *testing.T) {
	c := New()
	var order []string
	c.AfterFunc(3*time.Second, func() { order = append(order, "3s@"+c.Now().Sub(Start).String()) })
	c.AfterFunc(time.Second, func() {
		order = append(order, "1s@"+c.Now().Sub(Start).String())
		// Set while Advance runs, due within it: fires too.
		c.AfterFunc(time.Second, func() { order = append(order, "2s@"+c.Now().Sub(Start).String()) })
	})
	tm := c.NewTimer(10 * time.Second)
	c.Advance(5 * time.Second)
	want := []string{"1s@1s", "2s@2s", "3s@3s"}
	if len(order) != len(want) {
		t.Fatalf("fired %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("fired %v, want %v", order, want)
		}
	}
	if got := c.Now().Sub(Start); got != 5*time.Second {
		t.Fatalf("now is start+%v, want 5s", got)
	}
	select {
	case <-tm.C():
		t.Fatal("the 10 s timer fired at 5 s")
	default:
	}
	c.Advance(5 * time.Second)
	select {
	case at := <-tm.C():
		if at.Sub(Start) != 10*time.Second {
			t.Fatalf("timer sent start+%v", at.Sub(Start))
		}
	default:
		t.Fatal("the 10 s timer did not fire at 10 s")
	}
}

func TestStopAndReset(t *testing.T) {
	c := New()
	fired := false
	f := c.AfterFunc(time.Second, func() { fired = true })
	if !f.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	if f.Stop() {
		t.Fatal("second Stop reported true")
	}
	c.Advance(time.Hour)
	if fired {
		t.Fatal("a stopped timer fired")
	}

	tm := c.NewTimer(time.Second)
	c.Advance(time.Second) // fires: a value waits in C
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reported it pending")
	}
	select {
	case <-tm.C():
		t.Fatal("a stale value arrived after Reset")
	default:
	}
	if c.Pending() != 1 {
		t.Fatalf("%d timers pending, want 1", c.Pending())
	}
	zero := c.NewTimer(0)
	select {
	case <-zero.C():
	default:
		t.Fatal("a timer of 0 did not fire at once")
	}
}

func TestWaitPending(t *testing.T) {
	c := New()
	done := make(chan error, 1)
	go func() { done <- c.WaitPending(context.Background(), 2) }()
	c.NewTimer(time.Second)
	c.NewTimer(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitPending(ctx, 3); err == nil {
		t.Fatal("WaitPending returned nil with 2 of 3 timers and its context over")
	}
}

func TestWaitTimer(t *testing.T) {
	c := New()
	c.NewTimer(time.Second)
	done := make(chan error, 1)
	go func() { done <- c.WaitTimer(context.Background(), 2*time.Second) }()
	f := c.AfterFunc(time.Hour, func() {})
	f.Reset(2 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWaitTimerIn(t *testing.T) {
	c := New()
	c.NewTimer(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := c.WaitTimerIn(ctx, 1500*time.Millisecond, 2*time.Second); err == nil {
		t.Fatal("WaitTimerIn found a timer of 1.5-2 s with only one of 1 s pending")
	}
	c.NewTimer(1750 * time.Millisecond)
	if err := c.WaitTimerIn(context.Background(), 1500*time.Millisecond, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := c.Durations(); !slices.Equal(got, []time.Duration{time.Second, 1750 * time.Millisecond}) {
		t.Fatalf("Durations = %v", got)
	}
}
