package queue

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkCancelRunning measures how long Queue.Cancel takes to reach a
// running handler in another process (its own pool and Consumer) on a real
// redis-server on loopback: from the call of Cancel to the handler seeing
// its context done. Each iteration cancels 200 jobs, one at a time, and
// reports the percentiles; the reference, in the same run, is the round
// trip of a PING on the producer's pool (Cancel costs three round trips,
// then the message's way through the control channel).
//
//	go test ./queue -run '^$' -bench CancelRunning -benchtime 1x -count 3
func BenchmarkCancelRunning(b *testing.B) {
	const rounds = 200
	ctx := context.Background()
	srv := redistest.Server(b)
	newPool := func() *pool.Pool { return mustPool(b, pool.Config{Addrs: []string{srv.Addr()}}) }
	wp, pp := newPool(), newPool()
	wq, pq := mustQueue(b, wp, "bench", Config{}), mustQueue(b, pp, "bench", Config{})
	started := make(chan struct{}, 1)
	seen := make(chan time.Time, 1)
	c, err := NewConsumer(wp, ConsumerConfig{Control: true})
	if err != nil {
		b.Fatal(err)
	}
	w, err := NewWorker(c, wq, func(ctx context.Context, _ *Job) error {
		started <- struct{}{}
		<-ctx.Done()
		seen <- time.Now()
		return ctx.Err()
	}, WorkerConfig{Concurrency: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(group(b)); err != nil {
		b.Fatal(err)
	}
	for {
		c.mu.Lock()
		ok := c.node.ctl.subscribed.Load()
		c.mu.Unlock()
		if ok {
			break
		}
		time.Sleep(time.Millisecond)
	}
	wait := func(what string) {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			b.Fatalf("timed out waiting for %s", what)
		}
	}
	b.ResetTimer()
	for range b.N {
		var total, delivery, ping []time.Duration
		for range rounds {
			id, err := pq.Enqueue(ctx, []byte("x"))
			if err != nil {
				b.Fatal(err)
			}
			wait("the job to start")
			t0 := time.Now()
			if err := pq.Cancel(ctx, id); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			var t2 time.Time
			select {
			case t2 = <-seen:
			case <-time.After(10 * time.Second):
				b.Fatal("the handler was not cancelled")
			}
			total, delivery = append(total, t2.Sub(t0)), append(delivery, max(t2.Sub(t1), 0))
			t3 := time.Now()
			if err := pp.Client().Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			ping = append(ping, time.Since(t3))
		}
		b.ReportMetric(pct(total, 50), "cancel-p50-ms")
		b.ReportMetric(pct(total, 99), "cancel-p99-ms")
		b.ReportMetric(pct(delivery, 99), "delivery-p99-ms")
		b.ReportMetric(pct(ping, 50), "ping-p50-ms")
		b.ReportMetric(pct(ping, 99), "ping-p99-ms")
	}
}

// pct is the p-th percentile of ds, in milliseconds.
func pct(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return float64(s[max(i, 0)]) / float64(time.Millisecond)
}

// BenchmarkRunBookkeeping is what job control adds to every run in the
// process (beginRun, endRun, withExtra: a context with a cause, the
// registry of running jobs, no Redis), against a reference in the same run:
// a context.WithTimeout and its cancel, which every run with a timeout
// already pays.
func BenchmarkRunBookkeeping(b *testing.B) {
	w := &Worker{q: &Queue{cfg: Config{Now: time.Now}}, hardCtx: context.Background()}
	d := delivery{env: envelope{id: "0123456789abcdef0123456789ab", enqueuedAt: time.Now()}}
	b.Run("control", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				var job Job
				_, jr := w.beginRun(w.hardCtx, d, &job)
				w.endRun(jr, nil)
				_ = w.withExtra(ackOp{kind: ackDone}, jr, false)
			}
		})
	})
	b.Run("reference-WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, cancel := context.WithTimeout(w.hardCtx, time.Minute)
				cancel()
			}
		})
	})
}
