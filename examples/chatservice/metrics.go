package main

import (
	"fmt"
	"log/slog"
	"net/http"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/queue"
)

// maxScrapes is how many GET /metrics may run at once; the next one gets a
// 503. A scrape reads each queue's counts from Redis (within
// bprom.DefaultScrapeTimeout, on the request lane), so scrapers that pile
// up must not take the lane from the chats.
const maxScrapes = 2

// newMetrics builds the handler of GET /metrics: a registry of its own (not
// the global one) with contrib/prometheus's collectors for the pool's lanes,
// the three queues and their workers, both caches, the limiter and the
// memory watcher, and client_golang's Go runtime and process collectors.
// Nothing runs between scrapes; the queue collector reads Redis only when
// scraped, with a bounded timeout, and serves its last values past it.
//
// No promhttp Timeout: it gathers on a goroutine of its own that outlives a
// timed-out request, which no lifecycle task would own. The queue
// collector's timeout bounds the only slow part.
func (s *service) newMetrics() (http.Handler, error) {
	queues := make([]*queue.Queue, 0, chatapi.NumQueues+1)
	for _, name := range chatapi.AllQueues() {
		queues = append(queues, s.queues[name])
	}
	reg := prom.NewRegistry()
	for _, c := range []prom.Collector{
		bprom.NewPoolCollector(s.p),
		bprom.NewQueueCollector(bprom.QueueConfig{Queues: queues, Workers: s.workers}),
		bprom.NewCacheCollector(s.replies, s.agents),
		bprom.NewLimiterCollector(s.limiter),
		bprom.NewMemwatchCollector(s.mem),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("chatservice: registering the metrics collector %T: %w", c, err)
		}
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            promLogger{s.log.With("component", "metrics")},
		MaxRequestsInFlight: maxScrapes,
	}), nil
}

// promLogger sends promhttp's errors (a collector that failed, a client
// gone mid-answer) to slog.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) {
	p.l.Warn("metrics: serving /metrics failed", "err", fmt.Sprint(v...))
}
