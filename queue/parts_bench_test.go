package queue

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkPartitionFairness: one partition holds a backlog of 100,000
// no-op jobs (10,000 with -short) while 99 other partitions enqueue 10
// jobs/s each. It reports the others' enqueue-to-start latency (p50, p99)
// and the backlog's drain rate, against the same backlog drained alone in
// the same run (backlog-ratio = with others / alone), and the same jobs
// unpartitioned, drained alone (the cost of partitions).
//
//	go test ./queue -run '^$' -bench PartitionFairness -benchtime 1x -count 3
func BenchmarkPartitionFairness(b *testing.B) {
	backlog := 100_000
	if testing.Short() {
		backlog = 10_000
	}
	srv := redistest.Server(b)
	for range b.N {
		flush(b, srv)
		plain, _, _ := fairnessRun(b, srv, -backlog, 0, 0)
		flush(b, srv)
		alone, _, _ := fairnessRun(b, srv, backlog, 0, 0)
		flush(b, srv)
		with, lat, took := fairnessRun(b, srv, backlog, 99, 0)
		// The reference: the same producers without the backlog, as long.
		flush(b, srv)
		_, floor, _ := fairnessRun(b, srv, 0, 99, took)
		b.ReportMetric(with, "backlog-jobs/s")
		b.ReportMetric(alone, "alone-jobs/s")
		b.ReportMetric(plain, "unpartitioned-jobs/s")
		b.ReportMetric(with/alone, "backlog-ratio")
		if len(lat.lat) > 0 {
			b.ReportMetric(pctMs(lat.lat, 50), "p50-ms")
			b.ReportMetric(pctMs(lat.lat, 99), "p99-ms")
			b.ReportMetric(pctMs(lat.calls, 99), "enqueue-call-p99-ms")
			b.ReportMetric(pctMs(lat.waits, 99), "wait-p99-ms")
			b.ReportMetric(float64(len(lat.lat)), "small-jobs")
		}
		if len(floor.lat) > 0 {
			b.ReportMetric(pctMs(floor.lat, 99), "nobacklog-p99-ms")
			b.ReportMetric(pctMs(floor.waits, 99), "nobacklog-wait-p99-ms")
		}
	}
}

// fairnessRun drains backlog jobs of partition "big" (-backlog: as many
// unpartitioned jobs, the reference for the partitions' cost) with one worker at
// concurrency 10 while others partitions enqueue a job each every 100ms;
// it returns the backlog's jobs/s, the others' latencies and how long the
// drain took. The producers run at least atLeast.
func fairnessRun(b *testing.B, srv *redistest.Redis, backlog, others int, atLeast time.Duration) (float64, fairness, time.Duration) {
	ctx := context.Background()
	// A request lane for the 99 producers: they stand for 99 processes.
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, Request: pool.LaneConfig{Size: 100}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, err := New(p, "fair", Config{})
	if err != nil {
		b.Fatal(err)
	}
	batch := make([][]byte, 5000)
	for i := range batch {
		batch[i] = []byte("big")
	}
	var opts []EnqueueOption
	if backlog > 0 {
		opts = append(opts, Partition("big"))
	}
	backlog = max(backlog, -backlog)
	for n := 0; n < backlog; n += len(batch) {
		if _, err := q.EnqueueBatch(ctx, batch[:min(len(batch), backlog-n)], opts...); err != nil {
			b.Fatal(err)
		}
	}
	var (
		bigDone  atomic.Int64
		drained  = make(chan time.Time, 1)
		mu       sync.Mutex
		lat      []int64
		calls    []int64 // enqueue call durations
		started  = map[string]int64{}
		returned = map[string]int64{}
		produced atomic.Int64
		ran      atomic.Int64
		failed   atomic.Int64 // enqueues that failed
	)
	g := lifecycle.New()
	w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
		if string(j.Payload) == "big" {
			if bigDone.Add(1) == int64(backlog) {
				drained <- time.Now()
			}
			return nil
		}
		now := time.Now().UnixNano()
		d := now - int64(binary.BigEndian.Uint64(j.Payload))
		mu.Lock()
		lat = append(lat, d)
		started[j.ID] = now
		mu.Unlock()
		ran.Add(1)
		return nil
	}, WorkerConfig{Concurrency: 10})
	if err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var producers sync.WaitGroup
	for i := range others {
		producers.Add(1)
		go func() {
			defer producers.Done()
			// Staggered: 99 producers ticking together would be bursts of
			// 99 enqueues, not 990 jobs/s.
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(i) * 100 * time.Millisecond / time.Duration(others)):
			}
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			key := Partition(fmt.Sprint("small", i))
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				t0 := time.Now()
				id, err := q.Enqueue(ctx, binary.BigEndian.AppendUint64(nil, uint64(t0.UnixNano())), key)
				if err != nil {
					// A busy machine can make an enqueue time out: counted,
					// reported, and the run goes on.
					if failed.Add(1) == 1 {
						b.Logf("enqueue: %v", err)
					}
					continue
				}
				t1 := time.Now()
				mu.Lock()
				calls = append(calls, int64(t1.Sub(t0)))
				returned[id] = t1.UnixNano()
				mu.Unlock()
				produced.Add(1)
			}
		}()
	}
	b.ResetTimer()
	start := time.Now()
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	var end time.Time
	if backlog > 0 {
		select {
		case end = <-drained:
		case <-time.After(5 * time.Minute):
			b.Fatal("the backlog did not drain within 5 minutes")
		}
	} else {
		end = start
	}
	b.StopTimer()
	if rest := atLeast - time.Since(start); rest > 0 {
		time.Sleep(rest) // the producers go on: a reference as long as the run it is one for
	}
	close(stop)
	producers.Wait()
	for deadline := time.Now().Add(60 * time.Second); ran.Load() < produced.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d small jobs ran", ran.Load(), produced.Load())
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.Close(cctx); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var waits []int64
	for id, t := range returned {
		waits = append(waits, max(0, started[id]-t))
	}
	if n := failed.Load(); n > 0 {
		b.ReportMetric(float64(n), "enqueue-errors")
	}
	took := end.Sub(start)
	return float64(backlog) / max(took.Seconds(), 1e-9), fairness{lat: slices.Clone(lat), calls: slices.Clone(calls), waits: waits}, took
}

// fairness is what fairnessRun measured of the small partitions' jobs:
// enqueue-to-start latencies (from before the Enqueue call), the Enqueue
// calls' durations, and the waits from the call's return to the start
// (0 for a job that started first), in ns.
type fairness struct{ lat, calls, waits []int64 }

// pctMs is the p-th percentile of xs in ms (xs is sorted in place).
func pctMs(xs []int64, p int) float64 {
	slices.Sort(xs)
	return float64(xs[min(len(xs)-1, len(xs)*p/100)]) / 1e6
}

// BenchmarkIdlePartitions: one process consuming one queue whose 10,000
// partitions all had a job (run and gone), against one queue that never
// had a partition, in the same run: blocking connections and idle Redis
// commands per second.
func BenchmarkIdlePartitions(b *testing.B) {
	for _, n := range []int{0, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				srv := redistest.Server(b)
				cmdsPerSec, blocked := idlePartitions(b, srv, n)
				b.ReportMetric(cmdsPerSec, "cmds/s")
				b.ReportMetric(float64(blocked), "blocking-conns")
			}
		})
	}
}

func idlePartitions(b *testing.B, srv *redistest.Redis, parts int) (float64, int) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	g := lifecycle.New()
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = g.Close(cctx)
	}()
	q, _ := New(p, "idleparts", Config{})
	for i := range parts {
		if _, err := q.Enqueue(ctx, []byte("x"), Partition(fmt.Sprint("tenant", i))); err != nil {
			b.Fatal(err)
		}
	}
	var ran atomic.Int64
	w, err := newWorker(b, q, func(context.Context, *Job) error { ran.Add(1); return nil }, WorkerConfig{BlockTimeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ran.Load() < int64(parts); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d jobs ran", ran.Load(), parts)
		}
	}
	return idleRate(b, srv)
}
