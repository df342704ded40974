package prometheus_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

func Example() {
	m := miniredis.NewMiniRedis() // any Redis; an embedded one keeps the example self-contained
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	q, _ := queue.New(p, "emails", queue.Config{})
	_, _ = q.Enqueue(context.Background(), []byte("welcome mail"))

	// One registry per program; the collectors read the components only
	// when /metrics is scraped.
	reg := prom.NewRegistry()
	reg.MustRegister(
		bprom.NewPoolCollector(p),
		bprom.NewQueueCollector(bprom.QueueConfig{Queues: []*queue.Queue{q}}),
	)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	rec := httptest.NewRecorder()
	metrics.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "bounded_queue_ready_jobs") || strings.HasPrefix(line, "bounded_pool_max_connections") {
			fmt.Println(line)
		}
	}
	// Output:
	// bounded_pool_max_connections{lane="background"} 4
	// bounded_pool_max_connections{lane="blocking"} 4
	// bounded_pool_max_connections{lane="request"} 20
	// bounded_queue_ready_jobs{queue="emails",queue_namespace="bq"} 1
}
