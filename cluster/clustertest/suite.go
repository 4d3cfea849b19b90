package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/cluster"
)

// Cluster is what the behaviour suite runs a Registry implementation on:
// one store and the registries of the servers that share it.
type Cluster interface {
	// Registry returns the registry of server m, not yet running; its
	// holdings stay reserved for grace when it dies.
	Registry(m cluster.Member, grace time.Duration) cluster.Registry
	// Kill makes the running server id die as a killed process does:
	// it releases nothing, its registry refuses claims, and its
	// membership ends by itself (the twin: at once; etcd: its lease).
	Kill(id string)
	// SetDown makes the store unreachable (true) or reachable again.
	SetDown(down bool)
	// Advance lets d pass for reservations (the twin's clock; etcd's
	// leases run on their own, and the suite waits for them).
	Advance(d time.Duration)
	// Forge writes a holding as someone with write access to the store
	// could, for a server that is not a member.
	Forge(h cluster.Holding)
	// Patience bounds what the suite waits for: a view to follow the
	// store, a lease to expire, a grace to pass.
	Patience() time.Duration
	// Grace is the shortest grace the store honours (etcd: whole
	// seconds).
	Grace() time.Duration
}

// TestRegistryOf runs the behaviour every Registry implementation must
// have (the contract of cluster.Registry) on clusters newCluster makes,
// one per subtest.
func TestRegistryOf(t *testing.T, newCluster func(t *testing.T) Cluster) {
	for _, tc := range []struct {
		name string
		f    func(t *testing.T, c Cluster)
	}{
		{"Claims", testClaims},
		{"Shared", testShared},
		{"ReleaseGrace", testReleaseGrace},
		{"Views", testViews},
		{"KillGraceWins", testKill},
		{"Leave", testLeave},
		{"Down", testDown},
		{"ConflictAtOnce", testConflictAtOnce},
		{"Forged", testForged},
		{"DuplicateID", testDuplicateID},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newCluster(t)) })
	}
}

// Start runs the registry of server id until the test ends (or Close),
// and waits until it is a member in its own view. Its Run must return
// nil.
func Start(t testing.TB, c Cluster, id string, grace time.Duration) cluster.Registry {
	t.Helper()
	r := c.Registry(cluster.Member{ID: id, PeerAddress: id + ":7000"}, grace)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			r.Close()
			if err := <-done; err != nil {
				t.Errorf("Run %s: %v", id, err)
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.After(c.Patience())
	for {
		ch := r.Changed()
		if slices.ContainsFunc(r.Members(), func(m cluster.Member) bool { return m.ID == id }) && r.Err() == nil {
			return r
		}
		select {
		case <-ch:
		case err := <-done:
			done <- err
			t.Fatalf("Run %s: %v", id, err)
		case <-deadline:
			t.Fatalf("%s not a member after %v (Err: %v)", id, c.Patience(), r.Err())
		}
	}
}

// Eventually calls f until it returns nil, each time the view of r
// changes and at least every 50 ms, for at most within; then it fails
// the test with f's last error.
func Eventually(t testing.TB, r cluster.Registry, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.After(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ch := r.Changed()
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline:
			t.Fatalf("after %v: %v", within, err)
		}
	}
}

func hold(server, client, key string, shared bool) cluster.Holding {
	return cluster.Holding{Key: key, Client: client, Server: server, Shared: shared}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// conflict returns nil when err is a *ConflictError naming client
// (reserved: with no server), else an error saying what err was.
func conflict(err error, client string, reserved, sharing bool) error {
	var ce *cluster.ConflictError
	if !errors.As(err, &ce) {
		return fmt.Errorf("want a conflict with %s, got %v", client, err)
	}
	if ce.Holder.Client != client || (ce.Holder.Server == "") != reserved || ce.Sharing != sharing {
		return fmt.Errorf("conflict %+v (%v); want holder %s reserved=%v sharing=%v", *ce, ce, client, reserved, sharing)
	}
	return nil
}

func holders(r cluster.Registry, key string, want ...cluster.Holding) error {
	got := r.Holders(key) // in no particular order
	sortLike(got)
	sortLike(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("holders of %s: %v, want %v", key, got, want)
	}
	return nil
}

func sortLike(hs []cluster.Holding) {
	slices.SortFunc(hs, func(a, b cluster.Holding) int {
		if a.Server != b.Server {
			if a.Server < b.Server {
				return -1
			}
			return 1
		}
		if a.Client < b.Client {
			return -1
		}
		if a.Client > b.Client {
			return 1
		}
		return 0
	})
}

func testClaims(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	a, b := Start(t, c, "a", time.Minute), Start(t, c, "b", time.Minute)
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	if err := holders(a, "port:2222", hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatalf("at once in the claimer's view: %v", err)
	}
	// Claiming it again changes nothing.
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	// The same client on another server joins; another client is refused,
	// on either server.
	if err := b.Claim(ctx, hold("b", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	if err := conflict(b.Claim(ctx, hold("b", "c2", "port:2222", false)), "c1", false, false); err != nil {
		t.Fatal(err)
	}
	if err := conflict(a.Claim(ctx, hold("a", "c2", "port:2222", false)), "c1", false, false); err != nil {
		t.Fatal(err)
	}
	if err := conflict(b.Claim(ctx, hold("b", "c2", "port:2222", true)), "c1", false, true); err != nil {
		t.Fatal(err)
	}
	both := []cluster.Holding{hold("a", "c1", "port:2222", false), hold("b", "c1", "port:2222", false)}
	for _, r := range []cluster.Registry{a, b} {
		Eventually(t, r, c.Patience(), func() error { return holders(r, "port:2222", both...) })
	}
	// A claim for another server is refused.
	if err := a.Claim(ctx, hold("b", "c3", "port:1", false)); err == nil || errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("claim for another server: %v", err)
	}
	// Releasing what it does not hold is no error.
	if err := a.Release(ctx, hold("a", "c9", "port:9", false), time.Minute); err != nil {
		t.Fatal(err)
	}
	// Routes: every holding, sorted.
	if err := b.Claim(ctx, hold("b", "c2", "http:x.example", false)); err != nil {
		t.Fatal(err)
	}
	want := append([]cluster.Holding{hold("b", "c2", "http:x.example", false)}, both...)
	Eventually(t, a, c.Patience(), func() error {
		if got := a.Routes(); !slices.Equal(got, want) {
			return fmt.Errorf("routes %v, want %v", got, want)
		}
		return nil
	})
}

func testShared(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	a, b := Start(t, c, "a", time.Minute), Start(t, c, "b", time.Minute)
	if err := a.Claim(ctx, hold("a", "c1", "port:80", true)); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, hold("b", "c2", "port:80", true)); err != nil {
		t.Fatal(err)
	}
	if err := conflict(b.Claim(ctx, hold("b", "c3", "port:80", false)), "c1", false, true); err != nil {
		// Either holder may be named.
		if err2 := conflict(b.Claim(ctx, hold("b", "c3", "port:80", false)), "c2", false, true); err2 != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, a, c.Patience(), func() error {
		return holders(a, "port:80", hold("a", "c1", "port:80", true), hold("b", "c2", "port:80", true))
	})
	// A shared key reserved after its last holding: other shared claims
	// are welcome, an unshared one is not.
	if err := a.Release(ctx, hold("a", "c1", "port:80", true), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx, hold("b", "c2", "port:80", true), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := conflict(a.Claim(ctx, hold("a", "c3", "port:80", false)), "c2", true, true); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, hold("a", "c3", "port:80", true)); err != nil {
		t.Fatal(err)
	}
}

func testReleaseGrace(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	grace := c.Grace()
	a, b := Start(t, c, "a", time.Minute), Start(t, c, "b", time.Minute)
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, hold("b", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	// Not the last holding: no reservation.
	if err := a.Release(ctx, hold("a", "c1", "port:2222", false), 0); err != nil {
		t.Fatal(err)
	}
	if err := holders(a, "port:2222"); err == nil {
		t.Fatal("no holders left after one of two released")
	}
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatalf("its client's claim after a release: %v", err)
	}
	if err := a.Release(ctx, hold("a", "c1", "port:2222", false), 0); err != nil {
		t.Fatal(err)
	}
	// The last one, with a grace: reserved for c1 on any server.
	if err := b.Release(ctx, hold("b", "c1", "port:2222", false), grace); err != nil {
		t.Fatal(err)
	}
	if err := holders(b, "port:2222"); err != nil {
		t.Fatalf("at once in the releaser's view: %v", err)
	}
	if err := conflict(a.Claim(ctx, hold("a", "c2", "port:2222", false)), "c1", true, false); err != nil {
		t.Fatal(err)
	}
	// Its client takes it back on another server.
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	// Released with the grace again; once it has passed the key is free.
	if err := a.Release(ctx, hold("a", "c1", "port:2222", false), grace); err != nil {
		t.Fatal(err)
	}
	c.Advance(grace)
	Eventually(t, b, c.Patience(), func() error { return b.Claim(ctx, hold("b", "c2", "port:2222", false)) })
	// Without a grace the key is free at once.
	if err := b.Release(ctx, hold("b", "c2", "port:2222", false), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, hold("a", "c3", "port:2222", false)); err != nil {
		t.Fatalf("after a release with no grace: %v", err)
	}
}

func testViews(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	a, b := Start(t, c, "a", time.Minute), Start(t, c, "b", time.Minute)
	want := []cluster.Member{{ID: "a", PeerAddress: "a:7000"}, {ID: "b", PeerAddress: "b:7000"}}
	for _, r := range []cluster.Registry{a, b} {
		Eventually(t, r, c.Patience(), func() error {
			if got := r.Members(); !slices.Equal(got, want) {
				return fmt.Errorf("members %v, want %v", got, want)
			}
			return nil
		})
	}
	ch := b.Changed()
	if err := a.Claim(ctx, hold("a", "c1", "https:*.example.com", false)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(c.Patience()):
		t.Fatal("b's Changed was not closed after a's claim")
	}
	Eventually(t, b, c.Patience(), func() error {
		return holders(b, "https:*.example.com", hold("a", "c1", "https:*.example.com", false))
	})
}

func testKill(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	grace := c.Grace()
	a, b := Start(t, c, "a", grace), Start(t, c, "b", grace)
	for _, key := range []string{"http:x.example", "port:2222"} {
		if err := a.Claim(ctx, hold("a", "c1", key, false)); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, b, c.Patience(), func() error { return holders(b, "port:2222", hold("a", "c1", "port:2222", false)) })
	c.Kill("a")
	// Its membership and holdings go (etcd: within lease_ttl) ...
	Eventually(t, b, c.Patience(), func() error {
		if len(b.Members()) != 1 || len(b.Routes()) != 0 {
			return fmt.Errorf("after a died: members %v routes %v", b.Members(), b.Routes())
		}
		return nil
	})
	// ... its claims are refused ...
	if err := a.Claim(ctx, hold("a", "c1", "port:1", false)); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("claim of a dead member: %v", err)
	}
	// ... and its keys stay reserved for their client: the grace wins.
	if err := conflict(b.Claim(ctx, hold("b", "c2", "http:x.example", false)), "c1", true, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, hold("b", "c1", "http:x.example", false)); err != nil {
		t.Fatalf("its client's return on another server: %v", err)
	}
	// The other key is free once the grace has passed.
	c.Advance(grace)
	Eventually(t, b, c.Patience(), func() error { return b.Claim(ctx, hold("b", "c2", "port:2222", false)) })
}

func testLeave(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	a := c.Registry(cluster.Member{ID: "a", PeerAddress: "a:7000"}, time.Minute)
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	b := Start(t, c, "b", time.Minute)
	Eventually(t, a, c.Patience(), func() error { return a.Claim(ctx, hold("a", "c1", "port:2222", false)) })
	a.Close()
	a.Close() // idempotent
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(c.Patience()):
		t.Fatal("Run did not return after Close")
	}
	Eventually(t, b, c.Patience(), func() error {
		if len(b.Members()) != 1 || len(b.Holders("port:2222")) != 0 {
			return fmt.Errorf("after a left: members %v holders %v", b.Members(), b.Holders("port:2222"))
		}
		return nil
	})
	if err := conflict(b.Claim(ctx, hold("b", "c2", "port:2222", false)), "c1", true, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, hold("a", "c1", "port:1", false)); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("claim after Close: %v", err)
	}
}

func testDown(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	a, b := Start(t, c, "a", time.Minute), Start(t, c, "b", time.Minute)
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	Eventually(t, b, c.Patience(), func() error { return holders(b, "port:2222", hold("a", "c1", "port:2222", false)) })
	c.SetDown(true)
	// A claim fails with ErrUnavailable, within its context.
	short, cancel := context.WithTimeout(ctx, time.Second)
	err := a.Claim(short, hold("a", "c1", "port:1", false))
	cancel()
	if !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("claim while down: %v", err)
	}
	for _, r := range []cluster.Registry{a, b} {
		Eventually(t, r, c.Patience(), func() error {
			if r.Err() == nil {
				return errors.New("Err is nil while the store is down")
			}
			return nil
		})
		if !errors.Is(r.Err(), cluster.ErrUnavailable) {
			t.Fatalf("Err while down: %v", r.Err())
		}
	}
	// The view is kept.
	if err := holders(b, "port:2222", hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatalf("while down: %v", err)
	}
	c.SetDown(false)
	Eventually(t, a, c.Patience(), func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return a.Claim(ctx, hold("a", "c1", "port:1", false))
	})
	for _, r := range []cluster.Registry{a, b} {
		Eventually(t, r, c.Patience(), r.Err)
	}
	Eventually(t, b, c.Patience(), func() error { return holders(b, "port:1", hold("a", "c1", "port:1", false)) })
	if err := conflict(b.Claim(ctx, hold("b", "c2", "port:2222", false)), "c1", false, false); err != nil {
		t.Fatalf("after the store came back: %v", err)
	}
}

// testConflictAtOnce: many claims of one key by different clients on
// several servers at the same moment; exactly one wins, every other gets
// a conflict naming the winner.
func testConflictAtOnce(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	ids := []string{"a", "b", "c"}
	regs := make([]cluster.Registry, len(ids))
	for i, id := range ids {
		regs[i] = Start(t, c, id, time.Minute)
	}
	const perServer = 4
	for round := range 5 {
		key := fmt.Sprintf("http:race%d.example", round)
		shared := round%2 == 1 // an unshared claim among shared ones
		start := make(chan struct{})
		type result struct {
			h   cluster.Holding
			err error
		}
		results := make(chan result, len(ids)*perServer)
		var wg sync.WaitGroup
		for i, id := range ids {
			for j := range perServer {
				h := hold(id, fmt.Sprintf("c%d-%d", i, j), key, shared && j != 0)
				wg.Go(func() {
					<-start
					results <- result{h, regs[i].Claim(ctx, h)}
				})
			}
		}
		close(start)
		wg.Wait()
		close(results)
		var won []cluster.Holding
		var errs []error
		for res := range results {
			var ce *cluster.ConflictError
			switch {
			case res.err == nil:
				won = append(won, res.h)
			case errors.As(res.err, &ce):
				errs = append(errs, res.err)
			default:
				t.Fatalf("round %d: %v: %v", round, res.h, res.err)
			}
		}
		switch {
		case len(won) == 0:
			t.Fatalf("round %d: no claim won", round)
		case !shared && len(won) != 1:
			t.Fatalf("round %d: %d unshared claims won: %v", round, len(won), won)
		case shared && len(won) > 1 && slices.ContainsFunc(won, func(h cluster.Holding) bool { return !h.Shared }):
			t.Fatalf("round %d: shared and unshared claims both won: %v", round, won)
		}
		for _, r := range regs {
			Eventually(t, r, c.Patience(), func() error { return holders(r, key, won...) })
		}
	}
}

func testForged(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	a := Start(t, c, "a", time.Minute)
	c.Forge(hold("ghost", "evil", "port:2222", false))
	c.Forge(hold("a", "evil", "port:2223", false)) // a real member's name, not its lease
	// The forged entries reach the view's source, and are ignored.
	if err := a.Claim(ctx, hold("a", "c1", "port:1", false)); err != nil {
		t.Fatal(err)
	}
	Eventually(t, a, c.Patience(), func() error { return holders(a, "port:1", hold("a", "c1", "port:1", false)) })
	for _, key := range []string{"port:2222", "port:2223"} {
		if got := a.Holders(key); len(got) != 0 {
			t.Fatalf("forged holdings in the view: %v", got)
		}
		if err := a.Claim(ctx, hold("a", "c1", key, false)); err != nil {
			t.Fatalf("claim over a forged holding: %v", err)
		}
	}
	if got := a.Routes(); len(got) != 3 {
		t.Fatalf("routes: %v", got)
	}
}

func testDuplicateID(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	a := Start(t, c, "a", time.Minute)
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	dup := c.Registry(cluster.Member{ID: "a", PeerAddress: "other:7000"}, time.Minute)
	done := make(chan error, 1)
	go func() { done <- dup.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a second member with the same id ran")
		}
		t.Logf("duplicate id: %v", err)
	case <-time.After(c.Patience()):
		dup.Close()
		<-done
		t.Fatal("Run of a duplicate id did not fail")
	}
	// The first member is untouched.
	if err := holders(a, "port:2222", hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, hold("a", "c1", "port:1", false)); err != nil {
		t.Fatal(err)
	}
	if got := a.Members(); len(got) != 1 || got[0].PeerAddress != "a:7000" {
		t.Fatalf("members: %v", got)
	}
}
