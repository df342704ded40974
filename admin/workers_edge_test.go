package admin

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/queue"
)

// requireSaneRates checks a worker's rates: finite, not negative, at most
// max per second.
func requireSaneRates(t *testing.T, w map[string]any, max float64, msg string) {
	t.Helper()
	for _, k := range []string{"processed_per_s", "failed_per_s", "dead_per_s"} {
		v, ok := w[k].(float64)
		require.True(t, ok, "%s: %s is %v", msg, k, w[k])
		require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%s: %s is %v", msg, k, v)
		require.GreaterOrEqual(t, v, 0.0, "%s: %s", msg, k)
		require.LessOrEqual(t, v, max, "%s: %s", msg, k)
	}
}

func firstWorker(t *testing.T, h http.Handler) map[string]any {
	t.Helper()
	r := get(t, h, "/api/workers")
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	require.NotNil(t, r.body, "a JSON body, got %q", r.raw)
	ws := r.body["workers"].([]any)
	require.Len(t, ws, 1)
	return ws[0].(map[string]any)
}

// A Worker's counters can go down: an admin.Worker that hands out the
// current *queue.Worker of a component restarted with a new one. The rate
// is then measured again from the new counters, never as a difference that
// wrapped around (1,000 down to 5 read as 1.8e19 jobs/s).
func TestWorkersRateAfterCounterReset(t *testing.T) {
	p := miniPool(t)
	fw := &fakeWorker{q: mustQueue(t, p, "emails")}
	fw.s.Processed, fw.s.Failed, fw.s.Dead = 1000, 40, 4
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), Workers: []Worker{fw}})
	clock := testutil.NewClock()
	h.(*handler).now = clock.Now

	firstWorker(t, h)
	clock.Advance(2 * time.Second)
	fw.s.Processed = 1400
	w := firstWorker(t, h)
	require.InDelta(t, 200, w["processed_per_s"], 1e-9)

	// Restarted: every counter from zero again.
	clock.Advance(2 * time.Second)
	fw.s = queue.WorkerStats{Processed: 5}
	w = firstWorker(t, h)
	requireSaneRates(t, w, 1000, "right after the reset")
	require.EqualValues(t, 0, w["rate_window_ns"], "no rate across a reset")

	clock.Advance(2 * time.Second)
	fw.s.Processed, fw.s.Failed = 105, 2
	w = firstWorker(t, h)
	require.EqualValues(t, 2*time.Second, w["rate_window_ns"], "measured from the first sample after the reset")
	require.InDelta(t, 50, w["processed_per_s"], 1e-9)
	require.InDelta(t, 1, w["failed_per_s"], 1e-9)
}

// A clock that goes back (the handler's is injectable) restarts the
// samples instead of showing no rate until it has caught up again.
func TestWorkersRateAfterClockGoesBack(t *testing.T) {
	p := miniPool(t)
	fw := &fakeWorker{q: mustQueue(t, p, "emails")}
	h := mustHandler(t, Config{Inspector: mustInspector(t, p), Workers: []Worker{fw}})
	clock := testutil.NewClock()
	h.(*handler).now = clock.Now

	firstWorker(t, h)
	clock.Advance(2 * time.Second)
	fw.s.Processed = 400
	require.InDelta(t, 200, firstWorker(t, h)["processed_per_s"], 1e-9)

	clock.Advance(-time.Hour)
	fw.s.Processed = 500
	w := firstWorker(t, h)
	requireSaneRates(t, w, 1000, "after the clock went back")
	require.EqualValues(t, 0, w["rate_window_ns"], "no window ending before it starts")

	clock.Advance(2 * time.Second)
	fw.s.Processed = 700
	w = firstWorker(t, h)
	require.EqualValues(t, 2*time.Second, w["rate_window_ns"])
	require.InDelta(t, 100, w["processed_per_s"], 1e-9)
}

// gatedWorker's Stats can be held after it has read its counters, as a
// goroutine can be descheduled there.
type gatedWorker struct {
	q    *queue.Queue
	mu   sync.Mutex
	s    queue.WorkerStats
	hold chan struct{} // the next Stats call closes read and waits for release
	read chan struct{}
}

func (g *gatedWorker) Queue() *queue.Queue { return g.q }
func (g *gatedWorker) Stats() queue.WorkerStats {
	g.mu.Lock()
	s, hold, read := g.s, g.hold, g.read
	g.hold = nil
	g.mu.Unlock()
	if hold != nil {
		close(read)
		<-hold
	}
	return s
}

func (g *gatedWorker) set(processed uint64) {
	g.mu.Lock()
	g.s.Processed = processed
	g.mu.Unlock()
}

// A request whose counters were read before those of requests that
// finished first (concurrent refreshes of the page) must not measure its
// rate against their newer samples: the difference would go below zero
// and wrap around.
func TestWorkersRateConcurrentRequests(t *testing.T) {
	p := miniPool(t)
	in := mustInspector(t, p)
	q := mustQueue(t, p, "emails")
	synctest.Test(t, func(t *testing.T) {
		gw := &gatedWorker{q: q}
		h := mustHandler(t, Config{Inspector: in, Workers: []Worker{gw}})
		clock := testutil.NewClock()
		h.(*handler).now = clock.Now

		serve := func() *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/workers", nil))
			return rec
		}
		var mu sync.Mutex
		var recs []*httptest.ResponseRecorder
		var wg sync.WaitGroup
		goServe := func() {
			wg.Go(func() {
				rec := serve()
				mu.Lock()
				recs = append(recs, rec)
				mu.Unlock()
			})
		}

		gw.set(100)
		firstWorker(t, h) // the first sample: 100 at T0
		gw.mu.Lock()
		gw.hold, gw.read = make(chan struct{}), make(chan struct{})
		release, read := gw.hold, gw.read
		gw.mu.Unlock()
		gw.set(150)
		goServe() // A: reads 150 and is held
		testutil.Recv(t, read, "request A reading the counters")
		// Requests that come later, each a rate step after the last.
		for _, n := range []uint64{200, 300} {
			clock.Advance(rateStep + time.Second)
			gw.set(n)
			goServe()
			synctest.Wait()
		}
		close(release)
		wg.Wait()
		require.Len(t, recs, 3)
		for i, rec := range recs {
			require.Equal(t, http.StatusOK, rec.Code, "response %d: %s", i, rec.Body)
			var body struct{ Workers []map[string]any }
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), "response %d: %s", i, rec.Body)
			require.Len(t, body.Workers, 1)
			// The counters rose by 200 over 12 s: nothing near 1.8e19/s.
			requireSaneRates(t, body.Workers[0], 200, fmt.Sprintf("response %d", i))
		}
		w := firstWorker(t, h)
		requireSaneRates(t, w, 200, "the next request")
	})
}

// A request waiting for another that is stuck reading a worker's counters
// gives up at admin.Config.Timeout with a 503 that says why.
func TestWorkersGivesUpWaiting(t *testing.T) {
	p := miniPool(t)
	in := mustInspector(t, p)
	q := mustQueue(t, p, "emails")
	synctest.Test(t, func(t *testing.T) {
		gw := &gatedWorker{q: q, hold: make(chan struct{}), read: make(chan struct{})}
		release, read := gw.hold, gw.read
		h := mustHandler(t, Config{Inspector: in, Workers: []Worker{gw}, Timeout: time.Second})
		done := make(chan int, 1)
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/workers", nil))
			done <- rec.Code
		}()
		testutil.Recv(t, read, "the first request reading the counters")
		start := time.Now()
		r := get(t, h, "/api/workers")
		require.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.raw)
		require.Equal(t, "busy", r.body["code"])
		require.Equal(t, "1", r.header.Get("Retry-After"), "a 503 says when to come back")
		require.Contains(t, r.body["error"], "another request reading the workers' counters")
		require.Equal(t, time.Second, time.Since(start), "gave up at the timeout")
		close(release)
		require.Equal(t, http.StatusOK, testutil.Recv(t, done, "the held request's answer"))
	})
}

// A histogram whose sum is not finite (a Worker of another implementation;
// encoding/json refuses NaN and ±Inf) must not cost the whole answer: the
// mean is left out (0), the quantiles still shown.
func TestWorkersNonFiniteSum(t *testing.T) {
	p := miniPool(t)
	for _, sum := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		fw := &fakeWorker{q: mustQueue(t, p, "emails")}
		fw.s.Run = histOf(3 * time.Millisecond)
		fw.s.Run.Sum = sum
		h := mustHandler(t, Config{Inspector: mustInspector(t, p), Workers: []Worker{fw}})
		w := firstWorker(t, h)
		run := w["run"].(map[string]any)
		require.EqualValues(t, 0, run["mean_ns"], "sum %v", sum)
		require.EqualValues(t, 5*time.Millisecond, run["p50_ns"], "sum %v", sum)
	}
}

// An answer that cannot be encoded is a 500 that says so, never a 200 with
// an empty or cut body.
func TestWriteJSONUnencodable(t *testing.T) {
	rec := httptest.NewRecorder()
	writeJSON(rec, http.StatusOK, map[string]float64{"rate": math.NaN()})
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	var e errorView
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), "%s", rec.Body)
	require.Equal(t, "internal", e.Code)
	require.Contains(t, e.Error, "could not be encoded as JSON")
	require.Contains(t, e.Error, "NaN")
}
