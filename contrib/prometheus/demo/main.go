// Command demo runs bounded's components under a steady synthetic load and
// serves their metrics at /metrics through contrib/prometheus: a target for
// a local Prometheus and for docs/grafana-dashboard.json.
//
//	go run ./demo                       # from contrib/prometheus; embedded Redis, :9464
//	go run ./demo -redis redis://127.0.0.1:6390 -addr 127.0.0.1:9464 -rate 200
//
// It is the shape of examples/chatservice (three queues on one consumer, a
// cache with a slow loader, a per-user rate limit, memwatch, one lifecycle
// group), not that service itself: examples/chatservice belongs to the
// library's module, which must not require client_golang, and a main
// package cannot be imported from here. The wiring a service needs is the
// registry in serveMetrics, nothing else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bounded-go/bounded/cache"
	bprom "github.com/bounded-go/bounded/contrib/prometheus"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// options are the demo's flags.
type options struct {
	addr     string
	redisURL string
	rate     float64 // chats per second
	latency  time.Duration
	failRate float64
}

// maxRate is the highest -rate: one chat a microsecond.
const maxRate = 1e6

// run runs the demo until ctx ends. listening, if not nil, receives the
// address /metrics is served on.
func run(ctx context.Context, args []string, stderr io.Writer, listening chan<- string) error {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:9464", "listen `address` of /metrics")
	fs.StringVar(&o.redisURL, "redis", os.Getenv("REDIS_URL"), "Redis `URL`; empty: an embedded miniredis")
	fs.Float64Var(&o.rate, "rate", 50, "chats enqueued per second")
	fs.DurationVar(&o.latency, "latency", 5*time.Millisecond, "mean time a job's handler takes")
	fs.Float64Var(&o.failRate, "fail-rate", 0.02, "probability that a run fails (and is retried)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Written so that NaN fails too; a rate over maxRate would tick every
	// 0ns, which time.NewTicker refuses with a panic.
	if !(o.rate > 0 && o.rate <= maxRate) || o.latency < 0 || !(o.failRate >= 0 && o.failRate <= 1) {
		return fmt.Errorf("-rate must be in (0, %g], -latency not negative, -fail-rate in [0, 1]; got %g, %s, %g",
			float64(maxRate), o.rate, o.latency, o.failRate)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.redisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.Start(); err != nil {
			return err
		}
		defer m.Close()
		o.redisURL = "redis://" + m.Addr()
	}

	g := lifecycle.NewWithConfig(lifecycle.Config{Logger: log})
	d, err := build(g, o, log)
	if err == nil {
		err = d.serveMetrics(g, o.addr, listening)
	}
	if err == nil {
		err = g.Go("load", d.load)
	}
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return errors.Join(err, g.Close(closeCtx))
	}
	return g.Run(ctx)
}

// demo is the running components.
type demo struct {
	o       options
	p       *pool.Pool
	queues  []*queue.Queue
	workers []*queue.Worker
	agents  *cache.Cache[string]
	limiter *ratelimit.Limiter
	mem     *memwatch.Watcher
}

func build(g *lifecycle.Group, o options, log *slog.Logger) (*demo, error) {
	d := &demo{o: o}
	var err error
	if d.p, err = pool.New(pool.Config{URL: o.redisURL, Logger: log.With("component", "pool")}); err != nil {
		return nil, err
	}
	if err := g.OnClose("redis pool", func(context.Context) error { return d.p.Close() }); err != nil {
		_ = d.p.Close()
		return nil, err
	}
	if d.mem, err = memwatch.New(memwatch.Config{Interval: time.Second, Logger: log.With("component", "memwatch")}); err != nil {
		return nil, err
	}
	if err := d.mem.Start(g); err != nil {
		return nil, err
	}
	if d.agents, err = cache.New(d.p, "agents", cache.Config[string]{TTL: 10 * time.Second, MaxEntries: 100,
		Logger: log.With("component", "cache")}); err != nil {
		return nil, err
	}
	if err := d.agents.Start(g); err != nil {
		return nil, err
	}
	if d.limiter, err = ratelimit.New(d.p, "chat", ratelimit.Config{Rate: 5, Period: time.Second, Burst: 10,
		Logger: log.With("component", "ratelimit")}); err != nil {
		return nil, err
	}
	consumer, err := queue.NewConsumer(d.p, queue.ConsumerConfig{Logger: log.With("component", "queue")})
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"chat", "embeddings", "webhooks"} {
		q, err := queue.New(d.p, name, queue.Config{MaxLen: 10_000, Logger: log.With("component", "queue")})
		if err != nil {
			return nil, err
		}
		w, err := queue.NewWorker(consumer, q, d.handle(q), queue.WorkerConfig{Concurrency: 5, RetryBase: 50 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		if err := w.Start(g); err != nil {
			return nil, err
		}
		d.queues, d.workers = append(d.queues, q), append(d.workers, w)
	}
	return d, nil
}

// registry holds every collector: what a service registers.
func (d *demo) registry() *prom.Registry {
	reg := prom.NewRegistry()
	reg.MustRegister(
		bprom.NewPoolCollector(d.p),
		bprom.NewQueueCollector(bprom.QueueConfig{Queues: d.queues, Workers: d.workers}),
		bprom.NewCacheCollector(d.agents),
		bprom.NewLimiterCollector(d.limiter),
		bprom.NewMemwatchCollector(d.mem),
	)
	return reg
}

func (d *demo) serveMetrics(g *lifecycle.Group, addr string, listening chan<- string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry(), promhttp.HandlerOpts{Timeout: 5 * time.Second}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	// Serve returns once Shutdown is called, which the task does when the
	// group closes, within the group's close deadline.
	if err := g.Go("metrics server", func(ctx context.Context) error {
		shut := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(shut)
			_ = srv.Shutdown(lifecycle.CloseContext(ctx))
		})
		err := srv.Serve(ln)
		if !stop() {
			<-shut // nothing of the server outlives the task
		}
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}); err != nil {
		_ = ln.Close()
		return err
	}
	if listening != nil {
		listening <- ln.Addr().String()
	}
	return nil
}

// handle is a queue's handler: a simulated call of about o.latency that
// fails at o.failRate; a chat enqueues an embedding and a webhook.
func (d *demo) handle(q *queue.Queue) queue.Handler {
	return func(ctx context.Context, j *queue.Job) error {
		t := time.NewTimer(time.Duration(float64(d.o.latency) * (0.5 + rand.Float64())))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		if rand.Float64() < d.o.failRate {
			return errors.New("simulated failure")
		}
		if q == d.queues[0] {
			for _, next := range d.queues[1:] {
				if _, err := next.Enqueue(ctx, j.Payload); err != nil && !errors.Is(err, queue.ErrQueueFull) {
					return err
				}
			}
		}
		return nil
	}
}

// load offers o.rate chats a second from 50 users: each reads an agent
// through the cache, asks the limiter, and enqueues a chat if allowed.
func (d *demo) load(ctx context.Context) error {
	tick := time.NewTicker(time.Duration(float64(time.Second) / d.o.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		user := "user" + strconv.Itoa(rand.IntN(50))
		agent := "agent" + strconv.Itoa(rand.IntN(20))
		_, _ = d.agents.GetOrLoad(ctx, agent, func(context.Context) (string, error) {
			time.Sleep(2 * time.Millisecond) // a slow source of truth
			return "config of " + agent, nil
		})
		if r, err := d.limiter.Allow(ctx, user); err != nil || !r.Allowed {
			continue
		}
		_, _ = d.queues[0].Enqueue(ctx, []byte(user+": hello"))
	}
}
