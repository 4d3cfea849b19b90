package harness

import (
	"strconv"
	"testing"

	"github.com/warren-tunnel/warren/internal/testutil/metrictest"
	"github.com/warren-tunnel/warren/metrics"
)

func newMetrics(t testing.TB, role string) *metrics.Registry {
	t.Helper()
	reg, err := metrics.New(metrics.Config{Role: role, MaxNames: 1024})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// Metric is the value of the sample of metric name whose labels include
// the given name/value pairs (summed over the samples that match), 0 when
// none does.
func Metric(t testing.TB, reg *metrics.Registry, name string, labels ...string) float64 {
	t.Helper()
	return metrictest.Value(t, reg, name, labels...)
}

// WaitMetric polls until Metric reaches at least min. Metrics have no
// change signal.
func WaitMetric(t testing.TB, reg *metrics.Registry, min float64, name string, labels ...string) {
	t.Helper()
	Poll(t, name, func() (bool, string) {
		v := Metric(t, reg, name, labels...)
		return v >= min, name + strconv.Quote(label(labels)) + " is " + strconv.FormatFloat(v, 'g', -1, 64) + ", want at least " + strconv.FormatFloat(min, 'g', -1, 64)
	})
}

func label(labels []string) string {
	s := ""
	for i := 0; i+1 < len(labels); i += 2 {
		if s != "" {
			s += ","
		}
		s += labels[i] + "=" + labels[i+1]
	}
	return s
}
