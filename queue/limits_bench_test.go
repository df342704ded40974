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
// reference), a fleet-wide concurrency limit of 1000 that never binds (the
// cost of the slots alone), a rate limit that never binds (the cost of the
// GCRA state), and a concurrency limit of 3. It reports jobs/s, the most jobs
// running at once, and the Redis commands per job of the drain (INFO
// commandstats: client commands and the calls inside scripts; the
// enqueues are left out). Run with
//
//	go test ./queue -run '^$' -bench BenchmarkLimit -benchtime 1x -count 5
func BenchmarkLimit(b *testing.B) {
	srv := redistest.Server(b)
	shapes := []struct {
		name string
		lim  Limit
	}{
		{"none", Limit{}},
		{"conc1000", Limit{Concurrency: 1000}},
		{"rate", Limit{Rate: 1_000_000, Per: time.Second}},
		{"conc3", Limit{Concurrency: 3}},
	}
	// Every shape in each iteration, the reference first, so the ratios
	// compare runs minutes apart at most (the machine's load drifts).
	for range b.N {
		var ref float64
		for _, c := range shapes {
			flush(b, srv)
			jobs, elapsed, cmds, most := drainLimited(b, srv, c.lim)
			rate := float64(jobs) / elapsed.Seconds()
			if c.name == "none" {
				ref = rate
			} else {
				b.ReportMetric(rate/ref, c.name+"-vs-none")
			}
			b.ReportMetric(rate, c.name+"-jobs/s")
			b.ReportMetric(float64(cmds)/float64(jobs), c.name+"-cmds/job")
			b.ReportMetric(float64(most), c.name+"-max-inflight")
		}
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
	cmds = totalCommands(b, srv)
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return limitBenchJobs, elapsed, cmds, maxRunning.Load()
}
