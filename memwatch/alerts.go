package memwatch

import (
	"fmt"
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
	// samples.
	AlertHeapGrowth AlertKind = "heap_growth"
)

const numKinds = 3

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

// Trend is the live-heap growth estimate over the most recent
// Config.GrowthWindow samples.
type Trend struct {
	// BytesPerSecond is the Theil-Sen slope of HeapLive: the median of the
	// slopes between every pair of samples in the window. A single outlying
	// sample, or a single step, moves it little.
	BytesPerSecond float64 `json:"bytes_per_second"`
	// Agreement is the share of the window's pairs of samples with different
	// HeapLive in which the later one is higher: about 0.5 for noise around a
	// flat heap, near 1 for steady growth.
	Agreement float64 `json:"agreement"`
	Samples   int     `json:"samples"`
	Seconds   float64 `json:"seconds"` // time the window spans
}

// hysteresis is the raised/cleared state of one alert kind.
type hysteresis struct {
	kind   AlertKind
	raised bool
	alert  Alert // the Alert that raised it, while raised
}

// alerter evaluates the alert conditions on each sample. It allocates only
// when a condition changes (for the message); the growth estimate works in
// scratch space sized once by New.
type alerter struct {
	cfg       *Config
	kinds     [numKinds]hysteresis // in evaluation order
	trend     Trend
	haveTrend bool
	xs, ys    []float64 // the window, in seconds and bytes
	slopes    []float64 // one slope per pair of the window
}

func newAlerter(cfg *Config) alerter {
	n := cfg.GrowthWindow
	if n < minGrowthWindow {
		n = 0 // growth alerts off: History too short
	}
	return alerter{
		cfg:    cfg,
		kinds:  [numKinds]hysteresis{{kind: AlertMemoryHigh}, {kind: AlertGoroutines}, {kind: AlertHeapGrowth}},
		xs:     make([]float64, n),
		ys:     make([]float64, n),
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

// step moves kind i to raised when raise holds and to cleared when clear
// holds, recording the change in out.
func (a *alerter) step(i int, s Sample, raise, clear bool, value, raiseAt, clearAt float64,
	message func() string, out *transitions) {
	h := &a.kinds[i]
	switch {
	case !h.raised && raise:
		h.raised = true
		h.alert = Alert{Kind: h.kind, Raised: true, Time: s.Time, Value: value, Threshold: raiseAt, Message: message()}
		out.add(h.alert)
	case h.raised && clear:
		h.raised = false
		out.add(Alert{Kind: h.kind, Raised: false, Time: s.Time, Value: value, Threshold: clearAt, Message: message()})
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
	a.step(0, s, limit > 0 && retained >= hi, limit == 0 || retained < lo, retained, hi, lo, func() string {
		if limit == 0 {
			return "no memory limit is set any more"
		}
		return fmt.Sprintf("retained memory %s is %.0f%% of the %s limit",
			fmtBytes(retained), 100*retained/limit, fmtBytes(limit))
	}, out)

	// Goroutines.
	g := float64(s.Goroutines)
	gHi, gLo := float64(cfg.Goroutines), float64(cfg.GoroutinesClear)
	a.step(1, s, g >= gHi, g < gLo, g, gHi, gLo, func() string {
		return fmt.Sprintf("%d goroutines (raise at %d, clear below %d)", s.Goroutines, cfg.Goroutines, cfg.GoroutinesClear)
	}, out)

	// Live-heap growth, once the window is full.
	n := len(a.xs)
	if n == 0 || history.Len() < n {
		return
	}
	first := history.Len() - n
	t0 := history.At(first).Time
	for i := range n {
		h := history.At(first + i)
		a.xs[i] = h.Time.Sub(t0).Seconds()
		a.ys[i] = float64(h.HeapLive)
	}
	slope, agree, ok := trend.TheilSen(a.xs, a.ys, a.slopes)
	if !ok {
		return
	}
	a.trend = Trend{BytesPerSecond: slope, Agreement: agree, Samples: n, Seconds: a.xs[n-1]}
	a.haveTrend = true
	// Raising needs three things; clearing needs only the slope to fall.
	//  - A fast median slope. One GC spike barely moves it.
	//  - Agreement: noise around a flat heap rises and falls about equally,
	//    so it never qualifies however its slope happens to land.
	//  - Growth without the largest jump. A single step up (a cache loaded
	//    at once) near the middle of the window moves just over half the
	//    pairs and so can move the median; it is not steady growth, and with
	//    that one jump taken out nothing is left. A real leak, even one seen
	//    as a staircase of a few GC cycles, keeps most of its slope.
	raise := slope >= cfg.GrowthRate && agree >= cfg.GrowthAgreement &&
		a.slopeWithoutLargestJump() >= cfg.GrowthClearRate
	a.step(2, s, raise, slope < cfg.GrowthClearRate,
		slope, cfg.GrowthRate, cfg.GrowthClearRate, func() string {
			return fmt.Sprintf("live heap growing %s/min over the last %s (%d samples, %.0f%% of changes upward), now %s",
				fmtBytes(slope*60), time.Duration(a.xs[n-1]*float64(time.Second)).Round(time.Second),
				n, 100*agree, fmtBytes(float64(s.HeapLive)))
		}, out)
}

// slopeWithoutLargestJump returns the Theil-Sen slope of the window after
// removing the largest rise between consecutive samples (lowering every later
// sample by it). It overwrites a.ys.
func (a *alerter) slopeWithoutLargestJump() float64 {
	k, jump := 0, 0.0
	for i := 1; i < len(a.ys); i++ {
		if d := a.ys[i] - a.ys[i-1]; d > jump {
			k, jump = i, d
		}
	}
	for i := k; k > 0 && i < len(a.ys); i++ {
		a.ys[i] -= jump
	}
	slope, _, _ := trend.TheilSen(a.xs, a.ys, a.slopes)
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

// Trend returns the latest live-heap growth estimate, and false until the
// history holds a full Config.GrowthWindow of samples.
func (w *Watcher) Trend() (Trend, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alerts.trend, w.alerts.haveTrend
}

// deliver logs a, passes it to Config.OnAlert and offers it to every
// subscription. No lock of the Watcher is held.
func (w *Watcher) deliver(a Alert) {
	if a.Raised {
		w.cfg.Logger.Warn("memwatch: alert raised", "kind", a.Kind, "value", a.Value, "threshold", a.Threshold, "msg", a.Message)
	} else {
		w.cfg.Logger.Info("memwatch: alert cleared", "kind", a.Kind, "value", a.Value, "threshold", a.Threshold, "msg", a.Message)
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
