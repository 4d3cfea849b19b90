package metrics_test

import (
	"testing"

	"github.com/warren-tunnel/warren/metrics"
)

// TestClusterMetrics: the registry's errors by op (unknown ops as
// "other", every op exported at 0 from the start) and its route count, on
// a server; nothing on a client or a nil registry.
func TestClusterMetrics(t *testing.T) {
	r := newRegistry(t, metrics.RoleServer)
	want(t, scrape(t, r), map[string]float64{
		`warren_cluster_registry_errors_total{op="claim"}`: 0,
		`warren_cluster_registry_errors_total{op="lease"}`: 0,
		`warren_cluster_routes`:                            0,
	})
	r.ClusterRegistryError("lease")
	r.ClusterRegistryError("lease")
	r.ClusterRegistryError("frob")
	r.SetClusterRoutes(42)
	want(t, scrape(t, r), map[string]float64{
		`warren_cluster_registry_errors_total{op="lease"}`: 2,
		`warren_cluster_registry_errors_total{op="other"}`: 1,
		`warren_cluster_registry_errors_total{op="frob"}`:  -1,
		`warren_cluster_routes`:                            42,
	})
	c := newRegistry(t, metrics.RoleClient)
	c.ClusterRegistryError("lease")
	c.SetClusterRoutes(1)
	want(t, scrape(t, c), map[string]float64{`warren_cluster_routes`: -1, `warren_cluster_registry_errors_total{op="lease"}`: -1})
	var nilReg *metrics.Registry
	nilReg.ClusterRegistryError("lease")
	nilReg.SetClusterRoutes(1)
}
