package memwatch

import (
	"context"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
)

// fake is an injected clock and sample source: each Tick reads fake.s at
// the clock's time.
type fake struct {
	clk *testutil.Clock
	s   Sample
}

func newFake() *fake { return &fake{clk: testutil.NewClock()} }

// config returns c reading from f.
func (f *fake) config(c Config) Config {
	c.Now = f.clk.Now
	c.Source = func(s *Sample) {
		t := s.Time
		*s = f.s
		s.Time = t
	}
	return c
}

// recorder collects alerts from OnAlert.
type recorder struct {
	mu     sync.Mutex
	alerts []Alert
}

func (r *recorder) add(a Alert) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.alerts = append(r.alerts, a)
}

func (r *recorder) get() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Alert(nil), r.alerts...)
}

func newWatcher(t *testing.T, cfg Config) *Watcher {
	t.Helper()
	w, err := New(cfg)
	require.NoError(t, err)
	return w
}

func TestZeroConfigGetsDefaults(t *testing.T) {
	w := newWatcher(t, Config{})
	c := w.cfg
	require.Equal(t, DefaultInterval, c.Interval)
	require.Equal(t, DefaultHistory, c.History)
	require.Equal(t, DefaultMemoryHigh, c.MemoryHigh)
	require.InDelta(t, 0.81, c.MemoryClear, 1e-9)
	require.Equal(t, DefaultGoroutines, c.Goroutines)
	require.Equal(t, 9000, c.GoroutinesClear)
	require.Equal(t, DefaultGrowthWindow, c.GrowthWindow)
	require.Equal(t, DefaultGrowthRate, c.GrowthRate)
	require.Equal(t, DefaultGrowthRate/2, c.GrowthClearRate)
	require.Equal(t, DefaultGrowthAgreement, c.GrowthAgreement)
	require.Equal(t, DefaultMaxSubscribers, c.MaxSubscribers)
	require.Equal(t, DefaultProfileInterval, c.ProfileInterval)
	require.NotNil(t, c.Logger)
	require.NotNil(t, c.Now)
	require.Zero(t, w.profiles.Cap(), "no profile capture unless asked")

	// A short history shortens the default window rather than failing.
	w = newWatcher(t, Config{History: 10})
	require.Equal(t, 10, w.cfg.GrowthWindow)
	w = newWatcher(t, Config{History: 2})
	require.Empty(t, w.alerts.xs, "growth alerts off below 3 samples")
}

func TestBadConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Interval: -time.Second}, "Config.Interval must not be negative, got -1s"},
		{Config{History: -1}, "Config.History must not be negative, got -1"},
		{Config{MemoryHigh: 1.5}, "Config.MemoryHigh must be in (0, 1], got 1.5"},
		{Config{MemoryHigh: -0.1}, "Config.MemoryHigh"},
		{Config{MemoryHigh: math.NaN()}, "Config.MemoryHigh"},
		{Config{MemoryHigh: 0.5, MemoryClear: 0.5}, "Config.MemoryClear must be in (0, MemoryHigh=0.5), got 0.5"},
		{Config{MemoryClear: -1}, "Config.MemoryClear"},
		{Config{Goroutines: -1}, "Config.Goroutines must not be negative, got -1"},
		{Config{Goroutines: 100, GoroutinesClear: 100}, "Config.GoroutinesClear must be in (0, Goroutines=100), got 100"},
		{Config{Goroutines: 5, GoroutinesClear: 5}, "Config.GoroutinesClear must be in (0, Goroutines=5), got 5"},
		{Config{Goroutines: 1, GoroutinesClear: 2}, "Config.GoroutinesClear must be in (0, Goroutines=1), got 2"},
		{Config{GoroutinesClear: -1}, "Config.GoroutinesClear must be in (0, Goroutines=10000), got -1"},
		{Config{GrowthWindow: 2}, "Config.GrowthWindow must be in [3, 240], got 2"},
		{Config{GrowthWindow: 241, History: 1000}, "Config.GrowthWindow must be in [3, 240]"},
		{Config{GrowthWindow: 30, History: 20}, "Config.GrowthWindow (30) must not exceed History (20)"},
		{Config{GrowthRate: -1}, "Config.GrowthRate must be positive"},
		{Config{GrowthRate: math.Inf(1)}, "Config.GrowthRate"},
		{Config{GrowthRate: 100, GrowthClearRate: 200}, "Config.GrowthClearRate must be in (0, GrowthRate=100), got 200"},
		{Config{GrowthAgreement: 0.5}, "Config.GrowthAgreement must be in (0.5, 1], got 0.5"},
		{Config{GrowthAgreement: 1.1}, "Config.GrowthAgreement"},
		{Config{MaxSubscribers: -1}, "Config.MaxSubscribers must not be negative, got -1"},
		{Config{MaxProfiles: -1}, "Config.MaxProfiles must not be negative"},
		{Config{ProfileDir: "x"}, "Config.ProfileDir is set but MaxProfiles is 0"},
		{Config{ProfileInterval: -time.Minute}, "Config.ProfileInterval must not be negative, got -1m0s"},
	} {
		w, err := New(tc.cfg)
		require.Nil(t, w)
		require.ErrorIs(t, err, ErrInvalidConfig, tc.field)
		require.ErrorContains(t, err, "memwatch: invalid config: "+tc.field)
	}
}

// Every field at fault is named at once, each error matching
// ErrInvalidConfig; a clear threshold is not judged against a broken raise
// threshold.
func TestBadConfigNamesEveryField(t *testing.T) {
	_, err := New(Config{Interval: -time.Second, MemoryHigh: 2, MemoryClear: 1.5, MaxProfiles: -1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "Config.Interval")
	require.ErrorContains(t, err, "Config.MemoryHigh")
	require.ErrorContains(t, err, "Config.MaxProfiles")
	require.NotContains(t, err.Error(), "Config.MemoryClear")
}

func TestHistoryKeepsTheNewestOldestFirst(t *testing.T) {
	f := newFake()
	w := newWatcher(t, f.config(Config{History: 5}))
	require.Zero(t, w.Latest())
	require.Empty(t, w.History())
	for i := range 12 {
		f.clk.Advance(5 * time.Second)
		f.s.Goroutines = uint64(i)
		require.Equal(t, uint64(i), w.Tick().Goroutines)
	}
	h := w.History()
	require.Len(t, h, 5)
	for i, s := range h {
		require.Equal(t, uint64(7+i), s.Goroutines)
	}
	require.Equal(t, h[4], w.Latest())
	require.Equal(t, f.clk.Now(), w.Latest().Time)
	require.Equal(t, uint64(12), w.Stats().Samples)
}

func TestStartSamplesOnOneTaskUntilClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWatcher(t, Config{Interval: time.Second})
		g := lifecycle.New()
		require.NoError(t, w.Start(g))
		require.Len(t, w.History(), 1, "Start takes the first sample at once")
		require.ErrorIs(t, w.Start(g), ErrAlreadyStarted)

		tasks := g.Tasks()
		require.Len(t, tasks, 1, "one task, nothing else")
		require.Equal(t, TaskName, tasks[0].Name)
		require.Equal(t, lifecycle.KindEvery, tasks[0].Kind)
		require.Equal(t, time.Second, tasks[0].Interval)

		time.Sleep(3*time.Second + time.Millisecond)
		synctest.Wait()
		require.Len(t, w.History(), 4)

		require.NoError(t, g.Close(context.Background()))
		require.Empty(t, g.Tasks())
		time.Sleep(time.Minute)
		require.Len(t, w.History(), 4, "no sample after Close")
	})
}

func TestStartOnClosedGroupStartsNothing(t *testing.T) {
	w := newWatcher(t, Config{})
	closed := lifecycle.New()
	require.NoError(t, closed.Close(context.Background()))
	err := w.Start(closed)
	require.ErrorIs(t, err, lifecycle.ErrClosed)
	require.ErrorContains(t, err, "memwatch: start:")
	require.Empty(t, w.History())
	require.ErrorContains(t, w.Start(nil), "nil lifecycle group")

	// The failed Start did not use the Watcher up.
	g := lifecycle.New()
	require.NoError(t, w.Start(g))
	require.NoError(t, g.Close(context.Background()))
}

func TestRealTickDoesNotAllocate(t *testing.T) {
	// A full history and a full growth window: the steady state of a
	// long-running Watcher. Counts may be asserted; timings may not.
	w := newWatcher(t, Config{History: 30, GrowthWindow: 30, GrowthRate: 1 << 40})
	for range 30 {
		w.Tick()
	}
	_, ok := w.Trend()
	require.True(t, ok)
	require.Zero(t, testing.AllocsPerRun(100, func() { w.Tick() }))
}

// Issue 14 item 12: a small Goroutines threshold with GoroutinesClear left
// zero used to be rejected by its own computed default (9 - 9/10 = 9).
func TestSmallGoroutineThresholdsGetAUsableDefaultClear(t *testing.T) {
	for g := 1; g <= 20; g++ {
		w, err := New(Config{Goroutines: g})
		require.NoError(t, err, "Goroutines: %d", g)
		c := w.cfg.GoroutinesClear
		require.GreaterOrEqual(t, c, 1, "Goroutines: %d", g)
		if g > 1 {
			require.Less(t, c, g, "Goroutines: %d: the clear threshold lies below the raise threshold", g)
		}
		require.GreaterOrEqual(t, c, g-max(1, g/10), "Goroutines: %d: about 90%%", g)
	}
}
