package clustertest

import (
	"testing"
	"time"

	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/cluster"
)

// twin is the behaviour suite's Cluster over a Store on a test clock.
type twin struct {
	*Store
	clk *clocktest.Clock
}

func (c twin) Registry(m cluster.Member, grace time.Duration) cluster.Registry {
	return c.Store.Registry(m, grace)
}
func (c twin) Kill(id string)          { c.Expire(id) }
func (c twin) Advance(d time.Duration) { c.clk.Advance(d) }
func (c twin) Patience() time.Duration { return 5 * time.Second }
func (c twin) Grace() time.Duration    { return 10 * time.Second }

func TestRegistry(t *testing.T) {
	TestRegistryOf(t, func(t *testing.T) Cluster {
		clk := clocktest.New()
		return twin{New(clk), clk}
	})
}
