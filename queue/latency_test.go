package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// skewedClock is the real clock moved by an offset the test sets.
type skewedClock struct{ offset atomic.Int64 }

func (c *skewedClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// bucketOf returns how many durations h holds in (lo, hi], which must be
// two of its bounds (lo may be 0).
func bucketOf(t *testing.T, h pool.Histogram, lo, hi time.Duration) uint64 {
	t.Helper()
	var below, upto uint64
	found := false
	for i, b := range h.Bounds {
		if b == lo {
			below = h.Counts[i]
		}
		if b == hi {
			upto, found = h.Counts[i], true
		}
	}
	require.True(t, found, "%s is not a bound", hi)
	return upto - below
}

func TestWorkerHistograms(t *testing.T) {
	for name, newPool := range map[string]newPoolFunc{"miniredis": miniPool, "redis-server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, pool.Config{})
			var clock skewedClock
			q := mustQueue(t, p, "lat", Config{Now: clock.now})
			ctx := context.Background()
			for _, s := range []string{"a", "b", "flaky"} {
				_, err := q.Enqueue(ctx, []byte(s))
				require.NoError(t, err)
			}
			// The jobs start 300ms (and a few real ms) after their enqueue.
			clock.offset.Store(int64(300 * time.Millisecond))
			var flaky atomic.Int32
			g := group(t)
			w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
				if string(j.Payload) == "flaky" && flaky.Add(1) == 1 {
					return errors.New("once")
				}
				return nil
			}, WorkerConfig{Concurrency: 2, Backoff: func(int, error) time.Duration { return 0 }})
			tu.Eventually(t, tu.Wait, "three jobs done, one after a retry", func() bool {
				return w.Stats().Processed == 3
			})
			s := w.Stats()
			require.Equal(t, uint64(3), s.StartDelay.Count, "first runs only: the retry is left out")
			require.Equal(t, uint64(3), bucketOf(t, s.StartDelay, 200*time.Millisecond, 500*time.Millisecond), "%+v", s.StartDelay)
			require.GreaterOrEqual(t, s.StartDelay.Sum, 0.9)
			require.Equal(t, uint64(4), s.Run.Count, "every run, the failed one included")
			require.Equal(t, s.Run.Count, s.Run.Counts[len(s.Run.Counts)-1], "no-op handlers run well under 5000s")
			require.Len(t, s.Run.Bounds, len(s.Run.Counts))

			qs, err := q.Stats(ctx)
			require.NoError(t, err)
			require.NotNil(t, qs.Local)
			require.Equal(t, uint64(3), qs.Local.StartDelay.Count)
			require.Zero(t, qs.OldestReady, "empty ready list")
		})
	}
}

func TestWorkerHistogramsEmpty(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "lat", Config{})
	w, err := newWorker(t, q, func(context.Context, *Job) error { return nil }, WorkerConfig{})
	require.NoError(t, err)
	s := w.Stats()
	for _, h := range []pool.Histogram{s.StartDelay, s.Run} {
		require.Zero(t, h.Count)
		require.Zero(t, h.Sum)
		require.Len(t, h.Counts, len(h.Bounds))
		require.NotEmpty(t, h.Bounds)
	}
}

func TestStatsOldestReady(t *testing.T) {
	for name, newPool := range map[string]newPoolFunc{"miniredis": miniPool, "redis-server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, pool.Config{})
			var clock skewedClock
			q := mustQueue(t, p, "old", Config{Now: clock.now})
			ctx := context.Background()
			clock.offset.Store(int64(-10 * time.Second))
			_, err := q.Enqueue(ctx, []byte("oldest"))
			require.NoError(t, err)
			clock.offset.Store(int64(-2 * time.Second))
			_, err = q.Enqueue(ctx, []byte("newer"))
			require.NoError(t, err)
			// The first delayed job pushes a wake marker at the fetch end:
			// it must be skipped, not read as a job.
			_, err = q.Enqueue(ctx, []byte("later"), Delay(time.Hour))
			require.NoError(t, err)
			tail, err := p.Client().LIndex(ctx, q.k.ready, -1).Result()
			require.NoError(t, err)
			require.Equal(t, wakeMarker, tail)
			clock.offset.Store(0)

			s, err := q.Stats(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(2), s.Ready)
			require.GreaterOrEqual(t, s.OldestReady, 10*time.Second-time.Millisecond)
			require.Less(t, s.OldestReady, 12*time.Second)
		})
	}
}

func TestOldestReadyEdgeValues(t *testing.T) {
	now := time.UnixMilli(1_764_000_000_000)
	job := func(id string, at time.Time) string {
		e := envelope{id: id, maxAttempts: 1, enqueuedAt: at, payload: []byte("x")}
		return string(e.encode())
	}
	for _, c := range []struct {
		name  string
		elems []string
		want  time.Duration
	}{
		{"empty", nil, 0},
		{"only markers", []string{wakeMarker, wakeMarker}, 0},
		{"only malformed", []string{"garbage", "bq1|x"}, 0},
		{"tail is the oldest", []string{job("new", now.Add(-time.Second)), job("old", now.Add(-time.Minute))}, time.Minute},
		{"markers after the tail job", []string{job("a", now.Add(-time.Second)), job("b", now.Add(-3*time.Second)), wakeMarker, wakeMarker}, 3 * time.Second},
		{"malformed at the tail", []string{job("a", now.Add(-time.Second)), "garbage"}, time.Second},
		{"enqueued in the future (clock skew)", []string{job("a", now.Add(time.Hour))}, 0},
		{"a very old job", []string{job("a", now.Add(-400*24*time.Hour))}, 400 * 24 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, oldestReady(c.elems, now))
		})
	}
}

func TestLatencyOffRecordsNothing(t *testing.T) {
	l := latency{off: true}
	l.started(0, time.Now().Add(-time.Second), time.Now)
	l.ran(time.Second)
	_, n, _ := l.startDelay.Snapshot()
	_, m, _ := l.run.Snapshot()
	require.Zero(t, n+m)

	var on latency
	on.started(1, time.Now().Add(-time.Second), time.Now) // a retry
	on.started(0, time.Time{}, time.Now)                  // no enqueue time
	_, n, _ = on.startDelay.Snapshot()
	require.Zero(t, n)
}

// BenchmarkLatencyHooks is what the histograms add to each job of a
// worker: the enqueue-to-start and run observations, with the clock reads
// they need, from 10 goroutines at once (a worker of concurrency 10). The
// reference in the same run is the same loop with the histograms off.
// Compare ns/job with BenchmarkDrain's time per job.
func BenchmarkLatencyHooks(b *testing.B) {
	for _, c := range []struct {
		name string
		off  bool
	}{{"on", false}, {"off", true}} {
		b.Run(c.name, func(b *testing.B) {
			l := latency{off: c.off}
			enq := time.Now()
			b.SetParallelism(5) // 10 goroutines on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					start := time.Now()
					l.started(0, enq, time.Now)
					l.ran(time.Since(start))
				}
			})
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/job")
		})
	}
}
