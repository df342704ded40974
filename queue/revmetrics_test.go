package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// TestStatsOldestReadyBehindManyMarkers: Stats read the oldest ready job
// among the last 8 elements only, so 8 wake markers at the tail (each
// stopping process's scheduler pushes one with RPUSH when it knew of
// delayed jobs: 8 processes scaled to zero) hid a backlog: Ready said 1
// and OldestReady 0, the "no job waits" value, while no consumer was left
// to run anything, the very moment an age alert is for.
func TestStatsOldestReadyBehindManyMarkers(t *testing.T) {
	for name, newPool := range map[string]newPoolFunc{"miniredis": miniPool, "redis-server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, pool.Config{})
			var clock skewedClock
			q := mustQueue(t, p, "oldm", Config{Now: clock.now})
			ctx := context.Background()
			clock.offset.Store(int64(-time.Minute))
			_, err := q.Enqueue(ctx, []byte("waiting"))
			require.NoError(t, err)
			clock.offset.Store(0)
			for range 2 * oldestScan {
				require.NoError(t, p.Client().RPush(ctx, q.k.ready, wakeMarker).Err()) // what handOver pushes
			}
			s, err := q.Stats(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(1), s.Ready)
			require.GreaterOrEqual(t, s.OldestReady, time.Minute-time.Millisecond)
			require.Less(t, s.OldestReady, time.Minute+5*time.Second)
		})
	}
}

func TestBehindMarkersEdgeValues(t *testing.T) {
	for _, c := range []struct {
		name      string
		positions []int64
		length    int64
		want      int64
	}{
		{"empty list", nil, 0, -1},
		{"no marker", nil, 5, 4},
		{"only markers", []int64{2, 1, 0}, 3, -1},
		{"markers at the tail", []int64{9, 8, 7}, 10, 6},
		{"a marker apart from the tail", []int64{9, 5}, 10, 8},
		{"no marker at the tail", []int64{3}, 10, 9},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, behindMarkers(c.positions, c.length))
		})
	}
}
