package memwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/internal/ring"
	"github.com/bounded-go/bounded/lifecycle"
)

// Defaults filled in by New for zero Config fields.
const (
	DefaultInterval        = 5 * time.Second
	DefaultHistory         = 720 // one hour at DefaultInterval
	DefaultMemoryHigh      = 0.9
	DefaultGoroutines      = 10000
	DefaultGrowthWindow    = 60                  // five minutes at DefaultInterval
	DefaultGrowthRate      = float64(1<<20) / 60 // 1 MiB per minute, in bytes per second
	DefaultGrowthAgreement = 0.75
	DefaultMaxSubscribers  = 16
	DefaultProfileInterval = 10 * time.Minute
)

// MaxGrowthWindow bounds Config.GrowthWindow: each growth estimate looks at
// every pair of its points, n(n-1)/2 of them, on every tick.
const MaxGrowthWindow = 240

// minGrowthWindow is the smallest window a slope means anything over.
const minGrowthWindow = 3

// TaskName is the name of the sampling task Start registers.
const TaskName = "memwatch"

var (
	// ErrInvalidConfig is wrapped by the errors New returns for a Config
	// that cannot work; the message names the field.
	ErrInvalidConfig = errors.New("memwatch: invalid config")
	// ErrAlreadyStarted is returned by a second Start of the same Watcher.
	ErrAlreadyStarted = errors.New("memwatch: already started")
)

// Config configures a Watcher. The zero value is useful: a sample every 5 s,
// an hour of history, the default alert thresholds, no callbacks, no profile
// capture, nothing logged, the wall clock, and the runtime as the source.
type Config struct {
	// Interval between samples once started. Zero means DefaultInterval.
	Interval time.Duration
	// History is how many samples are kept, oldest dropped first. Zero means
	// DefaultHistory. Each sample is about 100 bytes. The long span of the
	// growth alert covers it: with a GC only every 15 minutes or so, an hour
	// holds too few readings, and two hours are needed (see docs/memwatch.md).
	History int

	// MemoryLimit, in bytes, is the limit the memory-high alert measures
	// against when the runtime has no soft limit (GOMEMLIMIT /
	// debug.SetMemoryLimit); when it has one, that wins. Zero means none: with
	// neither, the memory-high alert cannot fire.
	MemoryLimit uint64
	// MemoryHigh raises AlertMemoryHigh when Sample.Retained reaches this
	// fraction of the limit. It must be in (0, 1]; zero means
	// DefaultMemoryHigh.
	MemoryHigh float64
	// MemoryClear clears it once Retained falls below this fraction. It must
	// be below MemoryHigh; zero means 0.9 x MemoryHigh.
	MemoryClear float64

	// Goroutines raises AlertGoroutines when the goroutine count reaches it.
	// Zero means DefaultGoroutines.
	Goroutines int
	// GoroutinesClear clears it once the count falls below this. It must be
	// below Goroutines (or 1 when Goroutines is 1); zero means 0.9 x
	// Goroutines rounded down, at least one below Goroutines and at least 1.
	GoroutinesClear int

	// GrowthWindow is how many of the most recent samples the short
	// live-heap growth estimate looks at, and how many points (medians of
	// consecutive GC readings) the long one over the whole History fits at
	// most. Zero means DefaultGrowthWindow, or History if that is smaller
	// (growth alerts are off when it is below 3). Set explicitly it must be
	// in [3, min(History, MaxGrowthWindow)].
	GrowthWindow int
	// GrowthRate raises AlertHeapGrowth when the live heap grows at least
	// this fast, in bytes per second, over the window or the long span. Zero
	// means DefaultGrowthRate (1 MiB per minute).
	GrowthRate float64
	// GrowthClearRate clears it once the estimate falls below this. It must
	// be below GrowthRate; zero means GrowthRate / 2.
	GrowthClearRate float64
	// GrowthAgreement is the least share of rising pairs a raise also needs:
	// of the span's pairs of points whose live heap differs, the share in
	// which the later one is higher. Noise around a flat heap gives about
	// 0.5, steady growth near 1. It must be in (0.5, 1]; zero means
	// DefaultGrowthAgreement. A raise also needs enough points for the share
	// not to be chance (Trend.Score).
	GrowthAgreement float64

	// OnAlert, if set, is called for every alert raised or cleared, in order,
	// on the goroutine that took the sample (the sampling task, or the caller
	// of Tick). No lock on the Watcher's state is held, so it may call any
	// method except Tick (samples are taken one at a time, and it runs inside
	// one). A slow OnAlert delays the next sample.
	OnAlert func(Alert)
	// MaxSubscribers bounds the number of open Subscriptions. Zero means
	// DefaultMaxSubscribers.
	MaxSubscribers int

	// MaxProfiles is how many heap profiles, captured when an alert is
	// raised, are kept; the oldest is dropped (its file removed) to make room.
	// Zero captures none.
	MaxProfiles int
	// ProfileDir, if set, is where captured profiles are written (it is
	// created if missing); empty keeps them in memory. Profiles a previous
	// process left there count towards MaxProfiles, so restarts do not grow
	// it: give each process its own directory.
	ProfileDir string
	// ProfileInterval is the least time between two captures. Zero means
	// DefaultProfileInterval.
	ProfileInterval time.Duration

	// ReadRSS adds Sample.RSS from /proc/self/statm. It costs three system
	// calls and a few small allocations per sample, which is why it is off.
	ReadRSS bool

	// Source, if set, replaces the runtime as the source of samples: it is
	// called once per sample with Time already set and fills the rest. It is
	// for tests and simulations. Like OnAlert it runs inside Tick, never
	// concurrently with itself, with no lock on the Watcher's state held.
	Source func(*Sample)
	// Logger receives alerts and errors. Nil discards.
	Logger *slog.Logger
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// withDefaults returns c with its zero fields filled in, or an error naming
// every field that cannot work. A threshold that depends on another (a clear
// threshold on its raise threshold) is checked only once the other is valid.
func (c Config) withDefaults() (Config, error) {
	e := check.New(ErrInvalidConfig)
	check.Default(e, &c.Interval, DefaultInterval, "Config.Interval")
	check.Default(e, &c.History, DefaultHistory, "Config.History")
	c.fillMemoryHigh(e)
	c.fillGoroutines(e)
	c.fillGrowthWindow(e)
	c.fillGrowthRates(e)
	c.fillDelivery(e)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, e.Err()
}

// fillMemoryHigh fills and checks the memory-high alert's thresholds.
func (c *Config) fillMemoryHigh(e *check.Errors) {
	if c.MemoryHigh == 0 {
		c.MemoryHigh = DefaultMemoryHigh
	}
	if !(c.MemoryHigh > 0 && c.MemoryHigh <= 1) { // also rejects NaN
		e.Addf("Config.MemoryHigh must be in (0, 1], got %v", c.MemoryHigh)
		return
	}
	if c.MemoryClear == 0 {
		c.MemoryClear = 0.9 * c.MemoryHigh
	}
	if !(c.MemoryClear > 0 && c.MemoryClear < c.MemoryHigh) {
		e.Addf("Config.MemoryClear must be in (0, MemoryHigh=%v), got %v", c.MemoryHigh, c.MemoryClear)
	}
}

// fillGoroutines fills and checks the goroutine alert's thresholds.
func (c *Config) fillGoroutines(e *check.Errors) {
	check.Default(e, &c.Goroutines, DefaultGoroutines, "Config.Goroutines")
	if c.Goroutines < 0 {
		return
	}
	if c.GoroutinesClear == 0 {
		// 90 %, without overflowing, and at least one below Goroutines: for
		// thresholds under 10, Goroutines/10 is 0. A threshold of 1 leaves no
		// room below it; a process always runs a goroutine, so such an alert
		// never clears whatever the clear threshold, and 1 says so.
		c.GoroutinesClear = max(1, c.Goroutines-max(1, c.Goroutines/10))
	}
	if !(c.GoroutinesClear >= 1 && (c.GoroutinesClear < c.Goroutines || c.GoroutinesClear == 1)) {
		e.Addf("Config.GoroutinesClear must be in (0, Goroutines=%d), got %d", c.Goroutines, c.GoroutinesClear)
	}
}

// fillGrowthWindow fills and checks the growth alert's window, which must
// fit in the history.
func (c *Config) fillGrowthWindow(e *check.Errors) {
	switch {
	case c.GrowthWindow == 0:
		c.GrowthWindow = min(DefaultGrowthWindow, c.History)
	case c.GrowthWindow < minGrowthWindow || c.GrowthWindow > MaxGrowthWindow:
		e.Addf("Config.GrowthWindow must be in [%d, %d], got %d", minGrowthWindow, MaxGrowthWindow, c.GrowthWindow)
	case c.History > 0 && c.GrowthWindow > c.History:
		e.Addf("Config.GrowthWindow (%d) must not exceed History (%d)", c.GrowthWindow, c.History)
	}
}

// fillGrowthRates fills and checks the growth alert's thresholds.
func (c *Config) fillGrowthRates(e *check.Errors) {
	if c.GrowthAgreement == 0 {
		c.GrowthAgreement = DefaultGrowthAgreement
	}
	if !(c.GrowthAgreement > 0.5 && c.GrowthAgreement <= 1) {
		e.Addf("Config.GrowthAgreement must be in (0.5, 1], got %v", c.GrowthAgreement)
	}
	if c.GrowthRate == 0 {
		c.GrowthRate = DefaultGrowthRate
	}
	if !(c.GrowthRate > 0 && c.GrowthRate < math.Inf(1)) {
		e.Addf("Config.GrowthRate must be positive, got %v", c.GrowthRate)
		return
	}
	if c.GrowthClearRate == 0 {
		c.GrowthClearRate = c.GrowthRate / 2
	}
	if !(c.GrowthClearRate > 0 && c.GrowthClearRate < c.GrowthRate) {
		e.Addf("Config.GrowthClearRate must be in (0, GrowthRate=%v), got %v", c.GrowthRate, c.GrowthClearRate)
	}
}

// fillDelivery fills and checks where alerts go: subscriptions and heap
// profiles.
func (c *Config) fillDelivery(e *check.Errors) {
	check.Default(e, &c.MaxSubscribers, DefaultMaxSubscribers, "Config.MaxSubscribers")
	if c.MaxProfiles < 0 {
		e.Addf("Config.MaxProfiles must not be negative, got %d", c.MaxProfiles)
	}
	if c.ProfileDir != "" && c.MaxProfiles == 0 {
		e.Addf("Config.ProfileDir is set but MaxProfiles is 0, so no profile would be captured")
	}
	check.Default(e, &c.ProfileInterval, DefaultProfileInterval, "Config.ProfileInterval")
}

// Watcher samples the process's memory on one task, keeps a bounded history,
// raises and clears alerts, and optionally captures heap profiles.
//
// Build one per process with New and pass it to whoever needs it. The zero
// value is not usable. A Watcher is safe for concurrent use. It holds no
// resources of its own: the sampling task belongs to the lifecycle group
// given to Start, and closing that group stops it.
type Watcher struct {
	cfg    Config
	source func(*Sample)

	// tickMu is held for a whole Tick, so that samples, alert transitions
	// and their delivery happen one at a time and in order.
	tickMu  sync.Mutex
	reading Sample // filled by source; guarded by tickMu

	mu       sync.Mutex // guards the fields below; never held while calling out
	started  bool
	history  *ring.Ring[Sample]
	alerts   alerter
	profiles *ring.Ring[Profile]
	stats    Stats

	subs subscribers
	prof profiler
}

// New returns a Watcher configured by cfg, or an error wrapping
// ErrInvalidConfig naming every field at fault. Nothing runs until Start.
// When cfg.ProfileDir is set New creates it, and removes the oldest profiles
// a previous process left there beyond cfg.MaxProfiles.
func New(cfg Config) (*Watcher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	w := &Watcher{
		cfg:      cfg,
		history:  ring.New[Sample](cfg.History),
		profiles: ring.New[Profile](cfg.MaxProfiles),
	}
	w.alerts = newAlerter(&w.cfg)
	w.subs.max = cfg.MaxSubscribers
	w.prof = profiler{dir: cfg.ProfileDir, every: cfg.ProfileInterval, logger: cfg.Logger}
	if err := w.adoptProfiles(); err != nil {
		return nil, err
	}
	w.source = cfg.Source
	if w.source == nil {
		r := newRuntimeReader()
		if cfg.ReadRSS {
			r.withRSS(func(err error) {
				cfg.Logger.Warn("memwatch: cannot read RSS; reporting 0", "err", err)
			})
		}
		w.source = r.read
	}
	return w, nil
}

// Start registers the one task that takes a sample every Config.Interval
// until g is closed, and takes the first sample at once (so OnAlert may run
// before Start returns). It returns ErrAlreadyStarted if the Watcher was
// started before, and the lifecycle error (matching lifecycle.ErrClosed) if
// g is closing, in which case nothing runs and Start may be tried again with
// another group.
func (w *Watcher) Start(g *lifecycle.Group) error {
	if g == nil {
		return errors.New("memwatch: Start: nil lifecycle group")
	}
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return ErrAlreadyStarted
	}
	w.started = true
	w.mu.Unlock()

	err := g.Every(TaskName, w.cfg.Interval, func(context.Context) { w.Tick() })
	if err != nil {
		w.mu.Lock()
		w.started = false
		w.mu.Unlock()
		return fmt.Errorf("memwatch: start: %w", err)
	}
	w.Tick()
	return nil
}

// Tick takes one sample now: it records it in the history, updates the alerts
// and delivers any that were raised or cleared (to Config.OnAlert and the
// subscriptions, then capturing a profile if configured), and returns the
// sample. The sampling task calls it; tests and programs that drive their own
// schedule may call it directly. It must not be called from OnAlert.
//
// Reading the runtime allocates nothing and does not stop the world.
func (w *Watcher) Tick() Sample {
	w.tickMu.Lock()
	defer w.tickMu.Unlock()

	// The source fills a Sample the Watcher owns: a local one would escape
	// through the func value and cost an allocation per sample.
	w.reading = Sample{Time: w.cfg.Now()}
	w.source(&w.reading)
	s := w.reading

	var changed transitions
	w.mu.Lock()
	w.history.Push(s)
	w.stats.Samples++
	w.alerts.evaluate(s, w.history, &changed)
	w.stats.AlertsRaised += uint64(changed.raised())
	w.mu.Unlock()

	if changed.n == 0 {
		return s
	}
	for _, a := range changed.list() {
		w.deliver(a)
	}
	if k, ok := changed.firstRaised(); ok {
		w.captureProfile(s.Time, k)
	}
	return s
}

// Latest returns the most recent sample, or the zero Sample before the first.
func (w *Watcher) Latest() Sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, _ := w.history.Last()
	return s
}

// History returns a copy of the samples kept, oldest first: at most
// Config.History of them.
func (w *Watcher) History() []Sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.history.Slice()
}

// Stats counts what a Watcher has done since New.
type Stats struct {
	Samples             uint64 `json:"samples"`
	AlertsRaised        uint64 `json:"alerts_raised"`
	AlertsDropped       uint64 `json:"alerts_dropped"` // not delivered to a subscription whose buffer was full
	Profiles            uint64 `json:"profiles"`       // heap profiles captured
	ProfilesRateLimited uint64 `json:"profiles_rate_limited"`
	ProfileErrors       uint64 `json:"profile_errors"`
}

// Stats returns the Watcher's counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.statsLocked()
}

func (w *Watcher) statsLocked() Stats {
	st := w.stats
	st.AlertsDropped = w.subs.dropped.Load()
	return st
}
