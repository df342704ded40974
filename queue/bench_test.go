package queue

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// The queue benchmarks run on a real redis-server and measure, in the same
// run, the reference every Go developer could write in an afternoon: N
// goroutines each looping BLMOVE ready -> processing, run, LREM (one
// connection per goroutine). Run them with
//
//	go test ./queue -run '^$' -bench . -benchtime 1x -count 5
//
// and compare medians.

const drainJobs = 50_000

// BenchmarkDrain drains 50,000 no-op jobs: one queue at concurrency 10, and
// three queues at concurrency 5 each.
func BenchmarkDrain(b *testing.B) {
	srv := redistest.Server(b)
	for _, shape := range []struct {
		name         string
		queues, conc int
	}{{"1x10", 1, 10}, {"3x5", 3, 5}} {
		b.Run("bounded-"+shape.name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				jobs, elapsed, cmds := drainBounded(b, srv, shape.queues, shape.conc, true)
				b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
				b.ReportMetric(float64(cmds)/float64(jobs), "cmds/job")
			}
		})
		// The same without the workers' latency histograms: their cost
		// is the difference (issue 19's target: under 5 %).
		b.Run("bounded-nohist-"+shape.name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				jobs, elapsed, cmds := drainBounded(b, srv, shape.queues, shape.conc, false)
				b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
				b.ReportMetric(float64(cmds)/float64(jobs), "cmds/job")
			}
		})
		b.Run("handwritten-"+shape.name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				jobs, elapsed, cmds := drainHandwritten(b, srv, shape.queues, shape.conc)
				b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
				b.ReportMetric(float64(cmds)/float64(jobs), "cmds/job")
			}
		})
	}
}

func flush(b *testing.B, srv *redistest.Redis) {
	b.Helper()
	ctx := context.Background()
	if _, err := srv.Do(ctx, "FLUSHALL"); err != nil {
		b.Fatal(err)
	}
	if _, err := srv.Do(ctx, "CONFIG", "RESETSTAT"); err != nil {
		b.Fatal(err)
	}
}

func totalCommands(b *testing.B, srv *redistest.Redis) int64 {
	s, err := srv.CommandStats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return redistest.TotalCalls(s, "info", "flushall", "config|resetstat", "config")
}

// drainBounded enqueues the jobs (EnqueueBatch, counted in cmds) and
// measures from the workers' start to the last job's run; histograms false
// turns the workers' latency histograms off (the reference for their cost).
func drainBounded(b *testing.B, srv *redistest.Redis, queues, conc int, histograms bool) (int, time.Duration, int64) {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, Blocking: pool.BlockingConfig{Size: queues}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	per := drainJobs / queues
	payload := make([][]byte, 1000)
	for i := range payload {
		payload[i] = []byte("job")
	}
	qs := make([]*Queue, queues)
	for i := range qs {
		qs[i], _ = New(p, fmt.Sprint("drain", i), Config{})
		for n := 0; n < per; n += len(payload) {
			if _, err := qs[i].EnqueueBatch(ctx, payload[:min(len(payload), per-n)]); err != nil {
				b.Fatal(err)
			}
		}
	}
	var done atomic.Int64
	all := make(chan struct{})
	total := int64(per * queues)
	g := lifecycle.New()
	b.ResetTimer()
	start := time.Now()
	for _, q := range qs {
		w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
			if done.Add(1) == total {
				close(all)
			}
			return nil
		}, WorkerConfig{Concurrency: conc})
		if err != nil {
			b.Fatal(err)
		}
		w.lat.off = !histograms
		if err := w.Start(g); err != nil {
			b.Fatal(err)
		}
	}
	benchRecv(b, all, "the drain to finish")
	elapsed := time.Since(start)
	b.StopTimer()
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return int(total), elapsed, totalCommands(b, srv)
}

// drainHandwritten is the reference: per queue, conc goroutines each with
// its own connection looping BLMOVE + LREM.
func drainHandwritten(b *testing.B, srv *redistest.Redis, queues, conc int) (int, time.Duration, int64) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: queues*conc + 2})
	defer c.Close()
	per := drainJobs / queues
	vals := make([]any, 1000)
	for i := range vals {
		vals[i] = "job"
	}
	for q := range queues {
		for n := 0; n < per; n += len(vals) {
			if err := c.LPush(ctx, fmt.Sprint("hw:ready", q), vals[:min(len(vals), per-n)]...).Err(); err != nil {
				b.Fatal(err)
			}
		}
	}
	total := int64(per * queues)
	var done atomic.Int64
	all := make(chan struct{})
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for q := range queues {
		for i := range conc {
			wg.Go(func() {
				ready, proc := fmt.Sprint("hw:ready", q), fmt.Sprintf("hw:proc%d:%d", q, i)
				for ctx.Err() == nil {
					v, err := c.BLMove(ctx, ready, proc, "RIGHT", "LEFT", time.Second).Result()
					if err != nil {
						continue
					}
					if err := c.LRem(ctx, proc, 1, v).Err(); err != nil {
						continue
					}
					if done.Add(1) == total {
						close(all)
					}
				}
			})
		}
	}
	benchRecv(b, all, "the drain to finish")
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	return int(total), elapsed, totalCommands(b, srv)
}

// BenchmarkLatency enqueues 1,000 jobs/s for 3 s and reports enqueue ->
// handler start, p50 and p99, for bounded and the hand-written loop.
func BenchmarkLatency(b *testing.B) {
	srv := redistest.Server(b)
	const rate, seconds = 1000, 3
	for _, impl := range []string{"bounded", "handwritten"} {
		b.Run(impl, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				lat := steadyLatency(b, srv, impl, rate, rate*seconds)
				reportLatency(b, lat)
				// Every command Redis ran (scripts' inner calls included),
				// start-up and close included, per job.
				b.ReportMetric(float64(totalCommands(b, srv))/float64(rate*seconds), "cmds/job")
				if st, err := srv.CommandStats(context.Background()); err == nil {
					per := map[string]string{}
					for name, n := range st {
						per[name] = fmt.Sprintf("%.2f", float64(n)/float64(rate*seconds))
					}
					b.Logf("%s: commands per job by name: %v", impl, per)
				}
			}
		})
	}
}

// BenchmarkIdlePickup enqueues one job at a time into an idle queue (the
// worker blocked in BLMOVE) and reports enqueue -> handler start.
func BenchmarkIdlePickup(b *testing.B) {
	srv := redistest.Server(b)
	for _, impl := range []string{"bounded", "handwritten"} {
		b.Run(impl, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				lat := steadyLatency(b, srv, impl, 0, 300)
				reportLatency(b, lat)
			}
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

// steadyLatency sends n jobs at rate per second (0: one at a time, each
// after the previous one ran and the worker is idle again) and returns the
// enqueue -> handler start latencies.
func steadyLatency(b *testing.B, srv *redistest.Redis, impl string, rate, n int) []time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	ran := make(chan struct{}, n)
	record := func(payload []byte) {
		sent := time.Unix(0, int64(binary.LittleEndian.Uint64(payload)))
		d := time.Since(sent)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		ran <- struct{}{}
	}
	var enqueue func([]byte) error
	var stop func()
	switch impl {
	case "bounded":
		p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		q, _ := New(p, "lat", Config{})
		g := lifecycle.New()
		w, _ := newWorker(b, q, func(ctx context.Context, j *Job) error { record(j.Payload); return nil }, WorkerConfig{Concurrency: 10})
		if err := w.Start(g); err != nil {
			b.Fatal(err)
		}
		enqueue = func(p []byte) error { _, err := q.Enqueue(ctx, p); return err }
		stop = func() { _ = g.Close(context.Background()) }
	case "handwritten":
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 12})
		defer c.Close()
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				proc := fmt.Sprint("hw:proc", i)
				for ctx.Err() == nil {
					v, err := c.BLMove(ctx, "hw:ready", proc, "RIGHT", "LEFT", time.Second).Result()
					if err != nil {
						continue
					}
					record([]byte(v))
					_ = c.LRem(ctx, proc, 1, v).Err()
				}
			})
		}
		enqueue = func(p []byte) error { return c.LPush(ctx, "hw:ready", p).Err() }
		stop = func() { cancel(); wg.Wait() }
	}
	time.Sleep(50 * time.Millisecond) // let the fetchers block
	b.ResetTimer()
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	start := time.Now()
	for i := range n {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], uint64(time.Now().UnixNano()))
		if err := enqueue(buf[:]); err != nil {
			b.Fatal(err)
		}
		if rate == 0 {
			benchRecv(b, ran, "the job to start")
			time.Sleep(2 * time.Millisecond) // the worker is idle and blocked again
		}
	}
	if rate > 0 {
		for range n {
			benchRecv(b, ran, "the jobs to start")
		}
	}
	b.StopTimer()
	stop()
	return lat
}

// BenchmarkEnqueue compares one Enqueue per job with EnqueueBatch of 1,000.
func BenchmarkEnqueue(b *testing.B) {
	srv := redistest.Server(b)
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, _ := New(p, "enq", Config{})
	ctx := context.Background()
	payload := []byte("a small job payload of some tens of bytes.")
	b.Run("single", func(b *testing.B) {
		for b.Loop() {
			if _, err := q.Enqueue(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
	// With the ID option: the script takes the ID and deletes what an
	// earlier job of it left (keys.endKeys).
	b.Run("single-with-ID", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := q.Enqueue(ctx, payload, ID("bench-"+strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
		b.StopTimer()
		_ = p.Client().FlushDB(ctx).Err()
	})
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = payload
	}
	b.Run("batch-1000", func(b *testing.B) {
		for b.Loop() {
			if _, err := q.EnqueueBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "jobs/s")
	})
	_ = p.Client().Del(ctx, q.k.ready).Err()
}

// BenchmarkDelayedLateness schedules jobs 20-120 ms ahead on an idle worker
// and reports how late they start.
func BenchmarkDelayedLateness(b *testing.B) {
	srv := redistest.Server(b)
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	q, _ := New(p, "late", Config{})
	lat := make(chan time.Duration, 1)
	g := lifecycle.New()
	w, _ := newWorker(b, q, func(ctx context.Context, j *Job) error {
		due := time.Unix(0, int64(binary.LittleEndian.Uint64(j.Payload)))
		lat <- time.Since(due)
		return nil
	}, WorkerConfig{})
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	defer g.Close(ctx)
	var all []time.Duration
	b.ResetTimer()
	for i := range max(b.N, 50) {
		due := time.Now().Add(time.Duration(20+i%100) * time.Millisecond)
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], uint64(due.UnixNano()))
		if _, err := q.Enqueue(ctx, buf[:], At(due)); err != nil {
			b.Fatal(err)
		}
		all = append(all, benchRecv(b, lat, "the delayed job to start"))
	}
	reportLatency(b, all)
}

// benchRecv receives from ch on the benchmark goroutine, failing the
// benchmark instead of hanging if nothing comes within a minute.
func benchRecv[T any](b *testing.B, ch <-chan T, what string) T {
	b.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		b.Fatalf("timed out after 1m waiting for %s", what)
		panic("unreachable")
	}
}
