package memwatch

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// kinds lists the alerts as "+kind" (raised) and "-kind" (cleared).
func kinds(alerts []Alert) []string {
	out := make([]string, len(alerts))
	for i, a := range alerts {
		out[i] = "-" + string(a.Kind)
		if a.Raised {
			out[i] = "+" + string(a.Kind)
		}
	}
	return out
}

func TestGoroutineAlertRaisesOnceAndClearsOnce(t *testing.T) {
	f := newFake()
	var rec recorder
	w := newWatcher(t, f.config(Config{Goroutines: 100, GoroutinesClear: 80, OnAlert: rec.add}))
	sub, err := w.Subscribe(8)
	require.NoError(t, err)
	defer sub.Close()

	// Hovering between the clear and raise thresholds changes nothing.
	for _, n := range []uint64{50, 99, 100, 150, 95, 85, 120, 80, 79, 85, 99, 100} {
		f.clk.Advance(5 * time.Second)
		f.s.Goroutines = n
		w.Tick()
		if n == 150 {
			active := w.Active()
			require.Len(t, active, 1)
			require.Equal(t, AlertGoroutines, active[0].Kind)
			require.Equal(t, 100.0, active[0].Value, "the raising sample")
		}
	}
	got := rec.get()
	require.Equal(t, []string{"+goroutines", "-goroutines", "+goroutines"}, kinds(got))
	require.Equal(t, Alert{
		Kind: AlertGoroutines, Raised: true, Time: got[0].Time, Value: 100, Threshold: 100,
		Message: "100 goroutines (raise at 100, clear below 80)",
	}, got[0])
	require.Equal(t, 79.0, got[1].Value)
	require.Equal(t, 80.0, got[1].Threshold)
	require.Equal(t, uint64(2), w.Stats().AlertsRaised)

	for i := range got {
		a, open := recvAlert(t, sub.C())
		require.True(t, open)
		require.Equal(t, got[i], a, "subscribers see the same alerts in the same order")
	}
	require.Zero(t, sub.Dropped())
}

func TestMemoryHighMeasuresRetainedAgainstTheLimit(t *testing.T) {
	f := newFake()
	var rec recorder
	w := newWatcher(t, f.config(Config{OnAlert: rec.add}))
	tick := func(used, objects, live, limit uint64) {
		f.clk.Advance(5 * time.Second)
		f.s.MemoryUsed, f.s.HeapObjects, f.s.HeapLive, f.s.MemoryLimit = used, objects, live, limit
		w.Tick()
	}

	tick(990*mib, 900*mib, 800*mib, 0) // nothing to measure against
	require.Empty(t, rec.get())

	// Heap at goal under a 1000 MiB limit: memory used is at the limit, but
	// most of the heap is garbage the next cycle frees. Not an alert.
	tick(990*mib, 900*mib, 400*mib, 1000*mib)
	require.Empty(t, rec.get())

	tick(990*mib, 900*mib, 810*mib, 1000*mib) // retained 900 MiB = 90%
	require.Equal(t, []string{"+memory_high"}, kinds(rec.get()))
	a := rec.get()[0]
	require.Equal(t, float64(900*mib), a.Value)
	require.Equal(t, float64(900*mib), a.Threshold)
	require.Equal(t, "retained memory 900.0 MiB is 90% of the 1000.0 MiB limit", a.Message)

	tick(990*mib, 900*mib, 730*mib, 1000*mib) // 820 MiB: below raise, above clear (810)
	require.Len(t, rec.get(), 1)
	tick(990*mib, 900*mib, 700*mib, 1000*mib) // 790 MiB: clears
	require.Equal(t, []string{"+memory_high", "-memory_high"}, kinds(rec.get()))
	require.Equal(t, float64(0.81*1000*mib), rec.get()[1].Threshold)
}

func TestMemoryHighFallsBackToConfiguredLimit(t *testing.T) {
	f := newFake()
	var rec recorder
	w := newWatcher(t, f.config(Config{MemoryLimit: 100 * mib, MemoryHigh: 0.5, MemoryClear: 0.4, OnAlert: rec.add}))
	f.s = Sample{MemoryUsed: 60 * mib, HeapObjects: 50 * mib, HeapLive: 50 * mib}
	w.Tick()
	require.Equal(t, []string{"+memory_high"}, kinds(rec.get()))

	// The runtime's own limit wins over the configured one.
	f.s.MemoryLimit = 1000 * mib
	w.Tick()
	require.Equal(t, []string{"+memory_high", "-memory_high"}, kinds(rec.get()))
}

func TestMemoryHighClearsWhenTheLimitGoesAway(t *testing.T) {
	f := newFake()
	var rec recorder
	w := newWatcher(t, f.config(Config{OnAlert: rec.add}))
	f.s = Sample{MemoryUsed: 95 * mib, HeapObjects: 90 * mib, HeapLive: 90 * mib, MemoryLimit: 100 * mib}
	w.Tick()
	f.s.MemoryLimit = 0
	w.Tick()
	got := rec.get()
	require.Equal(t, []string{"+memory_high", "-memory_high"}, kinds(got))
	require.Equal(t, "no memory limit is set any more", got[1].Message)
}

func TestRetained(t *testing.T) {
	require.Equal(t, uint64(70), Sample{MemoryUsed: 100, HeapObjects: 50, HeapLive: 20}.Retained())
	require.Equal(t, uint64(100), Sample{MemoryUsed: 100, HeapObjects: 20, HeapLive: 50}.Retained(), "no negative garbage")
	require.Zero(t, Sample{MemoryUsed: 10, HeapObjects: 50, HeapLive: 0}.Retained(), "no underflow")
}

// series feeds HeapLive values, 5 s apart, and returns the index of each
// alert transition.
func series(t *testing.T, cfg Config, live func(i int) float64, n int) (w *Watcher, at map[int][]string) {
	t.Helper()
	f := newFake()
	var rec recorder
	cfg.OnAlert = rec.add
	w = newWatcher(t, f.config(cfg))
	at = map[int][]string{}
	seen := 0
	for i := range n {
		f.clk.Advance(5 * time.Second)
		f.s.HeapLive = uint64(max(0, live(i)))
		w.Tick()
		if got := rec.get(); len(got) > seen {
			at[i] = kinds(got[seen:])
			seen = len(got)
		}
	}
	return w, at
}

func TestLeakRaisesGrowthWithinItsWindow(t *testing.T) {
	const window, start = 60, 100
	rng := rand.New(rand.NewPCG(1, 2))
	// 50 MiB ± 2 MiB of noise; from sample `start` a leak of 64 KiB/s
	// (3.75 MiB/min, the default threshold is 1 MiB/min) that stops at 400.
	live := func(i int) float64 {
		v := 50*mib + (rng.Float64()*2-1)*2*mib
		if i >= start {
			v += float64(min(i, 400)-start) * 5 * 64 * kib
		}
		return v
	}
	w, at := series(t, Config{GrowthWindow: window}, live, 600)
	require.Len(t, at, 2, "raised once, cleared once: %v", at)
	var raised, cleared int
	for i, k := range at {
		switch k[0] {
		case "+heap_growth":
			raised = i
		case "-heap_growth":
			cleared = i
		}
	}
	require.Greater(t, raised, start)
	require.Less(t, raised, start+window, "raised within one window of the leak starting")
	require.Greater(t, cleared, 400)
	require.Less(t, cleared, 400+window)

	tr, ok := w.Trend()
	require.True(t, ok)
	require.Equal(t, window, tr.Samples)
	require.Equal(t, float64(5*(window-1)), tr.Seconds)
}

func TestGarbageWorkloadNeverRaisesGrowth(t *testing.T) {
	// A steady workload making garbage and no leak: the live heap at each GC
	// depends on what was in flight, so it wanders around a constant. Noise,
	// a slow oscillation, the occasional GC spike and a burst that comes and
	// goes, over many windows and several seeds.
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 99))
		live := func(i int) float64 {
			v := 80*mib + (rng.Float64()*2-1)*8*mib // ± 8 MiB noise
			v += 4 * mib * float64((i/7)%4)         // a saw-tooth of 28 samples
			if rng.IntN(50) == 0 {
				v += 60 * mib // a GC that caught a large request in flight
			}
			if i%300 >= 250 && i%300 < 260 {
				v += 20 * mib // a burst of ten samples, then back
			}
			return v
		}
		_, at := series(t, Config{GrowthWindow: 60}, live, 1200) // 20 windows
		require.Empty(t, at, "seed %d", seed)
	}
}

func TestOneGCSpikeOrOneStepDoesNotRaiseGrowth(t *testing.T) {
	const window = 60
	// One spike of 1 GiB, in the middle of a flat heap.
	_, at := series(t, Config{GrowthWindow: window}, func(i int) float64 {
		if i == 90 {
			return 1 << 30
		}
		return 100 * mib
	}, 200)
	require.Empty(t, at)

	// One step of 100 MiB that stays: a cache loaded at once. Its median
	// slope passes the threshold while the step is mid-window; the step is
	// not steady growth.
	_, at = series(t, Config{GrowthWindow: window}, func(i int) float64 {
		if i >= 90 {
			return 200 * mib
		}
		return 100 * mib
	}, 200)
	require.Empty(t, at)
}

func TestStaircaseLeakRaisesGrowth(t *testing.T) {
	// A leak in a process that allocates little: the live heap only moves at
	// the GCs the runtime forces every two minutes (24 samples), 4 MiB at a
	// time. It is still steady growth.
	_, at := series(t, Config{GrowthWindow: 60}, func(i int) float64 {
		return 100*mib + float64(i/24)*4*mib
	}, 200)
	require.Len(t, at, 1)
	for _, k := range at {
		require.Equal(t, []string{"+heap_growth"}, k)
	}
}

// The real runtime: a workload that keeps what it allocates raises the growth
// alert within its window; one that allocates as much and keeps nothing
// raises nothing. A GC before each sample makes HeapLive exact, and the
// injected clock puts the samples 5 s apart, so this is fast and does not
// depend on the machine's speed.
func TestRealLeakRaisesAndRealGarbageDoesNot(t *testing.T) {
	const window = 10
	run := func(leak bool, samples int) (raisedAt int, retained [][]byte) {
		now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
		var rec recorder
		w := newWatcher(t, Config{
			GrowthWindow: window,
			Now:          func() time.Time { return now },
			OnAlert:      rec.add,
			Goroutines:   1 << 20, MemoryHigh: 1, // only growth is under test
		})
		raisedAt = -1
		for i := range samples {
			chunk := make([]byte, 2*mib) // 2 MiB per 5 s: 24 MiB/min
			for j := 0; j < len(chunk); j += 4096 {
				chunk[j] = byte(i)
			}
			if leak {
				retained = append(retained, chunk)
			}
			runtime.GC()
			now = now.Add(5 * time.Second)
			w.Tick()
			if raisedAt < 0 && len(rec.get()) > 0 {
				raisedAt = i
			}
		}
		for _, a := range rec.get() {
			require.Equal(t, AlertHeapGrowth, a.Kind, a.Message)
		}
		return raisedAt, retained
	}

	raisedAt, retained := run(true, 2*window)
	require.Equal(t, window-1, raisedAt, "raised as soon as the first window is full")
	runtime.KeepAlive(retained)
	retained = nil

	raisedAt, _ = run(false, 6*window)
	require.Equal(t, -1, raisedAt, "garbage is not a leak")
}
