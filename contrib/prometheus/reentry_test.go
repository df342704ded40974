package prometheus_test

import (
	"context"
	"sync"
	"testing"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// A worker that LiveWorkers leaves out of one scrape and lists again (a
// list rebuilt while the program swaps its workers) is counted once: its
// last counts were kept in the sums when it left, and were added again,
// with its current ones, when it came back (processed read 6 for 3 jobs).
func TestQueueCollectorWorkerBackInLiveWorkersCountsOnce(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	var mu sync.Mutex
	var live []*queue.Worker
	set := func(ws ...*queue.Worker) {
		mu.Lock()
		defer mu.Unlock()
		live = ws
	}
	c := bprom.NewQueueCollector(bprom.QueueConfig{LiveWorkers: func() []*queue.Worker {
		mu.Lock()
		defer mu.Unlock()
		return live
	}})
	g := lifecycle.New()
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	w := startWorker(t, g, p, q, func(context.Context, *queue.Job) error { return nil })
	enqueue(t, q, 3)
	tu.Eventually(t, tu.Wait, "the jobs done", func() bool { return w.Stats().Processed == 3 })
	for i, ws := range [][]*queue.Worker{{w}, nil, {w}, nil, {w}} {
		set(ws...)
		if got := scrape(t, c).must("bounded_queue_jobs_processed_total", "queue", "mail"); got != 3 {
			t.Fatalf("scrape %d (%d workers listed): processed %v, want 3", i, len(ws), got)
		}
	}
	// And it counts what it did while it was out of the list.
	set()
	_ = scrape(t, c)
	enqueue(t, q, 2)
	tu.Eventually(t, tu.Wait, "the jobs done", func() bool { return w.Stats().Processed == 5 })
	set(w)
	if got := scrape(t, c).must("bounded_queue_jobs_processed_total", "queue", "mail"); got != 5 {
		t.Fatalf("processed %v once the worker is back, want 5", got)
	}
}
