package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/cluster/clustertest"
	"github.com/warren-tunnel/warren/internal/etcdtest"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

// etcdCluster is the behaviour suite's Cluster over a real etcd; each one
// has a prefix of its own.
type etcdCluster struct {
	t      *testing.T
	etcd   *etcdtest.Etcd
	client *clientv3.Client
	prefix string

	mu   sync.Mutex
	regs map[string]cluster.Registry
}

const testLeaseTTL = 2 * time.Second // etcd's shortest

var prefixes atomic.Int64

func newEtcdCluster(t *testing.T, e *etcdtest.Etcd) *etcdCluster {
	return &etcdCluster{
		t: t, etcd: e, client: e.Client(t),
		prefix: fmt.Sprintf("/test%d/", prefixes.Add(1)),
		regs:   make(map[string]cluster.Registry),
	}
}

func (c *etcdCluster) config(id string) cluster.Config {
	cfg := cluster.DefaultConfig()
	cfg.ID = id
	cfg.Etcd = c.etcd.Endpoints()
	cfg.Prefix = c.prefix
	cfg.LeaseTTL = testLeaseTTL
	return cfg
}

func (c *etcdCluster) Registry(m cluster.Member, grace time.Duration) cluster.Registry {
	r, err := cluster.NewEtcd(c.config(m.ID), m, grace, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	if _, ok := c.regs[m.ID]; !ok {
		c.regs[m.ID] = r
	}
	c.mu.Unlock()
	return r
}

func (c *etcdCluster) Kill(id string) {
	c.mu.Lock()
	r := c.regs[id]
	c.mu.Unlock()
	cluster.Abandon(r)
}

func (c *etcdCluster) SetDown(down bool) {
	if down {
		c.etcd.Stop()
	} else {
		c.etcd.Start()
	}
}

func (c *etcdCluster) Advance(time.Duration) {}

// Forge writes h's holding key by hand: with no lease when h.Server is
// not a member, else under a lease of its own (not the member's).
func (c *etcdCluster) Forge(h cluster.Holding) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, _ := json.Marshal(h)
	var opts []clientv3.OpOption
	c.mu.Lock()
	_, member := c.regs[h.Server]
	c.mu.Unlock()
	if member {
		l, err := c.client.Grant(ctx, 60)
		if err != nil {
			c.t.Fatal(err)
		}
		opts = append(opts, clientv3.WithLease(l.ID))
	}
	if _, err := c.client.Put(ctx, cluster.HoldKey(c.prefix, h), string(v), opts...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *etcdCluster) Patience() time.Duration { return 20 * time.Second }
func (c *etcdCluster) Grace() time.Duration    { return 3 * time.Second }

func TestEtcdRegistry(t *testing.T) {
	leaktest.Check(t)
	e := etcdtest.Start(t, nil)
	clustertest.TestRegistryOf(t, func(t *testing.T) clustertest.Cluster { return newEtcdCluster(t, e) })
}

// TestEtcdLeaseLost: when this server's lease is gone from etcd while it
// runs (revoked by hand here; a partition longer than lease_ttl does the
// same), it registers again with its holdings.
func TestEtcdLeaseLost(t *testing.T) {
	leaktest.Check(t)
	e := etcdtest.Start(t, nil)
	c := newEtcdCluster(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := clustertest.Start(t, c, "a", time.Minute), clustertest.Start(t, c, "b", time.Minute)
	h := cluster.Holding{Key: "port:2222", Client: "c1", Server: "a"}
	if err := a.Claim(ctx, h); err != nil {
		t.Fatal(err)
	}
	resp, err := c.client.Get(ctx, c.prefix+"members/a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("member key: %v %v", resp, err)
	}
	old := resp.Kvs[0].Lease
	if _, err := c.client.Revoke(ctx, clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, b, c.Patience(), func() error {
		resp, err := c.client.Get(ctx, c.prefix+"members/a")
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease == old {
			return fmt.Errorf("a not registered again: %v", resp.Kvs)
		}
		if got := b.Holders("port:2222"); len(got) != 1 || got[0] != h {
			return fmt.Errorf("b's holders: %v", got)
		}
		return a.Err()
	})
	if err := a.Claim(ctx, cluster.Holding{Key: "port:1", Client: "c1", Server: "a"}); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdTLS: etcd_tls verifies etcd with its CA and presents the client
// certificate etcd requires; without them the registry never registers
// and says why.
func TestEtcdTLS(t *testing.T) {
	srv, files, _ := etcdtest.NewTLS(t)
	e := etcdtest.Start(t, srv)
	c := newEtcdCluster(t, e) // plain client: unused with TLS
	cfg := c.config("a")
	cfg.EtcdTLS = cluster.EtcdTLS{CA: files.CA, Cert: files.Cert, Key: files.Key}
	m := cluster.Member{ID: "a", PeerAddress: "a:7000"}
	r, err := cluster.NewEtcd(cfg, m, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	tlsCluster := &fixedCluster{etcdCluster: c, r: r}
	a := clustertest.Start(t, tlsCluster, "a", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Claim(ctx, cluster.Holding{Key: "port:1", Client: "c1", Server: "a"}); err != nil {
		t.Fatal(err)
	}

	// No client certificate: etcd refuses; Run goes on, Err says why.
	cfg.ID, m.ID = "b", "b"
	cfg.EtcdTLS.Cert, cfg.EtcdTLS.Key = "", ""
	nocert, err := cluster.NewEtcd(cfg, m, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- nocert.Run(ctx) }()
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	<-short.Done()
	if err := nocert.Err(); err == nil {
		t.Fatal("registered without the client certificate etcd requires")
	}
	nocert.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Bad TLS files fail at once, naming the key.
	cfg.EtcdTLS.CA = files.Key
	if _, err := cluster.NewEtcd(cfg, m, time.Minute, nil); err == nil || !strings.Contains(err.Error(), "etcd_tls.ca") {
		t.Fatalf("a key as the CA: %v", err)
	}
}

// fixedCluster hands out one prepared registry.
type fixedCluster struct {
	*etcdCluster
	r cluster.Registry
}

func (c *fixedCluster) Registry(cluster.Member, time.Duration) cluster.Registry { return c.r }

// TestEtcdRoles: the etcd roles docs/cluster.md shows are enough for a
// server (registry and registry clients) and for the tenant command, and
// keep the tokens from an observer. Users are the client certificates'
// common names.
func TestEtcdRoles(t *testing.T) {
	srv, rootFiles, ca := etcdtest.NewTLS(t)
	e := etcdtest.Start(t, srv)
	c := newEtcdCluster(t, e)
	p := c.prefix
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(f etcdtest.Files) *clientv3.Client {
		cfg := c.config("x")
		cfg.EtcdTLS = cluster.EtcdTLS{CA: f.CA, Cert: f.Cert, Key: f.Key}
		tc, err := cluster.EtcdTLSConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	root := connect(rootFiles)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	grant := func(role, key string, perm clientv3.PermissionType) {
		must(root.RoleGrantPermission(ctx, role, key, clientv3.GetPrefixRangeEnd(key), perm))
	}
	noPassword := &clientv3.UserAddOptions{NoPassword: true}
	for _, role := range []string{"warren-server", "warren-tenants", "warren-observer"} {
		must(root.RoleAdd(ctx, role))
	}
	grant("warren-server", p, clientv3.PermissionType(clientv3.PermRead))
	grant("warren-server", p+"members/", clientv3.PermissionType(clientv3.PermReadWrite))
	grant("warren-server", p+"routes/", clientv3.PermissionType(clientv3.PermReadWrite))
	grant("warren-tenants", p+"clients/", clientv3.PermissionType(clientv3.PermReadWrite))
	grant("warren-observer", p+"members/", clientv3.PermissionType(clientv3.PermRead))
	grant("warren-observer", p+"routes/", clientv3.PermissionType(clientv3.PermRead))
	for user, role := range map[string]string{"root": "root", "s1": "warren-server", "ops": "warren-tenants", "obs": "warren-observer"} {
		must(root.UserAddWithOptions(ctx, user, "", noPassword))
		must(root.UserGrantRole(ctx, user, role))
	}
	must(root.AuthEnable(ctx))

	// The tenant command's user writes a client; the observer cannot
	// read it, nor write routes.
	opsCfg := c.config("x")
	ops := ca.Client("ops")
	opsCfg.EtcdTLS = cluster.EtcdTLS{CA: ops.CA, Cert: ops.Cert, Key: ops.Key}
	tenants, err := cluster.NewTenants(opsCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tenants.Close()
	if err := tenants.Put(ctx, cluster.Tenant{Name: "lab", Token: "tok-lab-0123456789", Ports: []string{"3000"}}); err != nil {
		t.Fatalf("tenants role: %v", err)
	}
	obs := connect(ca.Client("obs"))
	if _, err := obs.Get(ctx, p+"clients/", clientv3.WithPrefix()); err == nil {
		t.Fatal("the observer read the clients (the tokens)")
	}
	if _, err := obs.Put(ctx, p+"routes/x", "y"); err == nil {
		t.Fatal("the observer wrote a route")
	}

	// A server: registers, claims, watches, reads the clients.
	s1 := ca.Client("s1")
	cfg := c.config("s1")
	cfg.EtcdTLS = cluster.EtcdTLS{CA: s1.CA, Cert: s1.Cert, Key: s1.Key}
	r, err := cluster.NewEtcd(cfg, cluster.Member{ID: "s1", PeerAddress: "s1:7000"}, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := clustertest.Start(t, &fixedCluster{etcdCluster: c, r: r}, "s1", time.Minute)
	if err := reg.Claim(ctx, cluster.Holding{Key: "port:3000", Client: "lab", Server: "s1"}); err != nil {
		t.Fatalf("server role: claim: %v", err)
	}
	st, err := cluster.NewTenants(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if list, _, err := st.List(ctx); err != nil || len(list) != 1 || list[0].Name != "lab" {
		t.Fatalf("server role: clients: %v %v", list, err)
	}
	if resp, err := obs.Get(ctx, p+"routes/", clientv3.WithPrefix()); err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("the observer reads the routes: %v %v", resp, err)
	}
}

// TestEtcdCloseBeforeRun: a registry and a Tenants closed without running
// leave nothing behind, and Run after Close returns at once.
func TestEtcdCloseBeforeRun(t *testing.T) {
	leaktest.Check(t)
	cfg := cluster.DefaultConfig()
	cfg.ID, cfg.Etcd = "a", []string{"http://127.0.0.1:1"}
	r, err := cluster.NewEtcd(cfg, cluster.Member{ID: "a"}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	tn, err := cluster.NewTenants(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tn.Close()
	if err := tn.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Bad settings fail at once, naming the key.
	cfg.Etcd = []string{"http://127.0.0.1:1"}
	cfg.EtcdTLS.CA = "/nonexistent/ca.pem"
	if _, err := cluster.NewEtcd(cfg, cluster.Member{ID: "a"}, time.Second, nil); err == nil || !strings.Contains(err.Error(), "etcd_tls") {
		t.Fatalf("etcd_tls on http endpoints: %v", err)
	}
	if _, err := cluster.NewEtcd(cfg, cluster.Member{ID: "b"}, time.Second, nil); err == nil {
		t.Fatal("a member whose id is not the config's")
	}
}

// TestEtcdRestartSameID: a server killed and started again at once with
// the same id is not taken for a duplicate: it waits for its previous
// lease to expire (within lease_ttl), then registers.
func TestEtcdRestartSameID(t *testing.T) {
	e := etcdtest.Start(t, nil)
	c := newEtcdCluster(t, e)
	a := clustertest.Start(t, c, "a", time.Minute)
	c.Kill("a")
	again := c.Registry(cluster.Member{ID: "a", PeerAddress: "a:7000"}, time.Minute)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- again.Run(context.Background()) }()
	defer func() {
		again.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	clustertest.Eventually(t, again, c.Patience(), again.Err)
	if d := time.Since(start); d > testLeaseTTL+2*time.Second {
		t.Fatalf("registered after %v; lease_ttl is %v", d, testLeaseTTL)
	}
	if err := a.Claim(context.Background(), cluster.Holding{Key: "port:1", Client: "c", Server: "a"}); err == nil {
		t.Fatal("the killed registry claimed")
	}
	if err := again.Claim(context.Background(), cluster.Holding{Key: "port:1", Client: "c", Server: "a"}); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdHoldingDeletedByHand: a holding deleted from etcd by hand
// leaves its reservation, which would hold the key for as long as its
// server lives; a release of it ends that too.
func TestEtcdHoldingDeletedByHand(t *testing.T) {
	e := etcdtest.Start(t, nil)
	c := newEtcdCluster(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := clustertest.Start(t, c, "a", time.Minute), clustertest.Start(t, c, "b", time.Minute)
	h := cluster.Holding{Key: "port:2222", Client: "c1", Server: "a"}
	if err := a.Claim(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Delete(ctx, cluster.HoldKey(c.prefix, h)); err != nil {
		t.Fatal(err)
	}
	other := cluster.Holding{Key: "port:2222", Client: "c2", Server: "b"}
	if err := b.Claim(ctx, other); err == nil {
		t.Fatal("claimed while the reservation stood")
	}
	if err := a.Release(ctx, h, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, other); err != nil {
		t.Fatalf("after the release: %v", err)
	}
}
