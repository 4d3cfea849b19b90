// Package metrictest reads a metrics.Registry in tests. It imports no
// package of warren but metrics, so the in-package tests of server and
// client, which the harness cannot serve (it imports them), use it too.
package metrictest

import (
	"testing"

	"github.com/warren-tunnel/warren/metrics"
)

// Value is the value of the sample of metric name whose labels include
// the given name/value pairs (summed over the samples that match), 0 when
// none does.
func Value(t testing.TB, reg *metrics.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue samples
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
