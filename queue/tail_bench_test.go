package queue

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkTail drains 5,000 no-op jobs at concurrency 10 on a real
// redis-server with nobody following the queue (the reference, same run)
// and with an Inspector.Tail following it, and reports the drain rate and
// the PUBLISH commands per job (one per ack pipeline while followed, none
// otherwise).
func BenchmarkTail(b *testing.B) {
	srv := redistest.Server(b)
	for _, followed := range []bool{false, true} {
		name := "nobody"
		if followed {
			name = "followed"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				flush(b, srv)
				rate, pubs := drainTailed(b, srv, 5_000, followed)
				b.ReportMetric(rate, "jobs/s")
				b.ReportMetric(pubs, "publish/job")
			}
		})
	}
}

func drainTailed(b *testing.B, srv *redistest.Redis, jobs int, followed bool) (float64, float64) {
	ctx := context.Background()
	var hook namedHook
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}, Hooks: []redis.Hook{&hook}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, _ := New(p, "tailed", Config{})
	payload := make([][]byte, 1000)
	for i := range payload {
		payload[i] = []byte("job")
	}
	for n := 0; n < jobs; n += len(payload) {
		if _, err := q.EnqueueBatch(ctx, payload); err != nil {
			b.Fatal(err)
		}
	}
	var seen atomic.Int64
	tailDone := make(chan error, 1)
	tctx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	if followed {
		in, _ := NewInspector(p, "")
		go func() { tailDone <- in.Tail(tctx, []string{"tailed"}, func(TailEvent) { seen.Add(1) }) }()
		testutil.Eventually(b, 10*time.Second, "the tail to register", func() bool {
			n, err := p.Client().ZCard(ctx, tailsKey("bq")).Result()
			return err == nil && n == 1
		})
	}
	var done atomic.Int64
	all := make(chan struct{})
	g := lifecycle.New()
	w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
		if done.Add(1) == int64(jobs) {
			close(all)
		}
		return nil
	}, WorkerConfig{Concurrency: 10})
	if err != nil {
		b.Fatal(err)
	}
	// As the first heartbeat would (it reads the registration made above).
	w.tail.on.Store(followed)
	before := hook.count("publish")
	b.ResetTimer()
	start := time.Now()
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
	pubs := float64(hook.count("publish")-before) / float64(jobs)
	if followed {
		stopTail()
		if err := <-tailDone; err != nil {
			b.Fatal(err)
		}
	}
	return float64(jobs) / elapsed.Seconds(), pubs
}
