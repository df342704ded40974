// Command chatservice is the post-mortem's chat backend rebuilt on bounded:
// an HTTP API in front of three queues (chat, embeddings, webhooks) with five
// workers each, a reply cache, an agent-config cache with a slow loader, a
// per-user rate limit, memory watching and health checks, on one Redis
// connection budget and one lifecycle group.
//
//	cd examples   # its own Go module
//	go run ./chatservice                        # embedded Redis (miniredis), nothing to install
//	go run ./chatservice -redis redis://127.0.0.1:6380
//
//	curl -s -XPOST localhost:8080/api/chat -d '{"user":"ada","agent":"assistant","message":"hello"}'
//	curl -s localhost:8080/api/chat/<id>
//	curl -s localhost:8080/api/agents
//	curl -s localhost:8080/healthz
//	curl -s localhost:8080/debug/bounded
//	curl -s localhost:8080/debug/bounded/history
//	curl -s localhost:8080/metrics                    # Prometheus (contrib/prometheus)
//
// Every error answer is JSON, {"error": "...", "code": "..."}. When the
// chat workers cannot keep up, POST /api/chat sheds: 503 with Retry-After
// once more chats wait for a handler than -wait-target allows (the chats
// admitted and not started, and the waits measured at start), a chat would
// wait longer than -wait-budget by the queue's backlog, or a queue holds its
// -max-len-<queue>; /healthz says "degraded" while it does.
//
// Design notes and overload figures: docs/chatservice.md.
//
// SIGINT or SIGTERM closes the lifecycle group with a deadline
// (-shutdown-timeout): the HTTP server stops accepting and finishes its
// requests, the workers drain, the pool closes last, and the exit log lists
// what was stopped and that no task remains. examples/loadtest drives it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/memwatch"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("chatservice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr      = fs.String("addr", "127.0.0.1:8080", "HTTP listen `address`")
		redisURL  = fs.String("redis", "", "Redis `URL` (redis://host:port); default $REDIS_URL, else an embedded miniredis")
		cfg       Config
		timeout   = fs.Duration("shutdown-timeout", 10*time.Second, "how long shutdown may take before it gives up on what is still running")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		memFrac   = fs.Float64("memory-limit-fraction", 0.85, "set GOMEMLIMIT to this `fraction` of the container's memory limit (if any, and unless GOMEMLIMIT is set)")
		memPeriod = fs.Duration("memwatch-interval", memwatch.DefaultInterval, "memory sampling interval")
	)
	fs.IntVar(&cfg.Concurrency, "concurrency", 5, "handlers per queue")
	fs.DurationVar(&cfg.Latency, "latency", 2*time.Millisecond, "mean simulated model latency (each call takes 0.5x to 1.5x)")
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0.01, "probability that a simulated model call fails (the queue retries it)")
	fs.IntVar(&cfg.Rate, "rate", 50, "chats per user per -rate-period")
	fs.DurationVar(&cfg.RatePeriod, "rate-period", time.Second, "period of -rate")
	fs.IntVar(&cfg.Burst, "burst", 100, "burst of chats per user (set -rate 1 -burst 2 to see 429s)")
	fs.DurationVar(&cfg.AgentsLatency, "agents-latency", 100*time.Millisecond, "latency of the slow agent-config loader")
	fs.DurationVar(&cfg.ReplyTTL, "reply-ttl", 10*time.Minute, "how long replies stay readable")
	fs.IntVar(&cfg.MaxMessage, "max-message", 4000, "largest chat message, in bytes")
	fs.IntVar(&cfg.MaxConns, "max-conns", 1024, "most HTTP connections open at once")
	fs.IntVar(&cfg.RequestConns, "request-conns", 20, "Redis connections of the request lane")
	fs.IntVar(&cfg.RequestWaiters, "request-waiters", 0, "callers that may wait for a request-lane connection (0: 10 per connection)")
	fs.DurationVar(&cfg.WaitTarget, "wait-target", 0, "shed chats (503, Retry-After) once the chats admitted here and not started exceed the free chat handlers plus this times the drain rate, or every chat started for 100ms waited longer than this (0: -latency/4; negative: neither)")
	fs.DurationVar(&cfg.WaitBudget, "wait-budget", 0, "shed chats (503, Retry-After) that would wait longer than this for a handler (0: 2 x -latency; negative: no budget)")
	for i, name := range chatapi.Queues() {
		fs.Int64Var(&cfg.MaxLen[i], "max-len-"+name, 10_000, "the "+name+" queue's queue.Config.MaxLen (ready + delayed); chats are shed while it is full; negative: unbounded")
	}
	fs.Func("paid-users", "comma-separated `users` whose chats go to the paid lane ("+chatapi.QueueChatPaid+"): a free chat handler takes them first", func(v string) error {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				cfg.PaidUsers = append(cfg.PaidUsers, u)
			}
		}
		return nil
	})
	fs.BoolVar(&cfg.AdminMutations, "admin-mutations", false, "let the dashboard at /admin/ requeue, delete, purge and cancel jobs and pause and resume queues (read-only without it; anyone who reaches the port may use it)")
	fs.BoolVar(&cfg.NoShedding, "no-shedding", false, "accept every valid chat, however long the queues (for comparison runs)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(stderr, "chatservice: -log-level:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// go-redis logs dial failures through a package-level logger; main is the
	// one place that may set a global, so they land in our log.
	redis.SetLogger(redisLogger{logger.With("component", "go-redis")})

	res, err := memwatch.SetMemoryLimit(*memFrac)
	logger.Info("memory limit", "result", res.String(), "err", err)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := lifecycle.NewWithConfig(lifecycle.Config{
		Logger: logger.With("component", "lifecycle"),
		// A task that fails on its own (the HTTP server's Serve) takes the
		// service down cleanly rather than leaving it half alive.
		StopOnError:     true,
		ShutdownTimeout: *timeout,
	})

	if *redisURL == "" {
		*redisURL = os.Getenv("REDIS_URL")
	}
	if *redisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			logger.Error("starting the embedded Redis", "err", err)
			return 1
		}
		// Registered first, so closed last: after the pool that talks to it.
		_ = g.OnClose("embedded redis (miniredis)", func(context.Context) error { m.Close(); return nil })
		*redisURL = "redis://" + m.Addr()
		logger.Info("using an embedded Redis (miniredis); pass -redis or set REDIS_URL for a real server", "addr", m.Addr())
	}
	cfg.RedisURL = *redisURL
	cfg.Logger = logger
	cfg.Memwatch = memwatch.Config{Interval: *memPeriod, ReadRSS: true}

	s, err := newService(g, cfg)
	if err != nil {
		logger.Error("starting the service", "err", err)
		shutdown(logger, g, *timeout)
		return 1
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		logger.Error("listening", "addr", *addr, "err", err)
		shutdown(logger, g, *timeout)
		return 1
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s.warm(wctx)
	cancel()
	if err := s.serve(ln); err != nil {
		logger.Error("serving", "err", err)
		shutdown(logger, g, *timeout)
		return 1
	}
	logger.Info("listening", "url", "http://"+ln.Addr().String(), "redis", redact(cfg.RedisURL),
		"queues", "chat, embeddings, webhooks", "concurrency", s.cfg.Concurrency, "latency", s.cfg.Latency,
		"fail_rate", s.cfg.FailRate, "shedding", !s.cfg.NoShedding, "wait_budget", s.cfg.WaitBudget, "wait_target", s.cfg.WaitTarget, "max_len", fmt.Sprint(s.cfg.MaxLen), "rate", fmt.Sprintf("%d/%s burst %d", s.cfg.Rate, s.cfg.RatePeriod, s.cfg.Burst),
		"tasks", len(g.Tasks()))

	// Until SIGINT or SIGTERM, or a task fails; then Close with -timeout as
	// the deadline.
	// The shutdown's duration is measured from the signal; for a shutdown
	// a task asked for (StopOnError) it is not known here and not logged.
	var signalled atomic.Int64
	context.AfterFunc(ctx, func() {
		signalled.Store(time.Now().UnixNano())
		stop() // a second signal kills at once
	})
	tasks := g.Tasks()
	err = g.Run(ctx)
	var start time.Time
	if ns := signalled.Load(); ns != 0 {
		start = time.Unix(0, ns)
	}
	if stopped(logger, g, tasks, start, err) != nil {
		return 1
	}
	return 0
}

// shutdown closes the group within timeout and logs what was stopped and
// what, if anything, remains.
func shutdown(logger *slog.Logger, g *lifecycle.Group, timeout time.Duration) error {
	tasks := g.Tasks()
	logger.Info("shutting down", "tasks", len(tasks), "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return stopped(logger, g, tasks, time.Now(), g.Close(ctx))
}

// stopped logs what a Close that began at start (zero: unknown) stopped
// and what, if anything, remains, and returns err, the Close's result.
func stopped(logger *slog.Logger, g *lifecycle.Group, tasks []lifecycle.Task, start time.Time, err error) error {
	names := make([]string, len(tasks))
	for i, t := range tasks {
		names[i] = t.String()
	}
	logger.Info("stopped", "tasks", strings.Join(names, ", "))
	left := g.Tasks()
	if err != nil {
		logger.Error("shutdown incomplete", "err", err, "tasks_remaining", len(left), "remaining", fmt.Sprint(left))
		return err
	}
	attrs := []any{"stopped", len(tasks), "tasks_remaining", len(left)}
	if !start.IsZero() {
		attrs = append(attrs, "took", time.Since(start).Round(time.Millisecond))
	}
	logger.Info("shutdown complete", attrs...)
	return nil
}

// redact hides a password in a Redis URL.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// redisLogger sends go-redis's log lines to slog.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, fmt.Sprintf(format, v...))
}
