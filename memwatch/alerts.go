package memwatch

import (
	"fmt"
	"slices"
	"time"

	"github.com/bounded-go/bounded/internal/ring"
	"github.com/bounded-go/bounded/internal/trend"
)

// AlertKind names a condition the Watcher watches for.
type AlertKind string

// The alert kinds, in the order a Watcher evaluates them.
const (
	// AlertMemoryHigh: the memory the process would keep after a collection
	// (Sample.Retained) reached Config.MemoryHigh of the memory limit.
	AlertMemoryHigh AlertKind = "memory_high"
	// AlertGoroutines: the goroutine count reached Config.Goroutines.
	AlertGoroutines AlertKind = "goroutines"
	// AlertHeapGrowth: the live heap grew steadily, at least
	// Config.GrowthRate bytes per second, over the last Config.GrowthWindow
	// samples or over the whole history (see LongTrend).
	AlertHeapGrowth AlertKind = "heap_growth"
)

// Indexes of the alert kinds in alerter.kinds, in evaluation order.
const (
	memoryHighIdx = iota
	goroutinesIdx
	heapGrowthIdx
	numKinds
)

// Alert is a condition being raised or cleared. Each condition is raised once
// when it starts to hold and cleared once when it has clearly stopped (its
// clear threshold is below its raise threshold), so a value hovering around
// a threshold does not produce a stream of alerts.
type Alert struct {
	Kind AlertKind `json:"kind"`
	// Raised is true when the condition started to hold, false when it
	// cleared.
	Raised bool      `json:"raised"`
	Time   time.Time `json:"time"` // of the sample that raised or cleared it
	// Value is the measured quantity (bytes for memory_high, goroutines,
	// bytes per second for heap_growth) and Threshold the one it crossed:
	// the raise threshold when raised, the clear threshold when cleared.
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Message   string  `json:"message"`
}

// Trend is a live-heap growth estimate over a span of the history: the most
// recent Config.GrowthWindow samples (Watcher.Trend) or the whole history
// since the growth alert last cleared (Watcher.LongTrend).
//
// The live heap only changes when a GC cycle ends, so the estimate is fitted
// on points, not samples: one per distinct HeapLive reading (one per cycle).
// Over the long span, when there are more than GrowthWindow such points,
// consecutive ones are grouped into GrowthWindow points, each the median of
// its group.
type Trend struct {
	// BytesPerSecond is the Theil-Sen slope of the points: the median of the
	// slopes between every pair of them. A single outlying point, or a
	// single step, moves it little.
	BytesPerSecond float64 `json:"bytes_per_second"`
	// Agreement is the share of pairs of points with different HeapLive in
	// which the later one is higher: about 0.5 for noise around a flat heap,
	// near 1 for steady growth.
	Agreement float64 `json:"agreement"`
	// Score is the Mann-Kendall score of the points: how many standard
	// deviations their rising pairs lie above what points in random order
	// would give. It weighs Agreement by the number of points: a perfect rise
	// over 4 points scores 2.0, over 10 points 4.0.
	Score   float64 `json:"score"`
	Points  int     `json:"points"`
	Samples int     `json:"samples"`
	Seconds float64 `json:"seconds"` // time the span covers
}

// hysteresis is the raised/cleared state of one alert kind.
type hysteresis struct {
	kind   AlertKind
	raised bool
	alert  Alert // the Alert that raised it, while raised
}

// The least Trend.Score a growth alert needs, over the short and the long
// span. A few points can all rise by chance (4 points in random order do so
// once in 24), which a fixed share of rising pairs cannot tell from a leak; a
// score of 3 is reached by chance about once in 700 fits of independent
// points, 4 once in 30,000. The short window is fitted anew over a span that
// moves on every sample, so it gets many more chances: at 3 it raised on a
// flat heap read every 30 s with ±4 MiB of noise about once a day in
// simulation, at 4 never in that run. The long span's slope threshold
// applies over up to an hour, which noise does not reach.
const (
	minShortScore = 4
	minLongScore  = 3
)

// alerter evaluates the alert conditions on each sample. It allocates only
// when a condition changes (for the message); the growth estimates work in
// scratch space sized once by New.
type alerter struct {
	cfg          *Config
	kinds        [numKinds]hysteresis // in evaluation order
	trend, long  Trend
	haveTrend    bool
	haveLong     bool
	growthByLong bool      // the growth alert was raised by the long span
	evaluated    uint64    // samples evaluated so far
	since        uint64    // the first sample (counted like evaluated) the long span may use
	px, py       []float64 // the points of a span, one per GC reading; History of them at most
	xs, ys       []float64 // the points fitted, GrowthWindow of them at most
	group        []float64 // one group of points, for its median
	slopes       []float64 // one slope per pair of xs
}

func newAlerter(cfg *Config) alerter {
	n := cfg.GrowthWindow
	if n < minGrowthWindow {
		n = 0 // growth alerts off: History too short
	}
	perGroup := 0
	if n > 0 {
		perGroup = (cfg.History + n - 1) / n
	}
	return alerter{
		cfg: cfg,
		kinds: [numKinds]hysteresis{
			memoryHighIdx: {kind: AlertMemoryHigh},
			goroutinesIdx: {kind: AlertGoroutines},
			heapGrowthIdx: {kind: AlertHeapGrowth},
		},
		px:     make([]float64, 0, cfg.History),
		py:     make([]float64, 0, cfg.History),
		xs:     make([]float64, 0, n),
		ys:     make([]float64, 0, n),
		group:  make([]float64, 0, perGroup),
		slopes: make([]float64, 0, n*(n-1)/2),
	}
}

// transitions collects the alerts one sample raised or cleared, without
// allocating.
type transitions struct {
	a [numKinds]Alert
	n int
}

func (t *transitions) add(a Alert)   { t.a[t.n] = a; t.n++ }
func (t *transitions) list() []Alert { return t.a[:t.n] }

func (t *transitions) raised() int {
	n := 0
	for _, a := range t.list() {
		if a.Raised {
			n++
		}
	}
	return n
}

func (t *transitions) firstRaised() (AlertKind, bool) {
	for _, a := range t.list() {
		if a.Raised {
			return a.Kind, true
		}
	}
	return "", false
}

// reading is one evaluation of a condition: whether it now calls for a
// raise or a clear, and what the Alert would report.
type reading struct {
	raise, clear     bool
	value            float64
	raiseAt, clearAt float64 // the thresholds
	message          func() string
}

// step moves kind i to raised when r.raise holds and to cleared when r.clear
// holds, recording the change in out.
func (a *alerter) step(i int, s Sample, r reading, out *transitions) {
	h := &a.kinds[i]
	switch {
	case !h.raised && r.raise:
		h.raised = true
		h.alert = Alert{Kind: h.kind, Raised: true, Time: s.Time, Value: r.value, Threshold: r.raiseAt, Message: r.message()}
		out.add(h.alert)
	case h.raised && r.clear:
		h.raised = false
		out.add(Alert{Kind: h.kind, Raised: false, Time: s.Time, Value: r.value, Threshold: r.clearAt, Message: r.message()})
		h.alert = Alert{}
	}
}

// evaluate updates every alert with sample s, the newest in history.
func (a *alerter) evaluate(s Sample, history *ring.Ring[Sample], out *transitions) {
	cfg := a.cfg

	// Memory high. The quantity is Retained, not MemoryUsed: under a limit
	// the heap grows to its goal and the goal grows to the limit, so
	// MemoryUsed sits near the limit in a healthy process that merely
	// allocates ("heap at goal" is the GC doing its job). What it cannot
	// collect is what is worth an alert. Without a limit there is nothing to
	// measure against, and an alert raised under a limit that was removed
	// clears.
	limit := float64(s.MemoryLimit)
	if limit == 0 {
		limit = float64(cfg.MemoryLimit)
	}
	retained := float64(s.Retained())
	hi, lo := cfg.MemoryHigh*limit, cfg.MemoryClear*limit
	a.step(memoryHighIdx, s, reading{
		raise: limit > 0 && retained >= hi, clear: limit == 0 || retained < lo,
		value: retained, raiseAt: hi, clearAt: lo,
		message: func() string {
			if limit == 0 {
				return "no memory limit is set any more"
			}
			return fmt.Sprintf("retained memory %s is %.0f%% of the %s limit",
				fmtBytes(retained), 100*retained/limit, fmtBytes(limit))
		},
	}, out)

	// Goroutines.
	g := float64(s.Goroutines)
	gHi, gLo := float64(cfg.Goroutines), float64(cfg.GoroutinesClear)
	a.step(goroutinesIdx, s, reading{
		raise: g >= gHi, clear: g < gLo, value: g, raiseAt: gHi, clearAt: gLo,
		message: func() string {
			return fmt.Sprintf("%d goroutines (raise at %d, clear below %d)", s.Goroutines, cfg.Goroutines, cfg.GoroutinesClear)
		},
	}, out)

	a.evaluated++
	a.evaluateGrowth(s, history, out)
}

// growthFit is a Trend with what raising and clearing also look at.
type growthFit struct {
	Trend
	withoutJump float64 // the slope with the largest single rise taken out
}

// evaluateGrowth updates the growth alert. Two spans are fitted:
//   - the short one, the last GrowthWindow samples, which sees a leak within
//     minutes when the GC runs often and the live heap is not too noisy;
//   - the long one, every sample kept since the alert last cleared (up to
//     History, an hour at the defaults), which sees a leak whose growth per
//     window is lost in noise, or which the GC shows only every few minutes
//     (GOGC=off under GOMEMLIMIT, large heaps): a handful of readings per
//     window is too few to tell a trend from chance.
//
// Either may raise the alert; the one that raised it clears it, so a leak
// seen only over the long span is not cleared by a short window that cannot
// see it. A clear restarts the long span, so the growth it has just
// reported as over does not raise the alert again.
func (a *alerter) evaluateGrowth(s Sample, history *ring.Ring[Sample], out *transitions) {
	n := cap(a.xs)
	if n == 0 || history.Len() < n {
		return
	}
	short := a.fit(history, history.Len()-n, minShortScore)
	a.trend, a.haveTrend = short.Trend, true
	long := a.fitLong(history, n)

	f, r := a.decideGrowth(short, long)
	r.message = func() string {
		return fmt.Sprintf("live heap growing %s/min over the last %s (%d samples, %d points, %.0f%% of changes upward), now %s",
			fmtBytes(f.BytesPerSecond*60), time.Duration(f.Seconds*float64(time.Second)).Round(time.Second),
			f.Samples, f.Points, 100*f.Agreement, fmtBytes(float64(s.HeapLive)))
	}
	a.step(heapGrowthIdx, s, r, out)
	if r.clear {
		a.since = a.evaluated
		a.haveLong = false
	}
}

// fitLong fits the long span, which starts at the first sample after the
// last clear, or the oldest kept; it is fitted (and haveLong set) once it is
// longer than the short span of n samples.
func (a *alerter) fitLong(history *ring.Ring[Sample], n int) growthFit {
	first := history.Len() - int(min(a.evaluated-a.since, uint64(history.Len())))
	a.haveLong = history.Len()-first > n
	if !a.haveLong {
		return growthFit{}
	}
	long := a.fit(history, first, minLongScore)
	a.long = long.Trend
	return long
}

// decideGrowth decides, from the fits of the two spans, whether the growth
// alert is raised or cleared, and returns the fit it reports.
func (a *alerter) decideGrowth(short, long growthFit) (growthFit, reading) {
	cfg := a.cfg
	h := &a.kinds[heapGrowthIdx]
	f, r := short, reading{}
	switch {
	case !h.raised && a.qualifies(short, minShortScore):
		r.raise, a.growthByLong = true, false
	case !h.raised && a.haveLong && a.qualifies(long, minLongScore):
		f, r.raise, a.growthByLong = long, true, true
	case h.raised && a.growthByLong:
		f = long // kept: the span only grows while the alert is raised
		r.clear = !a.haveLong || long.BytesPerSecond < cfg.GrowthClearRate
	case h.raised:
		r.clear = short.BytesPerSecond < cfg.GrowthClearRate
	}
	r.value, r.raiseAt, r.clearAt = f.BytesPerSecond, cfg.GrowthRate, cfg.GrowthClearRate
	return f, r
}

// qualifies reports whether fit f raises the growth alert. Raising needs
// four things; clearing needs only the slope to fall.
//   - A fast median slope. One GC spike barely moves it.
//   - Agreement: noise around a flat heap rises and falls about equally, so
//     it never qualifies however its slope happens to land.
//   - A score: enough points that their agreement is not chance.
//   - Growth without the largest jump. A single step up (a cache loaded at
//     once) near the middle of the span moves just over half the pairs and
//     so can move the median; it is not steady growth, and with that one
//     jump taken out nothing is left. A real leak keeps most of its slope.
func (a *alerter) qualifies(f growthFit, minScore float64) bool {
	return a.steep(f, minScore) && f.withoutJump >= a.cfg.GrowthClearRate
}

// steep reports whether f meets the first three conditions of qualifies.
func (a *alerter) steep(f growthFit, minScore float64) bool {
	return f.BytesPerSecond >= a.cfg.GrowthRate && f.Agreement >= a.cfg.GrowthAgreement && f.Score >= minScore
}

// fit estimates the growth of HeapLive over history from index first on.
// It works out the slope without the largest jump only when f is steep
// enough for it to matter (steep, with minScore).
func (a *alerter) fit(history *ring.Ring[Sample], first int, minScore float64) growthFit {
	// One point per GC reading: a run of equal HeapLive is one cycle's.
	t0 := history.At(first).Time
	px, py := a.px[:0], a.py[:0]
	for i := first; i < history.Len(); i++ {
		h := history.At(i)
		if y := float64(h.HeapLive); len(py) == 0 || y != py[len(py)-1] {
			px = append(px, h.Time.Sub(t0).Seconds())
			py = append(py, y)
		}
	}
	// At most cap(xs) points: consecutive groups of equal size, each
	// standing at its middle point with its median value.
	per := (len(px) + cap(a.xs) - 1) / cap(a.xs)
	xs, ys := a.xs[:0], a.ys[:0]
	for i := 0; i < len(px); i += per {
		j := min(i+per, len(px))
		g := append(a.group[:0], py[i:j]...)
		slices.Sort(g)
		m := g[len(g)/2]
		if len(g)%2 == 0 {
			m = (g[len(g)/2-1] + m) / 2
		}
		xs, ys = append(xs, px[i+(j-i)/2]), append(ys, m)
	}
	f := growthFit{Trend: Trend{
		Points:  len(xs),
		Samples: history.Len() - first,
		Seconds: history.At(history.Len() - 1).Time.Sub(t0).Seconds(),
	}}
	if len(xs) < 2 {
		return f // a flat heap, or a single reading: no growth
	}
	f.BytesPerSecond, f.Agreement, _ = trend.TheilSen(xs, ys, a.slopes)
	_, f.Score = trend.MannKendall(ys)
	if a.steep(f, minScore) {
		// Only worth its cost if the rest would raise. A step inside a
		// group leaves its median between the levels before and after it:
		// the step is then the rise over two points.
		f.withoutJump = a.slopeWithoutLargestJump(xs, ys, min(per, 2))
	}
	return f
}

// slopeWithoutLargestJump returns the Theil-Sen slope of xs, ys after
// removing the largest rise over span consecutive points (lowering every
// later point by it, and the points within it to where it started). It
// overwrites ys.
func (a *alerter) slopeWithoutLargestJump(xs, ys []float64, span int) float64 {
	k, jump := 0, 0.0
	for i := span; i < len(ys); i++ {
		if d := ys[i] - ys[i-span]; d > jump {
			k, jump = i, d
		}
	}
	if k > 0 {
		for i := k - span + 1; i < k; i++ {
			ys[i] = ys[k-span]
		}
		for i := k; i < len(ys); i++ {
			ys[i] -= jump
		}
	}
	slope, _, _ := trend.TheilSen(xs, ys, a.slopes)
	return slope
}

// active appends the alerts currently raised to dst.
func (a *alerter) active(dst []Alert) []Alert {
	for _, h := range a.kinds {
		if h.raised {
			dst = append(dst, h.alert)
		}
	}
	return dst
}

// Active returns the alerts raised and not yet cleared, in the order
// memory_high, goroutines, heap_growth. It is never nil.
func (w *Watcher) Active() []Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alerts.active(make([]Alert, 0, numKinds))
}

// Trend returns the latest live-heap growth estimate over the last
// Config.GrowthWindow samples, and false until the history holds that many.
func (w *Watcher) Trend() (Trend, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alerts.trend, w.alerts.haveTrend
}

// LongTrend returns the latest live-heap growth estimate over every sample
// kept since the growth alert last cleared (at most Config.History), and
// false while that span is no longer than Config.GrowthWindow.
func (w *Watcher) LongTrend() (Trend, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alerts.long, w.alerts.haveLong
}

// deliver logs a, passes it to Config.OnAlert and offers it to every
// subscription. No lock of the Watcher is held.
func (w *Watcher) deliver(a Alert) {
	if a.Raised {
		w.cfg.Logger.Warn("memwatch: alert raised", "kind", a.Kind, "value", a.Value, "threshold", a.Threshold, "detail", a.Message)
	} else {
		w.cfg.Logger.Info("memwatch: alert cleared", "kind", a.Kind, "value", a.Value, "threshold", a.Threshold, "detail", a.Message)
	}
	if w.cfg.OnAlert != nil {
		w.cfg.OnAlert(a)
	}
	w.subs.publish(a)
}

// fmtBytes formats a byte count (or rate) with a binary unit.
func fmtBytes(b float64) string {
	const unit = 1024
	neg := b < 0
	if neg {
		b = -b
	}
	i := 0
	for b >= unit && i < 4 {
		b /= unit
		i++
	}
	s := fmt.Sprintf("%.1f %s", b, [...]string{"B", "KiB", "MiB", "GiB", "TiB"}[i])
	if neg {
		return "-" + s
	}
	return s
}
