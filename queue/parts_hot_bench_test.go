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

// BenchmarkPartitionHotAtLimit: a hot partition at its limit
// (PartitionConcurrency 1, a backlog of 2,000 jobs of 20ms each) while an
// unpartitioned producer enqueues 500 jobs/s (which moves the queue's
// clock past the hot backlog's turn) and 99 light partitions enqueue 10
// jobs/s each, for 5s (2s with -short). It reports the light partitions'
// enqueue-to-start latency (p50, p99), how many of their jobs ran within
// the run, and the Redis commands per job started.
//
//	go test ./queue -run '^$' -bench PartitionHotAtLimit -benchtime 1x -count 3
func BenchmarkPartitionHotAtLimit(b *testing.B) {
	dur := 5 * time.Second
	if testing.Short() {
		dur = 2 * time.Second
	}
	srv := redistest.Server(b)
	for range b.N {
		flush(b, srv)
		lat, ran, produced, cmds := hotLimitRun(b, srv, dur)
		if len(lat) > 0 {
			b.ReportMetric(pctMs(lat, 50), "light-p50-ms")
			b.ReportMetric(pctMs(lat, 99), "light-p99-ms")
		}
		b.ReportMetric(float64(ran)/float64(max(produced, 1)), "light-ran-ratio")
		b.ReportMetric(cmds, "cmds/job")
	}
}

func hotLimitRun(b *testing.B, srv *redistest.Redis, dur time.Duration) (lat []int64, ran, produced int64, cmdsPerJob float64) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, Request: pool.LaneConfig{Size: 100}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, err := New(p, "hotlim", Config{})
	if err != nil {
		b.Fatal(err)
	}
	hot := make([][]byte, 2000)
	for i := range hot {
		hot[i] = []byte("hot")
	}
	if _, err := q.EnqueueBatch(ctx, hot, Partition("hot")); err != nil {
		b.Fatal(err)
	}
	var (
		mu       sync.Mutex
		lats     []int64
		lightRan atomic.Int64
		started  atomic.Int64
		made     atomic.Int64
	)
	g := lifecycle.New()
	w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
		started.Add(1)
		switch string(j.Payload) {
		case "hot":
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
			return nil
		case "plain":
			return nil
		}
		d := time.Now().UnixNano() - int64(binary.BigEndian.Uint64(j.Payload))
		mu.Lock()
		lats = append(lats, d)
		mu.Unlock()
		lightRan.Add(1)
		return nil
	}, WorkerConfig{Concurrency: 10, Limit: Limit{PartitionConcurrency: 1}})
	if err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var producers sync.WaitGroup
	tick := func(i int, every time.Duration, f func()) {
		producers.Add(1)
		go func() {
			defer producers.Done()
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(i) * every / 100):
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					f()
				}
			}
		}()
	}
	for i := range 99 {
		key := Partition(fmt.Sprint("light", i))
		tick(i, 100*time.Millisecond, func() {
			if _, err := q.Enqueue(ctx, binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano())), key); err == nil {
				made.Add(1)
			}
		})
	}
	tick(0, 2*time.Millisecond, func() { _, _ = q.Enqueue(ctx, []byte("plain")) })
	s0, err := srv.CommandStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	time.Sleep(dur) // the measured run
	close(stop)
	producers.Wait()
	b.StopTimer()
	s1, err := srv.CommandStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	jobs := started.Load()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.Close(cctx); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	calls := redistest.TotalCalls(s1, "info", "client|list") - redistest.TotalCalls(s0, "info", "client|list")
	return slices.Clone(lats), lightRan.Load(), made.Load(), float64(calls) / float64(max(jobs, 1))
}

// BenchmarkPartitionDrainCmds: 20,000 no-op jobs in 100 partitions (and,
// with limit, PartitionConcurrency 2), enqueued then drained by one worker
// of concurrency 10: the Redis commands per job (Lua's included: the
// enqueue, the take, the ack), the drain's jobs/s and Redis's CPU time per
// job (user + system) in the enqueue and in the drain.
//
//	go test ./queue -run '^$' -bench PartitionDrainCmds -benchtime 1x -count 3
func BenchmarkPartitionDrainCmds(b *testing.B) {
	for _, pconc := range []int{0, 2} {
		b.Run(fmt.Sprint("pconc=", pconc), func(b *testing.B) {
			srv := redistest.Server(b)
			for range b.N {
				flush(b, srv)
				cmds, rate, enq, drain := drainCmds(b, srv, pconc)
				b.ReportMetric(cmds, "cmds/job")
				b.ReportMetric(rate, "jobs/s")
				b.ReportMetric(enq, "enqueue-redis-cpu-us/job")
				b.ReportMetric(drain, "drain-redis-cpu-us/job")
			}
		})
	}
}

func drainCmds(b *testing.B, srv *redistest.Redis, pconc int) (cmds, rate, enqCPU, drainCPU float64) {
	const jobs, parts = 20_000, 100
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, err := New(p, "pdrain", Config{})
	if err != nil {
		b.Fatal(err)
	}
	s0, err := srv.CommandStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := redisCPU(b, srv)
	for i := range parts {
		batch := make([][]byte, jobs/parts)
		for j := range batch {
			batch[j] = []byte("x")
		}
		if _, err := q.EnqueueBatch(ctx, batch, Partition(fmt.Sprint("t", i))); err != nil {
			b.Fatal(err)
		}
	}
	cpu1 := redisCPU(b, srv)
	var ran atomic.Int64
	done := make(chan struct{})
	g := lifecycle.New()
	w, err := newWorker(b, q, func(context.Context, *Job) error {
		if ran.Add(1) == jobs {
			close(done)
		}
		return nil
	}, WorkerConfig{Concurrency: 10, Limit: Limit{PartitionConcurrency: pconc}})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d jobs ran", ran.Load(), jobs)
	}
	took := time.Since(start)
	b.StopTimer()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.Close(cctx); err != nil {
		b.Fatal(err)
	}
	s1, err := srv.CommandStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cpu2 := redisCPU(b, srv)
	calls := redistest.TotalCalls(s1, "info", "client|list") - redistest.TotalCalls(s0, "info", "client|list")
	return float64(calls) / jobs, jobs / took.Seconds(), float64((cpu1 - cpu0).Microseconds()) / jobs, float64((cpu2 - cpu1).Microseconds()) / jobs
}
