package admin

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/hist"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// fakeWorker serves set counters, as a *queue.Worker's Stats would.
type fakeWorker struct {
	q *queue.Queue
	s queue.WorkerStats
}

func (f *fakeWorker) Stats() queue.WorkerStats { return f.s }
func (f *fakeWorker) Queue() *queue.Queue      { return f.q }

// histOf builds the cumulative histogram of ds on bounded's bounds.
func histOf(ds ...time.Duration) pool.Histogram {
	var b hist.Buckets
	for _, d := range ds {
		b.Observe(d)
	}
	c, n, sum := b.Snapshot()
	return pool.Histogram{Bounds: hist.Bounds(), Counts: c, Count: n, Sum: sum}
}

func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for range 90 {
		ds = append(ds, 3*time.Millisecond)
	}
	for range 9 {
		ds = append(ds, 30*time.Millisecond)
	}
	ds = append(ds, 2*time.Second)
	h := histOf(ds...)
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.9, 5 * time.Millisecond}, {0.95, 50 * time.Millisecond}, {0.99, 50 * time.Millisecond}, {1, 2 * time.Second}} {
		got, over := quantile(h, c.q)
		require.Equal(t, c.want, got, "q=%v", c.q)
		require.False(t, over)
	}
	got, over := quantile(pool.Histogram{}, 0.99)
	require.Zero(t, got, "an empty histogram")
	require.False(t, over)
	// Above the last bound (5000 s): the last bound, marked over.
	got, over = quantile(histOf(3*time.Hour), 0.99)
	require.True(t, over)
	require.Equal(t, hist.Bounds()[len(hist.Bounds())-1], got)
	v := latencyOf(histOf(10*time.Millisecond, 30*time.Millisecond))
	require.InDelta(t, float64(20*time.Millisecond), v.MeanNS, float64(time.Microsecond))
}

// Rates are deltas over a window of at least a second between two
// requests, from the worker's counters; the first request has none, and a
// sample older than a minute is not averaged over.
func TestWorkersRates(t *testing.T) {
	p := miniPool(t)
	fw := &fakeWorker{q: mustQueue(t, p, "emails")}
	fw.s.Concurrency, fw.s.Processed = 8, 1000
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), Workers: []Worker{fw}})
	clock := testutil.NewClock()
	h.(*handler).now = clock.Now

	worker := func() map[string]any {
		r := get(t, h, "/api/workers")
		require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
		require.Equal(t, "this process", r.body["scope"])
		ws := r.body["workers"].([]any)
		require.Len(t, ws, 1)
		return ws[0].(map[string]any)
	}
	w := worker()
	require.Equal(t, "emails", w["queue"])
	require.EqualValues(t, 1000, w["processed"])
	require.EqualValues(t, 0, w["rate_window_ns"], "no rate from one sample")

	clock.Advance(500 * time.Millisecond)
	fw.s.Processed = 1100
	require.EqualValues(t, 0, worker()["rate_window_ns"], "no rate over less than a second")

	clock.Advance(1500 * time.Millisecond)
	fw.s.Processed, fw.s.Failed, fw.s.Dead = 1400, 10, 2
	w = worker()
	require.EqualValues(t, 2*time.Second, w["rate_window_ns"])
	require.InDelta(t, 200, w["processed_per_s"], 1e-9)
	require.InDelta(t, 5, w["failed_per_s"], 1e-9)
	require.InDelta(t, 1, w["dead_per_s"], 1e-9)

	// The samples move on every 5 s: the window stays within 2 s and two steps,
	// and the rate is the delta since the sample it names.
	seen := map[time.Duration]uint64{0: 1000, 500 * time.Millisecond: 1100, 2 * time.Second: 1400}
	at := 2 * time.Second
	for i := range 8 {
		clock.Advance(3 * time.Second)
		at += 3 * time.Second
		fw.s.Processed += uint64(300 + 100*i)
		seen[at] = fw.s.Processed
		w = worker()
		win := time.Duration(w["rate_window_ns"].(float64))
		require.GreaterOrEqual(t, win, 2*time.Second)
		require.LessOrEqual(t, win, 2*rateStep, "at most two steps while refreshes come within a step")
		from, ok := seen[at-win]
		require.True(t, ok, "the window %v starts at no sample", win)
		require.InDelta(t, float64(fw.s.Processed-from)/win.Seconds(), w["processed_per_s"], 1e-9)
	}

	clock.Advance(2 * time.Minute)
	fw.s.Processed += 1
	require.EqualValues(t, 0, worker()["rate_window_ns"], "a sample older than a minute is dropped")
}

func TestWorkersConfig(t *testing.T) {
	_, err := New(Config{Inspector: mustInspector(t, miniPool(t)), Workers: []Worker{nil}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "Config.Workers[0] is nil")

	h := mustHandler(t, Config{Inspector: mustInspector(t, miniPool(t))})
	r := get(t, h, "/api/workers")
	require.Equal(t, http.StatusOK, r.status)
	require.Empty(t, r.body["workers"])
	require.Equal(t, http.StatusMethodNotAllowed, call(t, h, http.MethodPost, "/api/workers", nil, nil).status)
}
