package prometheus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// A program that restarts its worker gives the collector LiveWorkers: the
// new worker is exported, and the old one's counts stay in the sums, so
// that the counters never go down (with a fixed list the restarted worker
// was not exported at all; without the old counts the sum would drop,
// which Prometheus reads as a counter reset).
func TestQueueCollectorFollowsReplacedWorkers(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	var mu sync.Mutex
	var live []*queue.Worker
	c := bprom.NewQueueCollector(bprom.QueueConfig{LiveWorkers: func() []*queue.Worker {
		mu.Lock()
		defer mu.Unlock()
		return live
	}})
	ok := func(context.Context, *queue.Job) error { return nil }
	run := func(jobs int) (*queue.Worker, *lifecycle.Group) {
		g := lifecycle.New()
		t.Cleanup(func() { _ = g.Close(context.Background()) })
		w := startWorker(t, g, p, q, ok)
		mu.Lock()
		live = []*queue.Worker{w}
		mu.Unlock()
		enqueue(t, q, jobs)
		tu.Eventually(t, tu.Wait, "the jobs done", func() bool { return w.Stats().Processed == uint64(jobs) })
		return w, g
	}
	_, g1 := run(3)
	s := scrape(t, c)
	if got := s.must("bounded_queue_jobs_processed_total", "queue", "mail"); got != 3 {
		t.Fatalf("processed %v, want 3", got)
	}
	// The restart: the first worker stops, a new one takes over.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	w2, _ := run(2)
	for range 2 { // and it stays so at the next scrape
		s = scrape(t, c)
		if got := s.must("bounded_queue_jobs_processed_total", "queue", "mail"); got != 5 {
			t.Fatalf("processed %v after the restart, want 5 (3 of the old worker, 2 of the new)", got)
		}
		if got := s.must("bounded_queue_worker_concurrency", "queue", "mail"); got != float64(w2.Stats().Concurrency) {
			t.Fatalf("concurrency %v: a gauge counts the live worker only", got)
		}
	}
	// A worker given twice counts once.
	mu.Lock()
	live = append(live, live[0])
	mu.Unlock()
	if got := scrape(t, c).must("bounded_queue_jobs_processed_total", "queue", "mail"); got != 5 {
		t.Fatalf("processed %v with the worker listed twice, want 5", got)
	}
}
