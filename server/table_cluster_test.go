package server

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/cluster/clustertest"
	"github.com/warren-tunnel/warren/session"
)

// clusterFixture is the fixture's table as member "a" of a cluster over
// the registry twin, with member "b" beside it.
func clusterFixture(t *testing.T) (f *fixture, st *clustertest.Store, a, b cluster.Registry) {
	f = newFixture(t)
	st = clustertest.New(f.clock)
	run := func(id string) cluster.Registry {
		r := st.Registry(cluster.Member{ID: id, PeerAddress: id + ":7001"}, time.Minute)
		done := make(chan error, 1)
		go func() { done <- r.Run(context.Background()) }()
		t.Cleanup(func() { r.Close(); <-done })
		for {
			ch := r.Changed()
			if slices.ContainsFunc(r.Members(), func(m cluster.Member) bool { return m.ID == id }) {
				return r
			}
			<-ch
		}
	}
	a, b = run("a"), run("b")
	f.tb.reg, f.tb.self = a, "a"
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { f.tb.releaser(stop); close(done) }()
	t.Cleanup(func() { close(stop); <-done })
	return f, st, a, b
}

// waitHolders waits until key has n holdings in r's view.
func waitHolders(t *testing.T, r cluster.Registry, key string, n int) {
	t.Helper()
	tm := time.NewTimer(10 * time.Second)
	defer tm.Stop()
	for {
		ch := r.Changed()
		if len(r.Holders(key)) == n {
			return
		}
		select {
		case <-ch:
		case <-tm.C:
			t.Fatalf("%s: holders %v, want %d", key, r.Holders(key), n)
		}
	}
}

func TestTableClusterClaims(t *testing.T) {
	f, st, a, b := clusterFixture(t)
	ctx := context.Background()
	svc := session.Service{Name: "s", RemotePort: 20001}
	// Another server's client holds the port: refused, naming it.
	if err := b.Claim(ctx, cluster.Holding{Key: "port:20001", Client: "other", Server: "b"}); err != nil {
		t.Fatal(err)
	}
	f.refused(f.session(f.office, "i1", ""), session.CodePortInUse, `held by client "other" on server b`, svc)
	if f.route("port:20001") != nil {
		t.Fatal("a refused claim left a route")
	}
	// A claim of two routes whose second conflicts releases the first.
	f.refused(f.session(f.office, "i2", ""), session.CodePortInUse, "port 20001", session.Service{Name: "x", RemotePort: 20002}, svc)
	waitHolders(t, a, "port:20002", 0)
	// The registry unreachable: temporary, by what the client knows.
	b.Release(ctx, cluster.Holding{Key: "port:20001", Client: "other", Server: "b"}, 0)
	st.SetDown(true)
	knows := f.session(f.office, "i3", "")
	knows.unavailable = true
	f.refused(knows, session.CodeUnavailable, "registry is unavailable", svc)
	f.refused(f.session(f.office, "i4", ""), session.CodeLimit, "registry is unavailable", svc)
	st.SetDown(false)
	// Granted: in the registry; released with the grace when held.
	cs := f.session(f.office, "i5", "")
	f.claim(cs, svc)
	f.up(cs)
	waitHolders(t, b, "port:20001", 1)
	f.tb.down(cs, true)
	waitHolders(t, b, "port:20001", 0)
	if err := b.Claim(ctx, cluster.Holding{Key: "port:20001", Client: "other", Server: "b"}); err == nil {
		t.Fatal("another client took the port within its holder's grace")
	}
	// Its return, here, takes it back.
	f.claim(f.session(f.office, "i6", ""), svc)
	waitHolders(t, b, "port:20001", 1)
}

func TestTableClusterRemoteRoutes(t *testing.T) {
	f, _, a, b := clusterFixture(t)
	ctx := context.Background()
	key := "http:www.office.example.com"
	if err := b.Claim(ctx, cluster.Holding{Key: key, Client: "office", Server: "b"}); err != nil {
		t.Fatal(err)
	}
	f.tb.syncRemote(a.Routes())
	r := f.route(key)
	if r == nil || len(r.remote) != 1 || !r.remoteOnlyLocked() {
		t.Fatalf("remote route: %+v", r)
	}
	// The same client here joins it (the registry agrees); another not.
	f.refused(f.session(f.other, "o1", ""), session.CodeDomainNotAllowed, "", session.Service{Name: "w", Domains: []string{"www.office.example.com"}})
	cs := f.session(f.office, "i1", "")
	f.claim(cs, session.Service{Name: "w", Domains: []string{"www.office.example.com"}})
	if f.route(key) != r || len(r.members) != 1 || r.remoteOnlyLocked() {
		t.Fatalf("adopted route: %+v", f.route(key))
	}
	// b's holding goes: the route stays, served here.
	b.Release(ctx, cluster.Holding{Key: key, Client: "office", Server: "b"}, 0)
	f.tb.syncRemote(a.Routes())
	if f.route(key) != r || len(r.remote) != 0 {
		t.Fatalf("after b released: %+v", f.route(key))
	}
	// The session here leaves with no grace (a goodbye): released, and
	// with no holder elsewhere the route goes.
	f.tb.down(cs, false)
	if f.route(key) != nil {
		t.Fatal("route kept with no holder anywhere")
	}
	waitHolders(t, b, key, 0)
}
