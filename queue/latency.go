package queue

import (
	"time"

	"github.com/bounded-go/bounded/internal/hist"
	"github.com/bounded-go/bounded/pool"
)

// latency is a worker's two histograms: fixed memory (hist.Buckets), two
// atomic adds per observation, no lock on the job path.
type latency struct {
	startDelay hist.Buckets // enqueue to handler start, first runs only
	run        hist.Buckets // handler call, every run
	// off skips both (set only by the drain benchmark's reference run).
	off bool
}

// started records the wait of a job's first run: from its EnqueuedAt
// (the enqueuing process's clock, in milliseconds) to now. Retries are
// left out: their wait is the backoff the worker chose, not the queue's.
// A delayed job's wait includes its delay.
func (l *latency) started(attempt int, enqueuedAt time.Time, now func() time.Time) {
	if l.off || attempt != 0 || enqueuedAt.IsZero() {
		return
	}
	l.startDelay.Observe(now().Sub(enqueuedAt)) // clock skew: negative counts as 0
}

// ran records a handler call's duration.
func (l *latency) ran(d time.Duration) {
	if !l.off {
		l.run.Observe(d)
	}
}

func bucketsOf(b *hist.Buckets) pool.Histogram {
	counts, n, sum := b.Snapshot()
	return pool.Histogram{Bounds: hist.Bounds(), Counts: counts, Count: n, Sum: sum}
}

// oldestScan is how many elements from the fetch end (the tail) Stats
// reads to find the oldest ready job: wake markers sit there too.
const oldestScan = 8

// behindMarkers returns the index of the ready list's last element that is
// not a wake marker, or -1 when there is none, from its length and the
// positions of the markers nearest its tail (LPOS RANK -1: descending).
// Markers can outnumber oldestScan there: each stopping process's
// scheduler pushes one (handOver), and with every consumer gone nothing
// takes them, which is when the oldest job's age matters most; Stats then
// reads that element in a second round trip.
func behindMarkers(positions []int64, length int64) int64 {
	i := length - 1
	for _, p := range positions {
		if p != i {
			break
		}
		i--
	}
	return i
}

// oldestReady returns the age at now of the oldest job among elems (the
// ready list's tail, LRANGE -oldestScan -1: the last element is fetched
// next), or 0 when they hold no job that decodes.
func oldestReady(elems []string, now time.Time) time.Duration {
	for i := len(elems) - 1; i >= 0; i-- {
		if elems[i] == wakeMarker {
			continue
		}
		env, err := decodeEnvelope([]byte(elems[i]))
		if err != nil || env.enqueuedAt.IsZero() {
			continue
		}
		return max(now.Sub(env.enqueuedAt), 0)
	}
	return 0
}
