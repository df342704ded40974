package hist

import (
	"math"
	"sync/atomic"
	"time"
)

// NumBounds is the number of upper bounds of Buckets (an overflow bucket
// follows them).
const NumBounds = 27

// Bound returns the inclusive upper bound of bucket i (0 <= i < NumBounds):
// 1-2-5 steps from 10µs to 5000s, three a decade, the shape Prometheus
// histograms usually have. The bounds are fixed so that every histogram of
// bounded can be summed with every other.
func Bound(i int) time.Duration { return bounds[i] }

// Bounds returns a new slice of the NumBounds bounds.
func Bounds() []time.Duration { return append([]time.Duration(nil), bounds[:]...) }

// bounds is never written (a table, like a string constant).
var bounds = [NumBounds]time.Duration{
	10 * us, 20 * us, 50 * us, 100 * us, 200 * us, 500 * us,
	ms, 2 * ms, 5 * ms, 10 * ms, 20 * ms, 50 * ms, 100 * ms, 200 * ms, 500 * ms,
	s, 2 * s, 5 * s, 10 * s, 20 * s, 50 * s, 100 * s, 200 * s, 500 * s,
	1000 * s, 2000 * s, 5000 * s,
}

const (
	us = time.Microsecond
	ms = time.Millisecond
	s  = time.Second
)

// Buckets counts durations in NumBounds fixed buckets plus an overflow
// bucket, and keeps their sum: what a Prometheus histogram exports. Unlike
// Histogram it answers no quantile; its buckets are the exposition's.
//
// The zero value is empty and ready to use. It is safe for concurrent use;
// Observe is an atomic add, a compare-and-swap and a search of 27 bounds,
// with no lock and no allocation. Memory is fixed (29 words).
type Buckets struct {
	counts [NumBounds + 1]atomic.Uint64
	// sum is the float64 bits of the total in seconds, as Prometheus keeps
	// it. Not int64 nanoseconds: their 292 years are reached in hours by a
	// queue of jobs delayed by an hour (a start delay includes the delay),
	// and a wrapped sum reads as a counter reset.
	sum atomic.Uint64
}

// Observe records one duration; a negative one counts as zero.
func (b *Buckets) Observe(d time.Duration) {
	d = max(d, 0)
	lo, hi := 0, NumBounds // first bound >= d, in [lo, hi]
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bounds[m] < d {
			lo = m + 1
		} else {
			hi = m
		}
	}
	b.counts[lo].Add(1)
	for {
		old := b.sum.Load()
		if b.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d.Seconds())) {
			return
		}
	}
}

// Snapshot returns the cumulative count of each bound (NumBounds values:
// cumulative[i] durations were <= Bound(i)), the count of all durations
// and their sum in seconds. Buckets read one after another while Observe runs may be
// off by the observations in between, never by more.
func (b *Buckets) Snapshot() (cumulative []uint64, count uint64, sum float64) {
	cumulative = make([]uint64, NumBounds)
	for i := range NumBounds {
		count += b.counts[i].Load()
		cumulative[i] = count
	}
	count += b.counts[NumBounds].Load()
	return cumulative, count, math.Float64frombits(b.sum.Load())
}
