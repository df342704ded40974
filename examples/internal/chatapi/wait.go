package chatapi

import (
	"math/bits"
	"time"
)

// WaitHistogram counts durations in log-linear buckets: 8 per power of two
// from 1µs to ~137s, so a quantile read from it is at most 12.5 % above the
// true value. Counts[i] holds the durations up to WaitBucketUpper(i); the
// service's counts are cumulative, and a client takes the counts of a window
// as the difference of two readings (Sub).
type WaitHistogram struct {
	Counts []uint64 `json:"counts"`
}

const (
	waitSubBits  = 3
	waitSub      = 1 << waitSubBits
	waitMinExp   = 10 // below 2^10 ns: the first waitSub buckets, 128 ns wide
	waitMaxExp   = 37 // at or above 2^37 ns: the last bucket
	WaitBuckets  = (waitMaxExp-waitMinExp)*waitSub + waitSub + 1
	waitMaxBound = time.Duration(1<<63 - 1)
)

// WaitBucket returns the bucket that holds d.
func WaitBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 1<<waitMinExp {
		return int(v >> (waitMinExp - waitSubBits))
	}
	exp := bits.Len64(v) - 1
	if exp >= waitMaxExp {
		return WaitBuckets - 1
	}
	frac := (v >> (exp - waitSubBits)) & (waitSub - 1)
	return waitSub + (exp-waitMinExp)*waitSub + int(frac)
}

// WaitBucketUpper returns the largest duration bucket i holds.
func WaitBucketUpper(i int) time.Duration {
	if i < waitSub {
		return time.Duration((uint64(i)+1)<<(waitMinExp-waitSubBits) - 1)
	}
	if i >= WaitBuckets-1 {
		return waitMaxBound
	}
	i -= waitSub
	exp := waitMinExp + i/waitSub
	lo := uint64(1)<<exp + uint64(i%waitSub)<<(exp-waitSubBits)
	return time.Duration(lo + 1<<(exp-waitSubBits) - 1)
}

// Count returns the number of durations counted.
func (h WaitHistogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Sub returns the counts of h that old, an earlier reading, does not have.
func (h WaitHistogram) Sub(old WaitHistogram) WaitHistogram {
	out := WaitHistogram{Counts: make([]uint64, len(h.Counts))}
	for i, c := range h.Counts {
		if i < len(old.Counts) && old.Counts[i] <= c {
			c -= old.Counts[i]
		}
		out.Counts[i] = c
	}
	return out
}

// Quantile returns an upper bound of the q-quantile (0 < q <= 1), at most
// 12.5 % above the true value, or 0 when nothing was counted.
func (h WaitHistogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := min(max(uint64(q*float64(n)+0.5), 1), n)
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			return WaitBucketUpper(i)
		}
	}
	return waitMaxBound
}
