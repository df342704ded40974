package queue

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkOutcomeHooks drains 5,000 no-op jobs at concurrency 10 on a
// real redis-server without hooks (the reference, same run), with a no-op
// OnDone, and with an OnDone that takes 100µs and 1ms. Hooks run on
// the acker's goroutine between two pipelines of acks, so a hook's time is
// added per outcome to the acker's loop: the drain rate is capped near 1 /
// (hook time) once that exceeds what the acker would otherwise spend per
// job.
func BenchmarkOutcomeHooks(b *testing.B) {
	srv := redistest.Server(b)
	busy := func(d time.Duration) func(Outcome) {
		return func(Outcome) {
			for start := time.Now(); time.Since(start) < d; {
			}
		}
	}
	for _, c := range []struct {
		name string
		hook func(Outcome)
	}{
		{"none", nil},
		{"noop", func(Outcome) {}},
		{"100us", busy(100 * time.Microsecond)},
		{"1ms", busy(time.Millisecond)},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				b.ReportMetric(drainWithHook(b, srv, 5_000, c.hook), "jobs/s")
			}
		})
	}
}

func drainWithHook(b *testing.B, srv *redistest.Redis, jobs int, hook func(Outcome)) float64 {
	ctx := context.Background()
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, _ := New(p, "hooked", Config{})
	payload := make([][]byte, 1000)
	for i := range payload {
		payload[i] = []byte("job")
	}
	for n := 0; n < jobs; n += len(payload) {
		if _, err := q.EnqueueBatch(ctx, payload); err != nil {
			b.Fatal(err)
		}
	}
	var done atomic.Int64
	all := make(chan struct{})
	g := lifecycle.New()
	b.ResetTimer()
	start := time.Now()
	w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
		if done.Add(1) == int64(jobs) {
			close(all)
		}
		return nil
	}, WorkerConfig{Concurrency: 10, OnDone: hook})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	benchRecv(b, all, "the drain to finish")
	elapsed := time.Since(start)
	b.StopTimer()
	closeCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	return float64(jobs) / elapsed.Seconds()
}
