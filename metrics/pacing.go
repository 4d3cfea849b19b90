package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-tunnel/warren/transport"
)

// Pacing is the rate controller's state of one KCP session's sending
// direction (transport.PaceState), for the warren_kcp_pacing_* metrics.
type Pacing struct {
	// Client is the client's name; Addr the client's UDP address (on the
	// server the session's remote address, on the client its local one:
	// the same session has the same Addr on both sides, NAT aside).
	Client, Addr string
	// Mode is "startup", "drain", "probe_bw", "probe_rtt", "fixed" or
	// "unpaced".
	Mode string
	// Bandwidth and PacingRate are in bits a second of data; MinRTT is
	// the smallest round trip seen lately.
	Bandwidth, PacingRate float64
	MinRTT                time.Duration
	// InFlight and InFlightCap are bytes.
	InFlight, InFlightCap int64
}

// PacingOf is the state ps of the session of client at addr.
func PacingOf(client, addr string, ps transport.PaceState) Pacing {
	return Pacing{Client: client, Addr: addr, Mode: ps.Mode, Bandwidth: ps.Bandwidth, PacingRate: ps.PacingRate,
		MinRTT: ps.MinRTT, InFlight: ps.InFlight, InFlightCap: ps.InFlightCap}
}

// pacingModes are the mode label's values.
var pacingModes = []string{"startup", "drain", "probe_bw", "probe_rtt", "fixed", "unpaced"}

var (
	pacingLabels = []string{"client", "addr"}
	pacingBW     = prometheus.NewDesc("warren_kcp_pacing_bandwidth_bits_per_second",
		"Estimated bottleneck bandwidth of a KCP session's path, data bits a second (rate_mbit = \"auto\").", pacingLabels, nil)
	pacingRate = prometheus.NewDesc("warren_kcp_pacing_rate_bits_per_second",
		"Rate new data may enter a KCP session at, bits a second; 0 for unpaced.", pacingLabels, nil)
	pacingMinRTT = prometheus.NewDesc("warren_kcp_pacing_min_rtt_seconds",
		"Smallest round trip of a KCP session seen lately (rate_mbit = \"auto\").", pacingLabels, nil)
	pacingInflight = prometheus.NewDesc("warren_kcp_pacing_inflight_bytes",
		"Data a KCP session sent that is not acknowledged yet, resent copies counted again (rate_mbit = \"auto\").", pacingLabels, nil)
	pacingCap = prometheus.NewDesc("warren_kcp_pacing_inflight_cap_bytes",
		"Most data a KCP session's rate controller lets be in flight (rate_mbit = \"auto\").", pacingLabels, nil)
	pacingMode = prometheus.NewDesc("warren_kcp_pacing_mode",
		"1 for the state a KCP session's rate controller is in (mode label), else 0.", append(pacingLabels, "mode"), nil)
)

// pacingCollector reports the sessions the source lists at each scrape:
// there are series only for sessions up now.
type pacingCollector struct {
	r      *Registry
	mu     sync.Mutex
	source func() []Pacing
}

func (c *pacingCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pacingBW, pacingRate, pacingMinRTT, pacingInflight, pacingCap, pacingMode} {
		ch <- d
	}
}

func (c *pacingCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	source := c.source
	c.mu.Unlock()
	if source == nil {
		return
	}
	seen := make(map[[2]string]bool)
	for _, p := range source() {
		client := c.r.clientLabel(p.Client)
		key := [2]string{client, p.Addr}
		if seen[key] {
			continue // two sessions of one address: a bug, not a scrape error
		}
		seen[key] = true
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, client, p.Addr)
		}
		gauge(pacingBW, p.Bandwidth)
		gauge(pacingRate, p.PacingRate)
		gauge(pacingMinRTT, p.MinRTT.Seconds())
		gauge(pacingInflight, float64(p.InFlight))
		gauge(pacingCap, float64(p.InFlightCap))
		for _, m := range pacingModes {
			v := 0.0
			if m == p.Mode {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(pacingMode, prometheus.GaugeValue, v, client, p.Addr, m)
		}
	}
}

// SetPacingSource makes the warren_kcp_pacing_* metrics list what source
// returns at each scrape: one entry per KCP session up. nil lists none.
func (r *Registry) SetPacingSource(source func() []Pacing) {
	if r == nil {
		return
	}
	r.pacing.mu.Lock()
	r.pacing.source = source
	r.pacing.mu.Unlock()
}
