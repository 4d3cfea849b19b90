package metrics

import "github.com/prometheus/client_golang/prometheus"

// Registry operations whose failures warren_cluster_registry_errors_total
// counts (the op label); anything else is counted as "other".
var registryOps = []string{"claim", "release", "lease", "register", "watch", "clients"}

// clusterMetrics are the cluster registry's metrics (server only).
type clusterMetrics struct {
	registryErrors *prometheus.CounterVec
	routes         prometheus.Gauge
}

func newClusterMetrics() clusterMetrics {
	return clusterMetrics{
		registryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_cluster_registry_errors_total",
			Help: "Cluster registry operations on etcd that failed, by op (claim, release, lease, register, watch, clients).",
		}, []string{"op"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "warren_cluster_routes",
			Help: "Holdings of routes in the cluster, by live members, as this server's view has them.",
		}),
	}
}

func (c clusterMetrics) collectors() []prometheus.Collector {
	for _, op := range registryOps {
		c.registryErrors.WithLabelValues(op)
	}
	return []prometheus.Collector{c.registryErrors, c.routes}
}

// ClusterRegistryError counts a failed registry operation op (see
// registryOps).
func (r *Registry) ClusterRegistryError(op string) {
	if r == nil {
		return
	}
	if r.cluster.registryErrors == nil {
		return // a client's registry
	}
	r.cluster.registryErrors.WithLabelValues(oneOf(op, registryOps, "other")).Inc()
}

// SetClusterRoutes sets the number of route holdings in the cluster.
func (r *Registry) SetClusterRoutes(n int) {
	if r == nil {
		return
	}
	if r.cluster.routes == nil {
		return
	}
	r.cluster.routes.Set(float64(n))
}
