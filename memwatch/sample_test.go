package memwatch

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRuntimeReaderIsSane(t *testing.T) {
	runtime.GC()
	r := newRuntimeReader().withRSS(func(err error) { t.Error(err) })
	var s Sample
	r.read(&s)
	require.NotZero(t, s.HeapLive)
	require.NotZero(t, s.HeapObjects)
	require.GreaterOrEqual(t, s.HeapGoal, s.HeapLive)
	require.Greater(t, s.MemoryUsed, s.HeapObjects)
	require.NotZero(t, s.GCCycles)
	require.GreaterOrEqual(t, s.Goroutines, uint64(2))
	require.Zero(t, s.GCCPUFraction, "no previous sample to measure against")
	if lim := debug.SetMemoryLimit(-1); lim == math.MaxInt64 {
		require.Zero(t, s.MemoryLimit)
	} else {
		require.Equal(t, uint64(lim), s.MemoryLimit)
	}
	gogc := debug.SetGCPercent(100)
	debug.SetGCPercent(gogc)
	require.Equal(t, int64(gogc), s.GOGC)
	if runtime.GOOS == "linux" {
		require.Greater(t, s.RSS, s.HeapObjects, "RSS from /proc/self/statm")
	}

	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 64<<10))
	}
	runtime.GC()
	var s2 Sample
	r.read(&s2)
	runtime.KeepAlive(keep)
	require.Greater(t, s2.GCCycles, s.GCCycles)
	require.Greater(t, s2.HeapLive, s.HeapLive+3<<20)
	require.GreaterOrEqual(t, s2.GCCPUFraction, 0.0)
	require.LessOrEqual(t, s2.GCCPUFraction, 1.0)
}

func TestStatmResident(t *testing.T) {
	for _, tc := range []struct {
		in    string
		pages uint64
		ok    bool
	}{
		{"765 424 396 5 0 123 0\n", 424, true},
		{"1 2", 2, true},
		{"1  2 3", 2, true},
		{"1", 0, false},
		{"", 0, false},
		{"1 x 3", 0, false},
	} {
		pages, ok := statmResident([]byte(tc.in))
		require.Equal(t, tc.ok, ok, tc.in)
		require.Equal(t, tc.pages, pages, tc.in)
	}
}

func TestUnreadableRSSReportsZeroOnce(t *testing.T) {
	var errs int
	r := newRuntimeReader().withRSS(func(error) { errs++ })
	r.statm = t.TempDir() + "/missing"
	var s Sample
	r.read(&s)
	r.read(&s)
	require.Zero(t, s.RSS)
	require.Equal(t, 1, errs)
	require.NotZero(t, s.HeapLive, "the rest of the sample is still read")
}
