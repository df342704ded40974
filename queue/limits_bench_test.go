package queue

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkLimit drains limitBenchJobs jobs of 0.5ms with 4 consumers (each
// on a pool of its own, as 4 processes) x 10 handlers, with no limit (the
// reference), a fleet-wide concurrency limit of 3, and one of 1000 that
// never binds (the cost of the slots alone), and a rate limit that never
// binds (the cost of the GCRA state). It reports jobs/s, the most jobs
// running at once, and the Redis commands per job of the drain (INFO
// commandstats: client commands and the calls inside scripts; the
// enqueues are left out). Run with
//
//	go test ./queue -run '^$' -bench BenchmarkLimit -benchtime 1x -count 5
func BenchmarkLimit(b *testing.B) {
	srv := redistest.Server(b)
	for _, c := range []struct {
		name string
		lim  Limit
	}{
		{"none", Limit{}},
		{"conc3", Limit{Concurrency: 3}},
		{"conc1000", Limit{Concurrency: 1000}},
		{"rate-loose", Limit{Rate: 1_000_000, Per: time.Second}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				jobs, elapsed, cmds, most := drainLimited(b, srv, c.lim)
				b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
				b.ReportMetric(float64(cmds)/float64(jobs), "cmds/job")
				b.ReportMetric(float64(most), "max-inflight")
			}
		})
	}
}

const (
	limitBenchJobs = 20_000
	limitBenchWork = 500 * time.Microsecond // each job's run
)

func drainLimited(b *testing.B, srv *redistest.Redis, lim Limit) (jobs int, elapsed time.Duration, cmds, most int64) {
	ctx := context.Background()
	var pools []*pool.Pool
	defer func() {
		for _, p := range pools {
			_ = p.Close()
		}
	}()
	var qs []*Queue
	for range 4 {
		p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
		if err != nil {
			b.Fatal(err)
		}
		pools = append(pools, p)
		q, err := New(p, "limbench", Config{})
		if err != nil {
			b.Fatal(err)
		}
		qs = append(qs, q)
	}
	payload := make([][]byte, 1000)
	for i := range payload {
		payload[i] = []byte("job")
	}
	for n := 0; n < limitBenchJobs; n += len(payload) {
		if _, err := qs[0].EnqueueBatch(ctx, payload); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := srv.Do(ctx, "CONFIG", "RESETSTAT"); err != nil {
		b.Fatal(err)
	}
	var done, running, maxRunning atomic.Int64
	all := make(chan struct{})
	h := func(context.Context, *Job) error {
		n := running.Add(1)
		for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
		}
		time.Sleep(limitBenchWork)
		running.Add(-1)
		if done.Add(1) == limitBenchJobs {
			close(all)
		}
		return nil
	}
	g := lifecycle.New()
	b.ResetTimer()
	start := time.Now()
	for i, q := range qs {
		w, err := NewWorker(newConsumer(b, q, ConsumerConfig{ConsumerID: fmt.Sprint("bench", i)}), q, h, WorkerConfig{Concurrency: 10, Limit: lim})
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Start(g); err != nil {
			b.Fatal(err)
		}
	}
	benchRecv(b, all, "the drain to finish")
	elapsed = time.Since(start)
	b.StopTimer()
	cmds = totalCommands(b, srv)
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return limitBenchJobs, elapsed, cmds, maxRunning.Load()
}
