package hist

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBucketsCoverValues(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 127, 128, 1023, 1024, 1500, time.Microsecond * 3,
		time.Millisecond, 1234567 * time.Nanosecond, time.Second, time.Minute, 200 * time.Second} {
		i := index(d)
		require.GreaterOrEqual(t, upper(i), d, "value %v bucket %d", d, i)
		if i > 0 && i < nBuckets-1 {
			require.Less(t, upper(i-1), d, "value %v must not fit the bucket below", d)
		}
	}
	for i := 1; i < nBuckets; i++ {
		require.Greater(t, upper(i), upper(i-1), "bounds increase at %d", i)
	}
}

func TestQuantileWithinOneEighth(t *testing.T) {
	var h Histogram
	require.Zero(t, h.Quantile(0.99))
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 100000)
	for i := range vals {
		vals[i] = time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		h.Observe(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		require.GreaterOrEqual(t, got, exact*99/100, "q=%v", q)
		require.LessOrEqual(t, got, exact*1125/1000+time.Microsecond, "q=%v", q)
	}
	require.Equal(t, uint64(len(vals)), h.Count())
}

func TestConcurrentObserve(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.Observe(time.Duration(i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	require.Equal(t, uint64(8000), h.Count())
}
