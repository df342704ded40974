package prometheus_test

import (
	"context"
	"testing"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/internal/redistest"
	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// Two queues named "mail" in two namespaces are two queues: one collector
// takes both, and their counts and their workers' counters are exported
// apart (label queue_namespace), never summed.
func TestQueueCollectorSameNameInTwoNamespaces(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{redistest.Mini(t).Addr()}})
	g := lifecycle.New()
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	var qs []*queue.Queue
	var ws []*queue.Worker
	for i, ns := range []string{"a", "b"} {
		q, err := queue.New(p, "mail", queue.Config{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		enqueue(t, q, i+1, queue.Delay(1e12)) // a: 1 delayed, b: 2
		enqueue(t, q, 2*(i+1))                // a: 2 to run, b: 4
		c, err := queue.NewConsumer(p, queue.ConsumerConfig{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		w, err := queue.NewWorker(c, q, func(context.Context, *queue.Job) error { return nil }, queue.WorkerConfig{Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(g); err != nil {
			t.Fatal(err)
		}
		want := uint64(2 * (i + 1))
		tu.Eventually(t, tu.Wait, "the ready jobs done", func() bool { return w.Stats().Processed == want })
		qs, ws = append(qs, q), append(ws, w)
	}
	c := bprom.NewQueueCollector(bprom.QueueConfig{Queues: qs, Workers: ws})
	s := scrape(t, c)
	for ns, want := range map[string]float64{"a": 1, "b": 2} {
		if got := s.must("bounded_queue_delayed_jobs", "queue", "mail", "queue_namespace", ns); got != want {
			t.Errorf("delayed of mail in %s: %v, want %v", ns, got, want)
		}
		if got := s.must("bounded_queue_jobs_processed_total", "queue", "mail", "queue_namespace", ns); got != 2*want {
			t.Errorf("processed of mail in %s: %v, want %v", ns, got, 2*want)
		}
	}
}

// The namespace label is not "namespace": Prometheus's Kubernetes service
// discovery (ServiceMonitor, PodMonitor, the usual kubernetes_sd relabeling)
// gives every target a "namespace" label, the Kubernetes one, and a scraped
// label of that name is renamed exported_namespace (honor_labels false, the
// default). The dashboard's `by (namespace, queue)` then grouped by the
// Kubernetes namespace: queues of one name in two bounded namespaces of one
// Kubernetes namespace were summed again. No sample carries a label that
// Prometheus or its Kubernetes discovery sets on targets.
func TestQueueLabelsAreNotTargetLabels(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{redistest.Mini(t).Addr()}})
	q, err := queue.New(p, "mail", queue.Config{Namespace: "a"})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, q, 1)
	s := scrape(t, bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}}))
	target := map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "service": true,
		"container": true, "endpoint": true, "node": true}
	n := 0
	for _, mf := range s.mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				n++
				if target[lp.GetName()] {
					t.Errorf("%s has label %q, which Prometheus renames exported_%s when the target has it", mf.GetName(), lp.GetName(), lp.GetName())
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no labelled sample scraped")
	}
	if got := s.must("bounded_queue_ready_jobs", "queue", "mail", "queue_namespace", "a"); got != 1 {
		t.Errorf("ready of mail in a: %v, want 1", got)
	}
}
