package hist

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBoundsIncreaseFrom10usTo5000s(t *testing.T) {
	require.Equal(t, 10*time.Microsecond, Bound(0))
	require.Equal(t, 5000*time.Second, Bound(NumBounds-1))
	for i := 1; i < NumBounds; i++ {
		require.Greater(t, Bound(i), Bound(i-1), "bound %d", i)
	}
}

func TestBucketsEdgeValues(t *testing.T) {
	var b Buckets
	cum, n, sum := b.Snapshot()
	require.Len(t, cum, NumBounds)
	require.Zero(t, n)
	require.Zero(t, sum)

	b.Observe(-time.Second)                 // counts as 0: first bucket
	b.Observe(0)                            // first bucket
	b.Observe(10 * time.Microsecond)        // on the bound: inclusive
	b.Observe(10*time.Microsecond + 1)      // second bucket
	b.Observe(5000 * time.Second)           // last bound
	b.Observe(5000*time.Second + 1)         // overflow
	b.Observe(time.Duration(1<<62) + 12345) // huge: overflow
	cum, n, sum = b.Snapshot()
	require.Equal(t, uint64(7), n)
	require.Equal(t, uint64(3), cum[0])
	require.Equal(t, uint64(4), cum[1])
	require.Equal(t, uint64(4), cum[NumBounds-2])
	require.Equal(t, uint64(5), cum[NumBounds-1])
	require.InDelta(t, (10*time.Microsecond+10*time.Microsecond+1+5000*time.Second+5000*time.Second+1).Seconds()+time.Duration(1<<62+12345).Seconds(), sum, 1e3)
}

func TestBucketsEveryBoundIsInclusive(t *testing.T) {
	for i := range NumBounds {
		var b Buckets
		b.Observe(Bound(i))
		cum, _, _ := b.Snapshot()
		if i > 0 {
			require.Zero(t, cum[i-1], "bound %d", i)
		}
		require.Equal(t, uint64(1), cum[i], "bound %d", i)
	}
}

func TestBucketsConcurrentObserve(t *testing.T) {
	var b Buckets
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 1000 {
				b.Observe(time.Duration(i) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	cum, n, sum := b.Snapshot()
	require.Equal(t, uint64(8000), n)
	require.InDelta(t, (8 * time.Duration(999*1000/2) * time.Millisecond).Seconds(), sum, 1e-6)
	require.Equal(t, uint64(8*11), cum[9]) // 0..10ms
}

func BenchmarkBucketsObserve(b *testing.B) {
	var h Buckets
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			h.Observe(d)
			d = (d + 7919*time.Microsecond) % (10 * time.Second)
		}
	})
}

// TestBucketsSumOfLongWaitsDoesNotWrap: the sum was int64 nanoseconds,
// "292 years of observed time", which sounds out of reach but is not: the
// queue's enqueue-to-start histogram counts a delayed job's delay, and jobs
// delayed by an hour add an hour each, so 2.6 million of them (7 hours at
// 100 jobs/s) wrapped the sum negative. Prometheus then saw the _sum
// counter fall (a reset) and every mean computed from it was garbage.
func TestBucketsSumOfLongWaitsDoesNotWrap(t *testing.T) {
	var b Buckets
	const n = 2_600_000
	for range n {
		b.Observe(time.Hour)
	}
	_, count, sum := b.Snapshot()
	require.Equal(t, uint64(n), count)
	require.Positive(t, sum, "the sum wrapped")
	require.InDelta(t, float64(n)*3600, sum, 1, "seconds")
}
