package clustertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/cluster"
)

// start runs the registry of server id until the test ends and waits until
// it is a member.
func start(t *testing.T, s *Store, id string) cluster.Registry {
	t.Helper()
	r := s.Registry(cluster.Member{ID: id, PeerAddress: id + ":7000"}, time.Minute)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	t.Cleanup(func() {
		r.Close()
		if err := <-done; err != nil {
			t.Errorf("Run %s: %v", id, err)
		}
	})
	for {
		ch := r.Changed()
		for _, m := range r.Members() {
			if m.ID == id {
				return r
			}
		}
		select {
		case <-ch:
		case err := <-done:
			t.Fatalf("Run %s: %v", id, err)
		}
	}
}

func TestClaims(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New()
	s := New(clk)
	a, b := start(t, s, "a"), start(t, s, "b")
	hold := func(server, client, key string, shared bool) cluster.Holding {
		return cluster.Holding{Key: key, Client: client, Server: server, Shared: shared}
	}
	if err := a.Claim(ctx, hold("a", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	// The same client on another server joins; another client is refused.
	if err := b.Claim(ctx, hold("b", "c1", "port:2222", false)); err != nil {
		t.Fatal(err)
	}
	var ce *cluster.ConflictError
	if err := b.Claim(ctx, hold("b", "c2", "port:2222", false)); !errors.As(err, &ce) || ce.Holder.Client != "c1" || ce.Sharing {
		t.Fatalf("other client's claim: %v", err)
	}
	if err := b.Claim(ctx, hold("b", "c2", "port:2222", true)); !errors.As(err, &ce) || !ce.Sharing {
		t.Fatalf("shared claim on an unshared route: %v", err)
	}
	if got := len(a.Holders("port:2222")); got != 2 {
		t.Fatalf("holders: %d, want 2", got)
	}
	// Shared routes take several clients.
	for _, h := range []cluster.Holding{hold("a", "c1", "port:80", true), hold("b", "c2", "port:80", true)} {
		if err := s.members[h.Server].Claim(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	// Releasing the last holding reserves the key for its client's grace.
	a.Release(ctx, hold("a", "c1", "port:2222", false), 0)
	b.Release(ctx, hold("b", "c1", "port:2222", false), 10*time.Second)
	if err := a.Claim(ctx, hold("a", "c2", "port:2222", false)); !errors.As(err, &ce) || ce.Holder.Server != "" {
		t.Fatalf("claim on a reserved route: %v", err)
	}
	clk.Advance(10 * time.Second)
	if err := a.Claim(ctx, hold("a", "c2", "port:2222", false)); err != nil {
		t.Fatalf("after the grace: %v", err)
	}
}

func TestExpireReservesWithGrace(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New()
	s := New(clk)
	a, b := start(t, s, "a"), start(t, s, "b")
	if err := a.Claim(ctx, cluster.Holding{Key: "http:x.example", Client: "c1", Server: "a"}); err != nil {
		t.Fatal(err)
	}
	s.Expire("a")
	if len(b.Holders("http:x.example")) != 0 || len(b.Members()) != 1 {
		t.Fatalf("after expiry: holders %v members %v", b.Holders("http:x.example"), b.Members())
	}
	var ce *cluster.ConflictError
	if err := b.Claim(ctx, cluster.Holding{Key: "http:x.example", Client: "c2", Server: "b"}); !errors.As(err, &ce) {
		t.Fatalf("another client within the grace: %v", err)
	}
	if err := b.Claim(ctx, cluster.Holding{Key: "http:x.example", Client: "c1", Server: "b"}); err != nil {
		t.Fatalf("its client's return on another server: %v", err)
	}
	if err := a.Claim(ctx, cluster.Holding{Key: "port:1", Client: "c1", Server: "a"}); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("claim of an expired member: %v", err)
	}
}

func TestDown(t *testing.T) {
	ctx := context.Background()
	s := New(nil)
	a := start(t, s, "a")
	s.SetDown(true)
	if err := a.Claim(ctx, cluster.Holding{Key: "port:1", Client: "c", Server: "a"}); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("claim while down: %v", err)
	}
	if a.Err() == nil {
		t.Fatal("Err is nil while down")
	}
	s.SetDown(false)
	if err := a.Claim(ctx, cluster.Holding{Key: "port:1", Client: "c", Server: "a"}); err != nil {
		t.Fatal(err)
	}
}

func TestDuplicateID(t *testing.T) {
	s := New(nil)
	start(t, s, "a")
	if err := s.Registry(cluster.Member{ID: "a"}, 0).Run(context.Background()); err == nil {
		t.Fatal("a second member with the same id ran")
	}
}
