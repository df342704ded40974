package pool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

func TestWaitTimeHistogramCountsEveryAcquisition(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, Request: LaneConfig{Size: 1, MaxWait: 30 * time.Millisecond}})
	h := p.Stats().Request.WaitTime
	require.Zero(t, h.Count, "nothing acquired yet")
	require.Len(t, h.Bounds, len(h.Counts))
	require.Equal(t, 10*time.Microsecond, h.Bounds[0])

	ctx := context.Background()
	require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err())
	release := holdLane(p.request, 1)
	require.ErrorIs(t, p.Client().Get(ctx, "k").Err(), ErrLaneExhausted)
	release()

	h = p.Stats().Request.WaitTime
	require.Equal(t, uint64(2), h.Count, "a zero wait and a timed-out wait")
	require.GreaterOrEqual(t, h.Sum, 0.030)
	require.Equal(t, h.Count, h.Counts[len(h.Counts)-1], "nothing above 5000s")
	for i, b := range h.Bounds {
		if b < 30*time.Millisecond {
			require.LessOrEqual(t, h.Counts[i], uint64(1), "bound %s holds only the zero wait", b)
		}
	}
	require.Equal(t, uint64(1), h.Counts[0], "the zero wait")

	var sum Histogram
	sum.Add(h)
	sum.Add(h)
	require.Equal(t, 2*h.Count, sum.Count)
	require.InDelta(t, 2*h.Sum, sum.Sum, 1e-12)
	require.Equal(t, 2*h.Counts[0], sum.Counts[0])
	require.Equal(t, h.Bounds, sum.Bounds)
	sum.Bounds[0] = 0
	require.Equal(t, 10*time.Microsecond, h.Bounds[0], "Add copies the bounds")
}
