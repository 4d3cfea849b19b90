package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/cluster/clustertest"
	"github.com/warren-tunnel/warren/internal/etcdtest"
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
	c, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &etcdCluster{
		t: t, etcd: e, client: c,
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
	e := etcdtest.Start(t, nil)
	clustertest.TestRegistryOf(t, func(t *testing.T) clustertest.Cluster { return newEtcdCluster(t, e) })
}
