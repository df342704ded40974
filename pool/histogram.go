package pool

import (
	"time"

	"github.com/bounded-go/bounded/internal/hist"
)

// Histogram is a snapshot of durations counted in fixed buckets, what a
// Prometheus histogram exports: Counts[i] durations were at most
// Bounds[i] (cumulative), Count were observed in all (those above the
// last bound included), and Sum is their total in seconds (a float64, as
// Prometheus keeps it: a time.Duration would wrap after 292 years of
// observed time, which a queue of jobs delayed by an hour sums in hours). The bounds are the same
// everywhere in bounded (1-2-5 steps from 10µs to 5000s), so histograms
// of several lanes or workers can be added bucket by bucket.
//
// Its zero value is an empty histogram. It is a copy: nothing changes it
// after it was returned. The queue package's worker histograms have the
// same type.
type Histogram struct {
	Bounds []time.Duration `json:"bounds_ns"`
	Counts []uint64        `json:"counts"`
	Count  uint64          `json:"count"`
	Sum    float64         `json:"sum_seconds"`
}

// snapshot copies b.
func snapshot(b *hist.Buckets) Histogram {
	counts, n, sum := b.Snapshot()
	return Histogram{Bounds: hist.Bounds(), Counts: counts, Count: n, Sum: sum}
}

// Add adds o's counts to h's, bucket by bucket (for workers or lanes
// summed). An empty h takes o's bounds.
func (h *Histogram) Add(o Histogram) {
	if len(h.Counts) == 0 {
		h.Bounds = append([]time.Duration(nil), o.Bounds...)
		h.Counts = make([]uint64, len(o.Counts))
	}
	for i := range min(len(h.Counts), len(o.Counts)) {
		h.Counts[i] += o.Counts[i]
	}
	h.Count += o.Count
	h.Sum += o.Sum
}
