package prometheus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// histogramOf returns the histogram sample of name with labels.
func histogramOf(t *testing.T, l lookup, name string, labels ...string) *dto.Histogram {
	t.Helper()
	for _, mf := range l.mfs {
		if mf.GetName() != name {
			continue
		}
		if mf.GetType() != dto.MetricType_HISTOGRAM {
			t.Fatalf("%s is a %s, not a histogram", name, mf.GetType())
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return m.Histogram
		}
	}
	t.Fatalf("no histogram %s%v", name, labels)
	return nil
}

// cumulative returns the count of h's bucket with upper bound le.
func cumulative(t *testing.T, h *dto.Histogram, le float64) uint64 {
	t.Helper()
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	t.Fatalf("no bucket le=%v", le)
	return 0
}

func startWorker(t *testing.T, g *lifecycle.Group, p *pool.Pool, q *queue.Queue, h queue.Handler) *queue.Worker {
	t.Helper()
	cons, err := queue.NewConsumer(p, queue.ConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := queue.NewWorker(cons, q, h, queue.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestQueueCollectorHistograms: two workers of one queue (two consumers,
// as two processes would be) are summed into one histogram per queue;
// the enqueue-to-start delay comes from the jobs' enqueue time.
func TestQueueCollectorHistograms(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	g := lifecycle.New()
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	var done atomic.Int64
	h := func(context.Context, *queue.Job) error { done.Add(1); return nil }
	w1, w2 := startWorker(t, g, p, q, h), startWorker(t, g, p, q, h)
	enqueue(t, q, 6)
	tu.Eventually(t, tu.Wait, "six jobs done", func() bool { return w1.Stats().Processed+w2.Stats().Processed == 6 })

	c := bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}, Workers: []*queue.Worker{w1, w2}})
	s := scrape(t, c)
	sd := histogramOf(t, s, "bounded_queue_start_delay_seconds", "queue", "mail")
	if sd.GetSampleCount() != 6 {
		t.Fatalf("start delay count: %d, want 6", sd.GetSampleCount())
	}
	if got := cumulative(t, sd, 5000); got != 6 {
		t.Fatalf("start delays up to 5000s: %d, want 6", got)
	}
	if len(sd.GetBucket()) != 27 {
		t.Fatalf("%d buckets, want the 27 fixed ones", len(sd.GetBucket()))
	}
	run := histogramOf(t, s, "bounded_queue_run_duration_seconds", "queue", "mail")
	if run.GetSampleCount() != 6 || run.GetSampleSum() < 0 {
		t.Fatalf("run: count %d sum %v, want 6 and >= 0", run.GetSampleCount(), run.GetSampleSum())
	}
	if got := s.must("bounded_queue_oldest_ready_age_seconds", "queue", "mail"); got != 0 {
		t.Fatalf("oldest ready age of an empty queue: %v", got)
	}
}

// TestQueueCollectorOldestReadyAge reads the age of the oldest ready job at
// scrape time.
func TestQueueCollectorOldestReadyAge(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	var skew atomic.Int64
	q, err := queue.New(p, "mail", queue.Config{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(-time.Minute))
	enqueue(t, q, 1)
	skew.Store(0)
	enqueue(t, q, 1)
	c := bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}})
	if got := mustValue(t, c, "bounded_queue_oldest_ready_age_seconds", "queue", "mail"); got < 59.9 || got > 70 {
		t.Fatalf("oldest ready age: %vs, want about 60", got)
	}
}

func TestPoolCollectorWaitHistogram(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	ctx := context.Background()
	for range 5 {
		if err := p.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := p.Stats().Request.WaitTime
	h := histogramOf(t, scrape(t, bprom.NewPoolCollector(p)), "bounded_pool_wait_seconds", "lane", pool.LaneRequest)
	if h.GetSampleCount() != want.Count || want.Count < 5 {
		t.Fatalf("wait count: %d, want the lane's %d (>= 5)", h.GetSampleCount(), want.Count)
	}
	if got := cumulative(t, h, 0.00001); got != want.Counts[0] {
		t.Fatalf("waits up to 10µs: %d, want %d", got, want.Counts[0])
	}
	if h.GetSampleSum() != want.Sum {
		t.Fatalf("sum: %v, want %v", h.GetSampleSum(), want.Sum)
	}
}

// TestHistogramOfNoWorkers: a collector with queues and no workers exports
// no histogram (nothing in this process runs the queue's jobs).
func TestHistogramOfNoWorkers(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := newQueue(t, p, "mail")
	reg := prom.NewPedanticRegistry()
	reg.MustRegister(bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			t.Fatalf("histogram %s exported without a worker", mf.GetName())
		}
	}
}
