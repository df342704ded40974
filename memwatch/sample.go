package memwatch

import (
	"errors"
	"math"
	"os"
	"runtime/metrics"
	"time"
)

// Sample is one reading of the process's memory, taken from runtime/metrics.
// It is a plain value: copying it copies everything.
type Sample struct {
	// Time is when the sample was taken (Config.Now).
	Time time.Time `json:"time"`
	// HeapLive is the heap marked live by the last completed GC cycle
	// (/gc/heap/live:bytes). It changes only when a cycle ends and does not
	// include garbage, which makes it the quantity to fit a leak slope on.
	HeapLive uint64 `json:"heap_live_bytes"`
	// HeapObjects is the memory in heap objects right now, live or garbage
	// not yet swept (/memory/classes/heap/objects:bytes). It saw-tooths
	// between HeapLive and HeapGoal in every healthy process.
	HeapObjects uint64 `json:"heap_objects_bytes"`
	// HeapGoal is the heap size at which the next GC cycle should end
	// (/gc/heap/goal:bytes). A goal falling onto HeapLive means the memory
	// limit, not GOGC, is driving the collector.
	HeapGoal uint64 `json:"heap_goal_bytes"`
	// MemoryUsed is the memory the Go runtime has mapped and not returned to
	// the OS (/memory/classes/total:bytes minus
	// /memory/classes/heap/released:bytes): what GOMEMLIMIT governs.
	MemoryUsed uint64 `json:"memory_used_bytes"`
	// MemoryLimit is the runtime's soft memory limit (/gc/gomemlimit:bytes),
	// 0 when none is set (the runtime reports math.MaxInt64 then).
	MemoryLimit uint64 `json:"memory_limit_bytes"`
	// GOGC is the GC percentage in force (/gc/gogc:percent); -1 means off,
	// as in debug.SetGCPercent.
	GOGC int64 `json:"gogc_percent"`
	// GCCycles counts completed GC cycles since the process started
	// (/gc/cycles/total:gc-cycles).
	GCCycles uint64 `json:"gc_cycles"`
	// GCCPUFraction is the share of the available CPU (GOMAXPROCS x wall
	// time) the GC took between the two most recent samples, not counting
	// marking done on otherwise idle processors (from /cpu/classes/gc/total,
	// /cpu/classes/gc/mark/idle and /cpu/classes/total). The runtime updates
	// these figures when a GC cycle ends, so the fraction is 0 over an
	// interval in which no cycle ended, and the first sample reports 0.
	GCCPUFraction float64 `json:"gc_cpu_fraction"`
	// Goroutines is the number of live goroutines (/sched/goroutines:goroutines).
	Goroutines uint64 `json:"goroutines"`
	// RSS is the resident set size from /proc/self/statm, read only when
	// Config.ReadRSS is set (and 0 otherwise, or where it cannot be read).
	// It includes memory the Go runtime does not know about (cgo, mapped
	// files), which is why it can differ from MemoryUsed.
	RSS uint64 `json:"rss_bytes,omitempty"`
}

// Retained is the memory the process would still hold right after a
// collection: MemoryUsed minus the heap garbage awaiting the next cycle
// (HeapObjects - HeapLive). The memory-high alert compares it with the limit.
func (s Sample) Retained() uint64 {
	garbage := s.HeapObjects - min(s.HeapLive, s.HeapObjects)
	return s.MemoryUsed - min(garbage, s.MemoryUsed)
}

// Indexes into runtimeReader.samples; the order of names in newRuntimeReader.
const (
	mHeapLive = iota
	mHeapObjects
	mHeapGoal
	mTotal
	mReleased
	mLimit
	mGOGC
	mCycles
	mGCCPU
	mGCIdleCPU
	mTotalCPU
	mGoroutines
	nMetrics
)

// runtimeReader reads Samples from runtime/metrics into a slice it reuses, so
// a reading allocates nothing and never stops the world (runtime.ReadMemStats
// does both). It is not safe for concurrent use; the Watcher calls it under
// its tick lock.
type runtimeReader struct {
	samples []metrics.Sample
	// Cumulative CPU seconds at the previous reading, for GCCPUFraction.
	prevGC, prevTotal float64
	primed            bool

	// RSS, when enabled.
	rss       bool
	statm     string
	pageSize  uint64
	buf       [128]byte
	rssFailed bool // the first failure is reported once; later ones quietly give 0
	onRSSErr  func(error)
}

// newRuntimeReader returns a reader that leaves Sample.RSS at 0.
func newRuntimeReader() *runtimeReader {
	names := [nMetrics]string{
		mHeapLive:    "/gc/heap/live:bytes",
		mHeapObjects: "/memory/classes/heap/objects:bytes",
		mHeapGoal:    "/gc/heap/goal:bytes",
		mTotal:       "/memory/classes/total:bytes",
		mReleased:    "/memory/classes/heap/released:bytes",
		mLimit:       "/gc/gomemlimit:bytes",
		mGOGC:        "/gc/gogc:percent",
		mCycles:      "/gc/cycles/total:gc-cycles",
		mGCCPU:       "/cpu/classes/gc/total:cpu-seconds",
		mGCIdleCPU:   "/cpu/classes/gc/mark/idle:cpu-seconds",
		mTotalCPU:    "/cpu/classes/total:cpu-seconds",
		mGoroutines:  "/sched/goroutines:goroutines",
	}
	r := &runtimeReader{
		samples:  make([]metrics.Sample, nMetrics),
		statm:    "/proc/self/statm",
		pageSize: uint64(os.Getpagesize()),
	}
	for i, n := range names {
		r.samples[i].Name = n
	}
	return r
}

// withRSS makes r fill Sample.RSS too, passing the first failure to read it
// to onErr.
func (r *runtimeReader) withRSS(onErr func(error)) *runtimeReader {
	r.rss, r.onRSSErr = true, onErr
	return r
}

// u64 returns metric i as a uint64, or 0 if this Go does not support it.
func (r *runtimeReader) u64(i int) uint64 {
	if r.samples[i].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return r.samples[i].Value.Uint64()
}

func (r *runtimeReader) f64(i int) float64 {
	if r.samples[i].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return r.samples[i].Value.Float64()
}

// read fills every field of s but Time.
func (r *runtimeReader) read(s *Sample) {
	metrics.Read(r.samples)

	s.HeapLive = r.u64(mHeapLive)
	s.HeapObjects = r.u64(mHeapObjects)
	s.HeapGoal = r.u64(mHeapGoal)
	total, released := r.u64(mTotal), r.u64(mReleased)
	s.MemoryUsed = total - min(released, total)
	s.MemoryLimit = r.u64(mLimit)
	if s.MemoryLimit >= math.MaxInt64 {
		s.MemoryLimit = 0 // the runtime's "no limit"
	}
	s.GOGC = int64(r.u64(mGOGC)) // GOGC=off is stored as -1
	s.GCCycles = r.u64(mCycles)
	s.Goroutines = r.u64(mGoroutines)

	gc := r.f64(mGCCPU) - r.f64(mGCIdleCPU)
	cpu := r.f64(mTotalCPU)
	s.GCCPUFraction = 0
	if r.primed && cpu > r.prevTotal {
		s.GCCPUFraction = max(0, (gc-r.prevGC)/(cpu-r.prevTotal))
	}
	r.prevGC, r.prevTotal, r.primed = gc, cpu, true

	s.RSS = 0
	if r.rss {
		s.RSS = r.readRSS()
	}
}

// readRSS returns the resident set size from /proc/self/statm (its second
// field, in pages). It costs an open, a read and a close per sample, and the
// *os.File os.Open allocates, which is why it is opt-in.
func (r *runtimeReader) readRSS() uint64 {
	f, err := os.Open(r.statm)
	if err != nil {
		r.rssError(err)
		return 0
	}
	n, err := f.Read(r.buf[:])
	_ = f.Close()
	if err != nil {
		r.rssError(err)
		return 0
	}
	pages, ok := statmResident(r.buf[:n])
	if !ok {
		r.rssError(errors.New("memwatch: cannot parse " + r.statm))
		return 0
	}
	return pages * r.pageSize
}

func (r *runtimeReader) rssError(err error) {
	if !r.rssFailed {
		r.rssFailed = true
		r.onRSSErr(err)
	}
}

// statmResident parses the second space-separated field of a statm line
// without allocating.
func statmResident(b []byte) (uint64, bool) {
	field, v, digits := 0, uint64(0), 0
	for _, c := range b {
		switch {
		case c == ' ' || c == '\n':
			if digits > 0 {
				if field == 1 {
					return v, true
				}
				field++
			}
			v, digits = 0, 0
		case c >= '0' && c <= '9' && digits < 19:
			v = v*10 + uint64(c-'0')
			digits++
		default:
			return 0, false
		}
	}
	if field == 1 && digits > 0 {
		return v, true
	}
	return 0, false
}
