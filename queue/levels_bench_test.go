package queue

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkPriority: a backlog of low-priority (level 0) jobs drains at
// full speed through 8 handler slots running 2 ms each; 300 jobs are
// enqueued behind it, one every 3 ms, and their enqueue -> handler start is
// measured (p50, p99, max). Issue 17's target for jobs at a higher level:
// p99 <= 1 ms plus one handler's run time (target-ms, from the measured
// handler-ms). overtaken-by-p99 counts the backlog jobs that started after
// a measured job was enqueued and before it started (p99), a figure the
// machine's load does not blur: with strict levels, at most the jobs of
// the takes under way when it arrived. The same run measures two references: the same jobs at
// level 0 (they wait for the backlog: the problem levels solve) and on an
// idle queue (the floor). low-jobs/s is the backlog's drain rate while the
// jobs arrive, against its ceiling of 8 / handler-ms. Run with
//
//	go test ./queue -run '^$' -bench Priority -benchtime 1x -count 5
//
// and compare medians.
func BenchmarkPriority(b *testing.B) {
	srv := redistest.Server(b)
	for _, c := range []struct {
		name    string
		level   int
		backlog int
	}{{"level3-behind-backlog", 3, 6000}, {"level0-behind-backlog", 0, 6000}, {"level3-idle", 3, 0}} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				r := priorityRun(b, srv, c.level, c.backlog)
				reportLatency(b, r.lat)
				b.ReportMetric(r.handlerMs, "handler-ms")
				b.ReportMetric(1+r.handlerMs, "target-ms")
				if c.backlog > 0 {
					b.ReportMetric(r.lowRate, "low-jobs/s")
					b.ReportMetric(priorityConc/r.handlerMs*1000, "ceiling-jobs/s")
					b.ReportMetric(r.overtakes, "overtaken-by-p99")
				}
			}
		})
	}
}

const (
	priorityConc    = 8
	priorityHandler = 2 * time.Millisecond
	priorityJobs    = 300
	priorityEvery   = 3 * time.Millisecond
)

type priorityResult struct {
	lat       []time.Duration // enqueue -> start of the measured jobs
	handlerMs float64         // the median run time of the backlog's handlers
	lowRate   float64         // backlog jobs started per second while the measured ones arrived
	// overtakes is the p99 of the backlog jobs that started between a
	// measured job's enqueue and its start: the jobs of takes already
	// under way when it arrived, whatever the machine's load.
	overtakes float64
}

// priorityRun enqueues backlog level-0 jobs, starts the worker, waits for
// the backlog to run in every slot, then enqueues the measured jobs at
// level.
func priorityRun(b *testing.B, srv *redistest.Redis, level, backlog int) priorityResult {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, Blocking: pool.BlockingConfig{Size: 1}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, _ := New(p, "prio", Config{})
	low := make([][]byte, 1000)
	for i := range low {
		low[i] = []byte("low")
	}
	for n := 0; n < backlog; n += len(low) {
		if _, err := q.EnqueueBatch(ctx, low[:min(len(low), backlog-n)]); err != nil {
			b.Fatal(err)
		}
	}
	var (
		mu        sync.Mutex
		lat       = make([]time.Duration, 0, priorityJobs)
		overtakes = make([]int64, 0, priorityJobs)
		runs      = make([]time.Duration, 0, 4096)
		lows      atomic.Int64
		measured  = make(chan struct{}, priorityJobs)
		warm      = make(chan struct{})
		warmOnce  sync.Once
	)
	g := lifecycle.New()
	w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
		start := time.Now()
		if len(j.Payload) == 16 { // a measured job: its enqueue time, and the backlog jobs started by then
			sent := time.Unix(0, int64(binary.LittleEndian.Uint64(j.Payload)))
			over := lows.Load() - int64(binary.LittleEndian.Uint64(j.Payload[8:]))
			mu.Lock()
			lat = append(lat, start.Sub(sent))
			overtakes = append(overtakes, over)
			mu.Unlock()
			measured <- struct{}{}
		} else if lows.Add(1) == 4*priorityConc {
			warmOnce.Do(func() { close(warm) })
		}
		time.Sleep(priorityHandler)
		if len(j.Payload) != 16 {
			mu.Lock()
			if len(runs) < cap(runs) {
				runs = append(runs, time.Since(start))
			}
			mu.Unlock()
		}
		return nil
	}, WorkerConfig{Concurrency: priorityConc})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	if backlog > 0 {
		benchRecv(b, warm, "the backlog to run in every slot")
	}
	b.ResetTimer()
	lows0, t0 := lows.Load(), time.Now()
	for range priorityJobs {
		var pl [16]byte
		binary.LittleEndian.PutUint64(pl[8:], uint64(lows.Load()))
		binary.LittleEndian.PutUint64(pl[:], uint64(time.Now().UnixNano()))
		if _, err := q.Enqueue(ctx, pl[:], Priority(level)); err != nil {
			b.Fatal(err)
		}
		time.Sleep(priorityEvery)
	}
	lowRate := float64(lows.Load()-lows0) / time.Since(t0).Seconds()
	for range priorityJobs {
		benchRecv(b, measured, "a measured job to start")
	}
	b.StopTimer()
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(overtakes)
	r := priorityResult{lat: lat, lowRate: lowRate, handlerMs: float64(priorityHandler) / 1e6,
		overtakes: float64(overtakes[(len(overtakes)-1)*99/100])}
	if len(runs) > 0 {
		slices.Sort(runs)
		r.handlerMs = float64(runs[len(runs)/2]) / 1e6
	}
	return r
}
