package main

import (
	"math"
	"slices"
	"time"
)

// Summary describes a set of latency samples, in microseconds.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
}

// Percentile returns the q-quantile (0 <= q <= 1) of sorted by the
// nearest-rank method: the smallest sample such that at least q of all
// samples are at or below it. It returns NaN for no samples.
func Percentile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(q*float64(n) - 1e-9))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summarize sorts the samples (in place) and returns their summary in
// microseconds.
func Summarize(samples []time.Duration) Summary {
	us := make([]float64, len(samples))
	for i, d := range samples {
		us[i] = float64(d.Nanoseconds()) / 1e3
	}
	return SummarizeFloats(us)
}

// SummarizeFloats is Summarize for samples already in microseconds; it
// sorts them in place.
func SummarizeFloats(us []float64) Summary {
	if len(us) == 0 {
		return Summary{} // N == 0: no figures (JSON has no NaN)
	}
	slices.Sort(us)
	sum := 0.0
	for _, v := range us {
		sum += v
	}
	return Summary{
		N:    len(us),
		Min:  us[0],
		Mean: sum / float64(len(us)),
		P50:  Percentile(us, 0.50),
		P90:  Percentile(us, 0.90),
		P99:  Percentile(us, 0.99),
		P999: Percentile(us, 0.999),
		Max:  us[len(us)-1],
	}
}

// Median returns the median of xs (the mean of the middle two for an even
// count), without changing xs; NaN for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Rate returns count per second over d; 0 when d is not positive.
func Rate(count float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return count / d.Seconds()
}

// CPUPerGB is CPU seconds per 1e9 bytes moved; 0 when nothing moved.
func CPUPerGB(cpuSeconds float64, bytes int64) float64 {
	if bytes <= 0 {
		return 0
	}
	return cpuSeconds / (float64(bytes) / 1e9)
}
