package admin

import (
	"math"
	"net/http"
	"time"

	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// Worker is what the dashboard reads of a queue worker of this process
// (*queue.Worker): its counters and latency histograms. They count what
// this process ran, not the fleet: fleet-wide rates would need a counter in
// Redis for every job, which the queue does not keep.
type Worker interface {
	Stats() queue.WorkerStats
	Queue() *queue.Queue
}

// Rate windows: a rate is measured against a sample at least
// minRateWindow old, and the samples move on every rateStep, so a page
// refreshed every few seconds shows the rate of the last 5 to 10 seconds
// (at most two rateSteps while refreshes come within one).
const (
	minRateWindow = time.Second
	rateStep      = 5 * time.Second
	// staleRate: samples older than this are dropped rather than averaged
	// over (a page opened after an hour shows no rate, then a fresh one).
	staleRate = time.Minute
)

type counts struct {
	at                      time.Time
	processed, failed, dead uint64
}

// rates keeps, for each worker, the two samples rates are measured from.
// Its work is bounded by the number of workers, fixed at New.
//
// One request at a time samples (sem): a request reads a worker's
// counters and the time while it holds sem, so the samples are in the
// order their counters were read. Without it a request whose counters
// were read before another's sample (descheduled between the two) made a
// window whose end counted less than its start, a difference wrapped
// around to about 1e18 jobs/s. sem is a channel so that a request waiting
// for it gives up at its context's deadline.
type rates struct {
	sem      chan struct{}
	old, new []counts
}

func newRates(n int) *rates {
	return &rates{sem: make(chan struct{}, 1), old: make([]counts, n), new: make([]counts, n)}
}

// below says whether any counter of c is below o's.
func (c counts) below(o counts) bool {
	return c.processed < o.processed || c.failed < o.failed || c.dead < o.dead
}

// observe records cur for worker i at now and returns the rates per second
// since the older sample, and that sample's age (0: no rate yet). The
// caller holds r.sem. Samples that go backwards (a counter below the last
// sample's: the Worker was replaced by a new one; or a time before it: an
// injected clock set back) start the rates again from cur rather than
// measuring across them.
func (r *rates) observe(i int, cur counts) (processed, failed, dead float64, window time.Duration) {
	if n := r.new[i]; !n.at.IsZero() && (cur.at.Sub(n.at) > staleRate || cur.at.Before(n.at) || cur.below(n)) {
		r.old[i], r.new[i] = counts{}, counts{}
	}
	if r.old[i].at.IsZero() {
		r.old[i], r.new[i] = cur, cur
		return 0, 0, 0, 0
	}
	if cur.at.Sub(r.new[i].at) >= rateStep {
		r.old[i], r.new[i] = r.new[i], cur
	}
	o := r.old[i]
	if w := cur.at.Sub(o.at); w >= minRateWindow {
		s := w.Seconds()
		processed, failed, dead, window = float64(cur.processed-o.processed)/s, float64(cur.failed-o.failed)/s, float64(cur.dead-o.dead)/s, w
	}
	return processed, failed, dead, window
}

// quantile reads the q-quantile of a cumulative histogram as the upper
// bound of the bucket it falls in; over is true when it lies above the last
// bound (the value is then that bound).
func quantile(h pool.Histogram, q float64) (d time.Duration, over bool) {
	if h.Count == 0 || len(h.Bounds) == 0 {
		return 0, false
	}
	target := q * float64(h.Count)
	for i, c := range h.Counts {
		if float64(c) >= target && i < len(h.Bounds) {
			return h.Bounds[i], false
		}
	}
	return h.Bounds[len(h.Bounds)-1], true
}

// latencyView is a histogram's quantiles (bucket upper bounds, in ns).
type latencyView struct {
	Count  uint64        `json:"count"`
	P50    time.Duration `json:"p50_ns"`
	P90    time.Duration `json:"p90_ns"`
	P99    time.Duration `json:"p99_ns"`
	Over   bool          `json:"p99_over_last_bound,omitempty"`
	MeanNS float64       `json:"mean_ns"`
}

func latencyOf(h pool.Histogram) latencyView {
	v := latencyView{Count: h.Count}
	v.P50, _ = quantile(h, 0.50)
	v.P90, _ = quantile(h, 0.90)
	v.P99, v.Over = quantile(h, 0.99)
	// A sum that is not finite (encoding/json refuses NaN and ±Inf) leaves
	// the mean out rather than the whole answer.
	if m := h.Sum / float64(h.Count) * 1e9; h.Count > 0 && !math.IsNaN(m) && !math.IsInf(m, 0) {
		v.MeanNS = m
	}
	return v
}

type workerView struct {
	Queue       string `json:"queue"`
	Concurrency int    `json:"concurrency"`
	Busy        int64  `json:"busy"`
	InFlight    int    `json:"in_flight"`
	Processed   uint64 `json:"processed"`
	Failed      uint64 `json:"failed"`
	Retried     uint64 `json:"retried"`
	Dead        uint64 `json:"dead"`
	// Rates per second over RateWindow (0: not measured yet; the next
	// request, a second or more later, has them).
	ProcessedPerSec float64       `json:"processed_per_s"`
	FailedPerSec    float64       `json:"failed_per_s"`
	DeadPerSec      float64       `json:"dead_per_s"`
	RateWindow      time.Duration `json:"rate_window_ns"`
	// StartDelay is enqueue-to-start of first runs; Run, every handler
	// call's duration.
	StartDelay   latencyView `json:"start_delay"`
	Run          latencyView `json:"run"`
	FetcherState string      `json:"fetcher_state"`
}

type workersView struct {
	Scope   string       `json:"scope"`
	Workers []workerView `json:"workers"`
}

func (h *handler) workers(w http.ResponseWriter, r *http.Request) {
	select {
	case h.rates.sem <- struct{}{}:
	case <-r.Context().Done():
		// Another request holds the counters for a moment: come back soon.
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "busy", "gave up waiting for another request reading the workers' counters (admin.Config.Timeout)")
		return
	}
	defer func() { <-h.rates.sem }()
	v := workersView{Scope: "this process", Workers: make([]workerView, len(h.cfg.Workers))}
	for i, wk := range h.cfg.Workers {
		s := wk.Stats()
		now := h.now()
		p, f, d, win := h.rates.observe(i, counts{at: now, processed: s.Processed, failed: s.Failed, dead: s.Dead})
		v.Workers[i] = workerView{
			Queue: wk.Queue().Name(), Concurrency: s.Concurrency, Busy: s.Busy, InFlight: s.InFlight,
			Processed: s.Processed, Failed: s.Failed, Retried: s.Retried, Dead: s.Dead,
			ProcessedPerSec: p, FailedPerSec: f, DeadPerSec: d, RateWindow: win,
			StartDelay: latencyOf(s.StartDelay), Run: latencyOf(s.Run), FetcherState: s.FetcherState,
		}
	}
	writeJSON(w, http.StatusOK, v)
}
