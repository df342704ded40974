package memwatch

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// stopTheWorlds counts the stop-the-world pauses not made by the GC since
// the process started (runtime.ReadMemStats makes one per call).
func stopTheWorlds() uint64 {
	s := []metrics.Sample{{Name: "/sched/pauses/total/other:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return n
}

// measure runs op b.N times, reporting allocations and the stop-the-world
// pauses per op (stw/op).
func measure(b *testing.B, op func()) {
	b.ReportAllocs()
	b.ResetTimer()
	stw0 := stopTheWorlds()
	for range b.N {
		op()
	}
	b.ReportMetric(float64(stopTheWorlds()-stw0)/float64(b.N), "stw/op")
}

// BenchmarkSample measures one sample and, in the same run, the
// runtime.ReadMemStats call it replaces, so the comparison holds on a noisy
// machine. The target for metrics.Read is at most 2 µs and 0 allocs/op.
func BenchmarkSample(b *testing.B) {
	b.Run("metrics.Read", func(b *testing.B) {
		r := newRuntimeReader()
		var s Sample
		measure(b, func() { r.read(&s) })
	})
	b.Run("ReadMemStats", func(b *testing.B) {
		var ms runtime.MemStats
		measure(b, func() { runtime.ReadMemStats(&ms) })
	})
	b.Run("metrics.Read+RSS", func(b *testing.B) {
		r := newRuntimeReader().withRSS(func(err error) { b.Fatal(err) })
		var s Sample
		measure(b, func() { r.read(&s) })
	})
	// A whole Tick at the defaults in steady state: the sample, the history,
	// and the alerts, including the Theil-Sen fit over a full window of 60
	// samples (1770 pairs), with one subscriber.
	b.Run("Tick", func(b *testing.B) {
		w, err := New(Config{})
		if err != nil {
			b.Fatal(err)
		}
		sub, err := w.Subscribe(1)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		for range DefaultGrowthWindow {
			w.Tick()
		}
		measure(b, func() { w.Tick() })
	})
	// The same with a live heap that differs at every sample (a GC every
	// 5 s, with noise) over a full hour of history: the long span then
	// groups 720 readings into 60 medians. The worst case of a Tick.
	b.Run("Tick/noisy-heap", func(b *testing.B) {
		x := uint64(1)
		w, err := New(Config{Source: func(s *Sample) {
			x = x*6364136223846793005 + 1442695040888963407
			s.HeapLive = 200<<20 + x>>40
		}})
		if err != nil {
			b.Fatal(err)
		}
		for range DefaultHistory {
			w.Tick()
		}
		measure(b, func() { w.Tick() })
	})
}
