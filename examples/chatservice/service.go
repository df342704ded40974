package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

// Config configures the service. The zero value is useful except for
// RedisURL: newService fills in the defaults documented on each field.
type Config struct {
	// RedisURL is the redis:// URL of the server. Required.
	RedisURL string
	// AdminMutations lets the dashboard at /admin/ requeue, delete, purge
	// and cancel jobs and pause and resume queues; without it the dashboard
	// is read-only.
	AdminMutations bool
	// Concurrency is the number of handlers of each queue. Default 5 (the
	// post-mortem's 3 queues x 5). The chat queue and its paid lane
	// (chatapi.QueueChatPaid) share theirs.
	Concurrency int
	// PaidUsers are the users whose chats go to the paid lane: a free chat
	// handler takes their chats before any other user's, so a paying
	// user's chat waits at most for one chat to end, however long the
	// backlog of the others (a real service would read the plan from its
	// user store). Their chats are admitted and shed as everyone's.
	PaidUsers []string
	// Latency is the mean simulated model latency of a chat job; each call
	// takes between half and one and a half times it. Default 2ms. With
	// Concurrency handlers the chat queue runs about Concurrency/Latency
	// jobs a second.
	Latency time.Duration
	// FailRate is the probability, in [0, 1], that one simulated model call
	// fails; the queue retries it. Zero means none fail.
	FailRate float64
	// Rate and Burst limit POST /api/chat per user: Rate per RatePeriod,
	// bursts of Burst. Defaults 50 per second, burst 100.
	Rate       int
	RatePeriod time.Duration
	Burst      int
	// AgentsLatency is how long the (simulated) agent store takes to load
	// the agent configs on a cache miss. Default 100ms.
	AgentsLatency time.Duration
	// ReplyTTL is how long a reply stays readable. Default 10 minutes.
	ReplyTTL time.Duration
	// MaxMessage bounds a chat message, in bytes. Default 4000.
	MaxMessage int
	// MaxConns bounds the HTTP connections open at once; more wait in the
	// listen backlog. Default 1024.
	MaxConns int
	// RequestConns is the size of the pool's request lane. Default
	// pool.DefaultRequestSize.
	RequestConns int
	// RequestWaiters is how many callers may wait for a request-lane
	// connection at once; the next one gets a 503 at once. Default 10 x
	// RequestConns: a POST holds a connection for three short round trips
	// (the limiter, the pending marker, the enqueue), so a burst of a
	// hundred clients plus the 15 queue handlers queues for milliseconds,
	// not for the lane's MaxWait, and the pool's default of 4 x RequestConns
	// would turn such a burst into 503s.
	RequestWaiters int
	// WaitBudget is the longest a chat accepted now should wait for a
	// handler, as the shedder estimates it (the chat backlog over the
	// workers' recent drain rate): past it, POST /api/chat answers 503 with
	// Retry-After instead of queueing a chat whose reply would be late.
	// Default two mean model calls (2 x Latency, 4ms at the default). It
	// reads Redis at most every 20ms, so it lags a fast overload (measured:
	// a p99 wait of 29ms at 5x with it alone); WaitTarget is what holds the
	// latency of accepted chats, this a coarse bound for a backlog queued
	// by other instances. A service whose clients would rather wait than
	// retry sets both higher. Negative: no wait budget.
	WaitBudget time.Duration
	// WaitTarget is the enqueue-to-start wait, beyond the transport, that
	// an accepted chat may spend waiting for a handler, held by two
	// controllers on what this process measures rather than on readings of
	// Redis (which lag: 20ms between readings is 46 arrivals at 2,300/s):
	// an in-flight gate (the chats admitted here and not started yet stay
	// under the free chat handlers plus WaitTarget times the drain rate),
	// and a CoDel-style controller on the waits the chat workers measure
	// at start (every start over WaitTarget for 100ms sheds until one is
	// within it). Default Latency/4 (500µs): no chat waits behind another
	// below 2,000 chats/s, so what is left of the wait is the transport
	// (the enqueue, the fetch, the scheduler); measured figures in
	// docs/chatservice.md. Negative: neither controller.
	WaitTarget time.Duration
	// MaxLen bounds each queue's backlog (ready + delayed), in
	// chatapi.Queues() order: it is each queue's queue.Config.MaxLen, which
	// the enqueue enforces atomically; a chat refused with
	// queue.ErrQueueFull is answered 503 with the FullError's RetryAfter.
	// The shedder also refuses a chat, before any Redis work, while its
	// estimate says one of them is full (a follow-up could not be queued;
	// the chat job would retry it).
	// Default 10,000 each: at about 600 bytes a job in Redis, 6 MB a queue,
	// and about 6s of the chat workers' capacity at the default Latency; a
	// backstop for when the wait budget has no rate to go by (at start).
	// Negative: unbounded.
	MaxLen [chatapi.NumQueues]int64
	// NoShedding turns the shedder off: every valid chat is queued (the
	// service as it was before load shedding, for comparison runs).
	NoShedding bool
	// Memwatch configures the memory watcher; its Logger defaults to the
	// service's.
	Memwatch memwatch.Config
	// Logger receives the service's log and is handed to every component.
	// Nil discards.
	Logger *slog.Logger
}

func (c *Config) fill() error {
	if c.RedisURL == "" {
		return errors.New("chatservice: Config.RedisURL is required")
	}
	if c.FailRate < 0 || c.FailRate > 1 {
		return fmt.Errorf("chatservice: Config.FailRate must be in [0, 1], got %g", c.FailRate)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Concurrency, 5)
	def(&c.Rate, 50)
	def(&c.Burst, 100)
	def(&c.MaxMessage, 4000)
	def(&c.MaxConns, 1024)
	def(&c.RequestConns, pool.DefaultRequestSize)
	def(&c.RequestWaiters, 10*c.RequestConns)
	defDur(&c.Latency, 2*time.Millisecond)
	defDur(&c.RatePeriod, time.Second)
	defDur(&c.AgentsLatency, 100*time.Millisecond)
	defDur(&c.ReplyTTL, 10*time.Minute)
	defDur(&c.WaitBudget, 2*c.Latency)
	defDur(&c.WaitTarget, c.Latency/4)
	c.WaitTarget = max(c.WaitTarget, 0)
	for i := range c.MaxLen {
		if c.MaxLen[i] == 0 {
			c.MaxLen[i] = 10_000
		}
		c.MaxLen[i] = max(c.MaxLen[i], 0) // negative: unbounded
	}
	c.WaitBudget = max(c.WaitBudget, 0)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Memwatch.Logger == nil {
		c.Memwatch.Logger = c.Logger.With("component", "memwatch")
	}
	for name, v := range map[string]int{"Concurrency": c.Concurrency, "Rate": c.Rate, "Burst": c.Burst,
		"MaxMessage": c.MaxMessage, "MaxConns": c.MaxConns, "RequestConns": c.RequestConns, "RequestWaiters": c.RequestWaiters} {
		if v < 0 {
			return fmt.Errorf("chatservice: Config.%s must not be negative, got %d", name, v)
		}
	}
	for name, v := range map[string]time.Duration{"Latency": c.Latency, "RatePeriod": c.RatePeriod,
		"AgentsLatency": c.AgentsLatency, "ReplyTTL": c.ReplyTTL} {
		if v < 0 {
			return fmt.Errorf("chatservice: Config.%s must not be negative, got %s", name, v)
		}
	}
	return nil
}

// service is the chat backend: an HTTP API in front of three queues, two
// caches, a per-user rate limit and a memory watcher, all on one pool and
// one lifecycle group.
//
// Everything it starts is a task or closer of the group given to
// newService; closing that group stops it all (the HTTP server first stops
// accepting, the workers drain, the pool closes last). Its methods are safe
// for concurrent use.
type service struct {
	cfg     Config
	log     *slog.Logger
	g       *lifecycle.Group
	started time.Time

	p       *pool.Pool
	mem     *memwatch.Watcher
	limiter *ratelimit.Limiter
	// replies holds each chat: a pending marker from POST, the reply once the
	// model answered.
	replies *cache.Cache[chatapi.Reply]
	// agents holds the agent configs under one key, loaded by a slow loader.
	agents *cache.Cache[[]chatapi.Agent]

	queues map[string]*queue.Queue
	// admin is the dashboard mounted at /admin/.
	admin http.Handler
	// metrics serves GET /metrics: the components' Prometheus collectors.
	metrics http.Handler
	workers []*queue.Worker // in chatapi.Queues() order, then the paid lane's
	// paid holds Config.PaidUsers.
	paid map[string]bool
	// chatSlots are the handlers the chat queue and its paid lane share.
	chatSlots *queue.Slots
	// enqueueChat queues a chat job; a seam for tests.
	enqueueChat func(ctx context.Context, user string, payload []byte) (string, error)
	// shed decides which chats to refuse; nil with Config.NoShedding.
	shed *shedder
	// chatWait counts the enqueue-to-start latency of chat jobs on their
	// first run, in chatapi.WaitHistogram's buckets.
	chatWait [chatapi.WaitBuckets]atomic.Uint64
	// chatRunning is the chat handlers running now: the in-flight gate's
	// busy handlers, and the sojourn controller counts a wait only when
	// they were all busy.
	chatRunning atomic.Int64

	httpStats struct {
		accepted, badRequests, unavailable, errors atomic.Uint64
	}
	conns atomic.Pointer[limitListener] // set by serve
	// unavailableLog samples the log lines of 503s (logUnavailable).
	unavailableLog struct {
		last       atomic.Int64 // unix ns
		suppressed atomic.Uint64
	}
}

// agentsKey is the agents cache's one key: the whole list.
const agentsKey = "all"

// blockingConns sizes the pool's blocking lane to what the service
// reserves, no more: one connection for the queue consumer's fetch hub,
// whatever the number of queues (they are one slot group on a single
// Redis; on Redis Cluster a consumer holds one per slot of its queues, and
// the service does not run on Cluster), and one for the agents cache's
// invalidation subscriber; the replies cache runs no subscriber (see
// below). Another cache with invalidation or a second consumer fails at
// startup with pool.ErrOverBudget naming who holds the lane: raise this
// with it.
const blockingConns = 1 + 1

// newService builds the service on g: the pool (whose Close is g's first
// closer, so it runs last), the memory watcher, the caches, the limiter and
// the queue workers. Nothing listens until serve. If a step fails, newService
// returns the error; the caller closes g, which undoes the steps that ran.
func newService(g *lifecycle.Group, cfg Config) (*service, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &service{cfg: cfg, log: cfg.Logger, g: g, started: time.Now(), queues: make(map[string]*queue.Queue)}
	log := cfg.Logger

	var err error
	s.p, err = pool.New(pool.Config{
		URL:        cfg.RedisURL,
		ClientName: "chatservice",
		Request:    pool.LaneConfig{Size: cfg.RequestConns, MaxWaiters: cfg.RequestWaiters},
		Blocking:   pool.BlockingConfig{Size: blockingConns},
		Logger:     log.With("component", "pool"),
	})
	if err != nil {
		return nil, err
	}
	if err := g.OnClose("redis pool", func(context.Context) error { return s.p.Close() }); err != nil {
		_ = s.p.Close()
		return nil, err
	}

	if s.mem, err = memwatch.New(cfg.Memwatch); err != nil {
		return nil, err
	}
	if err := s.mem.Start(g); err != nil {
		return nil, err
	}

	// A reply is written once and read about once, by the client that
	// polls for it, and every instance behind a load balancer must see the
	// pending marker turn into the reply at once. So replies live in Redis
	// only: a local tier would hold memory for entries read once, and would
	// need the invalidation subscriber (a blocking connection) to stay
	// coherent across instances.
	s.replies, err = cache.New(s.p, "replies", cache.Config[chatapi.Reply]{
		TTL:            cfg.ReplyTTL,
		NoLocal:        true,
		NoInvalidation: true,
		MaxValueBytes:  4*cfg.MaxMessage + 4<<10,       // the message, escaped, and the reply
		Logger:         log.With("component", "cache"), // the cache adds cache=replies itself
	})
	if err != nil {
		return nil, err
	}
	if err := s.replies.Start(g); err != nil {
		return nil, err
	}
	// Agent configs are read on every request and change rarely: the local
	// tier answers (no Redis round trip), the subscriber drops it on every
	// instance when someone changes them, and LocalTTL bounds staleness if
	// a message is lost.
	s.agents, err = cache.New(s.p, "agents", cache.Config[[]chatapi.Agent]{
		TTL:        time.Hour,
		MaxEntries: 16,
		MaxBytes:   1 << 20,
		Logger:     log.With("component", "cache"),
	})
	if err != nil {
		return nil, err
	}
	if err := s.agents.Start(g); err != nil {
		return nil, err
	}

	s.limiter, err = ratelimit.New(s.p, "chat", ratelimit.Config{
		Rate: cfg.Rate, Period: cfg.RatePeriod, Burst: cfg.Burst,
		Logger: log.With("component", "ratelimit"),
	})
	if err != nil {
		return nil, err
	}

	handlers := map[string]queue.Handler{
		chatapi.QueueChat:       s.handleChat,
		chatapi.QueueEmbeddings: s.handleEmbedding,
		chatapi.QueueWebhooks:   s.handleWebhook,
	}
	// One consumer for the process: one heartbeat for every queue's worker,
	// and one blocking connection for all four queues.
	consumer, err := queue.NewConsumer(s.p, queue.ConsumerConfig{Logger: log.With("component", "queue")})
	if err != nil {
		return nil, err
	}
	// The chat queue and its paid lane share the chat handlers: at most
	// Concurrency model calls at once, as before the lane, and a freed
	// handler goes to the paid lane first (strict priority). The
	// follow-ups keep handlers of their own, so a chat backlog never
	// starves them.
	if s.chatSlots, err = queue.NewSlots(cfg.Concurrency); err != nil {
		return nil, err
	}
	s.paid = make(map[string]bool, len(cfg.PaidUsers))
	for _, u := range cfg.PaidUsers {
		s.paid[u] = true
	}
	for i, name := range chatapi.AllQueues() {
		// Not With("queue", name): the queue names itself in its records
		// (docs/logging.md), and the key would appear twice.
		qlog := log.With("component", "queue")
		wcfg := queue.WorkerConfig{
			Concurrency: cfg.Concurrency,
			JobTimeout:  30 * time.Second,
			RetryBase:   100 * time.Millisecond, // a failed model call is retried soon
			RetryMax:    5 * time.Second,
			Logger:      qlog,
		}
		maxLen, h := int64(0), handlers[name]
		switch name {
		case chatapi.QueueChat:
			wcfg.Slots = s.chatSlots
		case chatapi.QueueChatPaid:
			wcfg.Slots, wcfg.Priority, maxLen, h = s.chatSlots, 1, cfg.MaxLen[0], s.handleChat
		}
		if i < chatapi.NumQueues {
			maxLen = cfg.MaxLen[i]
		}
		q, err := queue.New(s.p, name, queue.Config{MaxPayload: 4*cfg.MaxMessage + 4<<10, MaxLen: maxLen, Logger: qlog})
		if err != nil {
			return nil, err
		}
		w, err := queue.NewWorker(consumer, q, h, wcfg)
		if err != nil {
			return nil, err
		}
		if err := w.Start(g); err != nil {
			return nil, err
		}
		s.queues[name] = q
		s.workers = append(s.workers, w)
	}
	if s.admin, err = s.newAdmin(); err != nil {
		return nil, err
	}
	if s.metrics, err = s.newMetrics(); err != nil {
		return nil, err
	}
	s.enqueueChat = func(ctx context.Context, user string, payload []byte) (string, error) {
		if s.paid[user] {
			return s.queues[chatapi.QueueChatPaid].Enqueue(ctx, payload)
		}
		return s.queues[chatapi.QueueChat].Enqueue(ctx, payload)
	}
	if !cfg.NoShedding {
		s.shed = newShedder(cfg.WaitBudget, cfg.MaxLen, s.readBacklog)
		if cfg.WaitTarget > 0 {
			s.shed.target = cfg.WaitTarget
			s.shed.soj = &sojourn{target: cfg.WaitTarget}
			// The handlers' own count, not the chat worker's Stats: the gate
			// reads it on every POST, and Stats takes the worker's lock.
			s.shed.gate = &gate{slots: int64(cfg.Concurrency), busy: s.chatRunning.Load}
		}
	}
	return s, nil
}

// readBacklog reads each queue's ready and delayed jobs and the chat
// workers' processed counter, for the shedder.
func (s *service) readBacklog(ctx context.Context) (backlogReading, error) {
	var r backlogReading
	for i, name := range chatapi.Queues() {
		st, err := s.queues[name].Stats(ctx)
		if err != nil {
			return r, err
		}
		r.backlog[i] = st.Ready + st.Delayed
	}
	// The chat stage is the chat queue and its paid lane, on the same
	// handlers.
	st, err := s.queues[chatapi.QueueChatPaid].Stats(ctx)
	if err != nil {
		return r, err
	}
	r.backlog[0] += st.Ready + st.Delayed
	r.slots = int64(s.chatSlots.Size())
	for _, w := range []*queue.Worker{s.workers[0], s.workers[chatapi.NumQueues]} {
		ws := w.Stats()
		r.processed += ws.Processed
		r.busy += ws.Busy
		r.fetched += max(int64(ws.InFlight)-ws.Busy, 0)
	}
	return r, nil
}

// observeChatWait records the enqueue-to-start latency of a chat job's
// first run (a retry's or a recovered job's wait is not the queue's).
// The shedder learns of the start too: the wait for its sojourn controller,
// and one chat less waiting for its gate.
// running is the chat handlers busy now, this one included.
func (s *service) observeChatWait(job *queue.Job, running int64) {
	if job.Attempt == 1 && job.Deliveries == 0 && !job.EnqueuedAt.IsZero() {
		wait := time.Since(job.EnqueuedAt)
		s.chatWait[chatapi.WaitBucket(wait)].Add(1)
		if s.shed != nil {
			s.shed.started(wait, running >= int64(s.cfg.Concurrency))
		}
	}
}

// chatWaitHistogram returns the counts of observeChatWait.
func (s *service) chatWaitHistogram() chatapi.WaitHistogram {
	h := chatapi.WaitHistogram{Counts: make([]uint64, len(s.chatWait))}
	for i := range s.chatWait {
		h.Counts[i] = s.chatWait[i].Load()
	}
	return h
}

// warm loads the agent configs so the first requests do not wait for the
// slow loader. A failure is logged: requests load them again on demand.
func (s *service) warm(ctx context.Context) {
	if _, err := s.agentList(ctx); err != nil {
		s.log.Warn("loading agents at startup failed; requests will retry", "err", err)
	}
}

// serve starts the HTTP server on ln as a task of the group. When the group
// closes, the task stops the listener at once (no new request arrives while
// the workers drain) and waits for the requests in flight until the Close
// deadline (lifecycle.CloseContext). A Serve that fails on its own returns
// its error from the task, which the group reports (main shuts down then).
func (s *service) serve(ln net.Listener) error {
	lim := newLimitListener(ln, s.cfg.MaxConns)
	s.conns.Store(lim)
	ln = lim
	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      35 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	err := s.g.Go("http server", func(ctx context.Context) error {
		// This goroutine ends when Serve returns, which the task waits for
		// on every path below.
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		select {
		case err := <-served:
			return fmt.Errorf("http server: %w", err)
		case <-ctx.Done():
		}
		err := srv.Shutdown(lifecycle.CloseContext(ctx))
		if err != nil {
			_ = srv.Close() // out of time: drop the connections still open
			err = fmt.Errorf("http server: shutdown: %w", err)
		}
		<-served
		return err
	})
	if err != nil {
		_ = ln.Close()
	}
	return err
}
