package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkCeiling drains jobs whose handler takes 2 ms, at concurrency 64,
// with 1 KiB payloads: the ceiling is 64 / 2 ms = 32,000 jobs/s. It
// reports jobs/s and the share of that ceiling, for bounded and, in the
// same run, for two references: "sleep" (64 goroutines looping the same
// 2 ms sleep with no Redis at all: the ceiling this machine reaches, timer
// slack included) and "handwritten" (64 goroutines, each with its own
// connection, looping BLMOVE, sleep, LREM). Run it with
//
//	go test ./queue -run '^$' -bench Ceiling -benchtime 1x -count 3
//
// and compare medians; the target is bounded >= 80 % of 32,000.
func BenchmarkCeiling(b *testing.B) {
	srv := redistest.Server(b)
	const (
		conc    = 64
		run     = 2 * time.Millisecond
		jobs    = 40_000
		size    = 1 << 10
		ceiling = float64(conc) / 0.002
	)
	report := func(b *testing.B, elapsed time.Duration, cpu ceilingCPU) {
		rate := float64(jobs) / elapsed.Seconds()
		b.ReportMetric(rate, "jobs/s")
		b.ReportMetric(100*rate/ceiling, "%-of-ceiling")
		// CPU time per job: on a shared machine it measures the work,
		// where wall time measures the neighbours too.
		b.ReportMetric(float64(cpu.process.Microseconds())/float64(jobs), "cpu-µs/job")
		if cpu.redis > 0 {
			b.ReportMetric(float64(cpu.redis.Microseconds())/float64(jobs), "redis-cpu-µs/job")
		}
	}
	for _, consumers := range []int{1, 2} {
		name := "bounded"
		if consumers > 1 {
			// The same 64 handlers on two consumers of 32 (two fetchers,
			// two takes in flight at once): how much of the gap is the
			// one fetcher's take round trip.
			name = fmt.Sprintf("bounded-%dx%d", consumers, conc/consumers)
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				elapsed, cpu, cmds := ceilingBounded(b, srv, consumers, conc, run, jobs, size)
				report(b, elapsed, cpu)
				b.ReportMetric(float64(cmds)/float64(jobs), "cmds/job")
			}
		})
	}
	b.Run("handwritten", func(b *testing.B) {
		for range b.N {
			flush(b, srv)
			elapsed, cpu := ceilingHandwritten(b, srv, conc, run, jobs, size)
			report(b, elapsed, cpu)
		}
	})
	b.Run("sleep", func(b *testing.B) {
		for range b.N {
			var left atomic.Int64
			left.Store(jobs)
			var wg sync.WaitGroup
			start, cpu := time.Now(), cpuTime()
			for range conc {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						time.Sleep(run)
					}
				})
			}
			wg.Wait()
			report(b, time.Since(start), ceilingCPU{process: cpuTime() - cpu})
		}
	})
}

// ceilingCPU is the CPU time a drain used: this process's, and the Redis
// server's (0: not measured).
type ceilingCPU struct{ process, redis time.Duration }

// startCPU returns a function that reports the CPU used since.
func startCPU(b *testing.B, srv *redistest.Redis) func() ceilingCPU {
	p, r := cpuTime(), redisCPU(b, srv)
	return func() ceilingCPU { return ceilingCPU{process: cpuTime() - p, redis: redisCPU(b, srv) - r} }
}

// redisCPU is the CPU time the server used so far (INFO cpu).
func redisCPU(b *testing.B, srv *redistest.Redis) time.Duration {
	info, err := srv.Do(context.Background(), "INFO", "cpu")
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// ceilingPayloads are n payloads of size bytes.
func ceilingPayloads(n, size int) [][]byte {
	ps := make([][]byte, n)
	for i := range ps {
		ps[i] = make([]byte, size)
		ps[i][0] = byte(i)
	}
	return ps
}

func ceilingBounded(b *testing.B, srv *redistest.Redis, consumers, conc int, run time.Duration, jobs, size int) (time.Duration, ceilingCPU, int64) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, _ := New(p, "ceiling", Config{})
	ps := ceilingPayloads(1000, size)
	for n := 0; n < jobs; n += len(ps) {
		if _, err := q.EnqueueBatch(ctx, ps[:min(len(ps), jobs-n)]); err != nil {
			b.Fatal(err)
		}
	}
	var done atomic.Int64
	all := make(chan struct{})
	g := lifecycle.New()
	ws := make([]*Worker, consumers)
	for i := range ws {
		ws[i], err = newWorker(b, q, func(ctx context.Context, j *Job) error {
			time.Sleep(run)
			if done.Add(1) == int64(jobs) {
				close(all)
			}
			return nil
		}, WorkerConfig{Concurrency: conc / consumers})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start, cpu := time.Now(), startCPU(b, srv)
	for _, w := range ws {
		if err := w.Start(g); err != nil {
			b.Fatal(err)
		}
	}
	benchRecv(b, all, "the drain to finish")
	elapsed, used := time.Since(start), cpu()
	b.StopTimer()
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return elapsed, used, totalCommands(b, srv)
}

func ceilingHandwritten(b *testing.B, srv *redistest.Redis, conc int, run time.Duration, jobs, size int) (time.Duration, ceilingCPU) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: conc + 2})
	defer c.Close()
	ps := ceilingPayloads(1000, size)
	vals := make([]any, len(ps))
	for i := range ps {
		vals[i] = ps[i]
	}
	for n := 0; n < jobs; n += len(vals) {
		if err := c.LPush(ctx, "hw:ready", vals[:min(len(vals), jobs-n)]...).Err(); err != nil {
			b.Fatal(err)
		}
	}
	var done atomic.Int64
	all := make(chan struct{})
	var wg sync.WaitGroup
	b.ResetTimer()
	start, cpu := time.Now(), startCPU(b, srv)
	for i := range conc {
		wg.Go(func() {
			proc := fmt.Sprint("hw:proc", i)
			for ctx.Err() == nil {
				v, err := c.BLMove(ctx, "hw:ready", proc, "RIGHT", "LEFT", time.Second).Result()
				if err != nil {
					continue
				}
				time.Sleep(run)
				if err := c.LRem(ctx, proc, 1, v).Err(); err != nil {
					continue
				}
				if done.Add(1) == int64(jobs) {
					close(all)
				}
			}
		})
	}
	benchRecv(b, all, "the drain to finish")
	elapsed, used := time.Since(start), cpu()
	b.StopTimer()
	cancel()
	wg.Wait()
	return elapsed, used
}
