package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Handler runs one job. Return nil when it is done, an error to have it
// retried (or dead-lettered after its last attempt), Permanent(err) to send
// it to the dead letters at once. ctx ends at the job's timeout and when the
// worker has to stop before the job finished; a handler should return then.
type Handler func(ctx context.Context, job *Job) error

// Job is one run of a job, as a handler sees it.
type Job struct {
	ID          string
	Queue       string
	Payload     []byte // valid during the handler call only; copy it to keep it
	Attempt     int    // 1 on the first run
	MaxAttempts int
	Deliveries  int // times the job was recovered from a consumer that died
	EnqueuedAt  time.Time
}

// Defaults filled in by NewWorker for zero fields of WorkerConfig.
const (
	DefaultConcurrency       = 10
	DefaultBlockTimeout      = 5 * time.Second
	DefaultRetryBase         = time.Second
	DefaultRetryMax          = 10 * time.Minute
	DefaultMaxDeliveries     = 5
	DefaultHeartbeatInterval = 10 * time.Second
)

// MinHeartbeatInterval is the shortest WorkerConfig.HeartbeatInterval:
// every interval costs one pipeline per process, so the heartbeat sends at
// most 10 a second.
const MinHeartbeatInterval = 100 * time.Millisecond

// WorkerConfig configures a Worker. The zero value is useful: NewWorker
// fills in the defaults documented on each field.
type WorkerConfig struct {
	// Concurrency is the number of handler goroutines, and the most jobs the
	// worker holds at once (it never fetches more than it can run). Default 10.
	Concurrency int
	// BlockTimeout is how long one BLMOVE waits for a job. The fetcher
	// blocks in Redis instead of polling; this only bounds each wait, so an
	// idle queue costs one command per BlockTimeout. A whole number of
	// seconds (go-redis sends it so). While the queue has delayed jobs, each
	// BLMOVE that times out is followed by one read of the earliest due
	// time (see the package doc). Default 5s.
	BlockTimeout time.Duration
	// JobTimeout bounds one run when the job has no Timeout option of its
	// own: the handler's context is cancelled after it. Zero means no bound.
	JobTimeout time.Duration
	// RetryBase and RetryMax shape the default retry delay: exponential from
	// RetryBase, capped at RetryMax, with full jitter. Defaults 1s and 10m.
	RetryBase time.Duration
	RetryMax  time.Duration
	// Backoff, if set, replaces the default retry delay. attempt is the
	// number of the run that failed (1 for the first). A panic in Backoff
	// is recovered and logged, and the default delay is used.
	Backoff func(attempt int, err error) time.Duration
	// MaxDeliveries is how many times a job may be recovered from consumers
	// that died while holding it before it goes to the dead letters, so a
	// job that crashes its process cannot crash-loop a fleet. At most
	// 2^31-1. Default 5.
	MaxDeliveries int
	// HeartbeatInterval is how often this process proves it is alive and
	// checks for dead consumers. A consumer counts as dead HeartbeatTTL after
	// its last heartbeat, so a crashed process's jobs are back in the ready
	// list HeartbeatTTL + HeartbeatInterval after it died (defaults 10s and
	// 2 x HeartbeatInterval: 30s), later only when its sweep had to wait
	// (Redis errors, another process sweeping) or more than 64 consumers
	// died within the hour (see the package doc). HeartbeatInterval is at
	// least MinHeartbeatInterval (100ms). All workers of a
	// process on one pool and lifecycle group share one heartbeat, so these
	// must agree among them.
	HeartbeatInterval time.Duration
	HeartbeatTTL      time.Duration
	// ConsumerID names this process in Redis (its processing lists and
	// heartbeat). It must be unique among live processes. Default:
	// hostname-pid-random, chosen once per process. A stable ID (a StatefulSet pod name) lets a
	// restarted process take back its own unfinished jobs at once instead
	// of waiting for the heartbeat to expire (each counts a delivery, as
	// for a swept consumer: see MaxDeliveries).
	ConsumerID string
	// OnError, if set, is called after each failed run with the job and the
	// error, from the handler's goroutine, outside any lock. A panic in
	// OnError is recovered and logged; the job's outcome is unchanged.
	OnError func(job *Job, err error)
	// Logger receives what goes wrong. Nil uses the queue's logger.
	Logger *slog.Logger
}

func (c *WorkerConfig) fill(q *Queue) error {
	var errs []error
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > 10_000 {
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.Concurrency must be in 1..10000, got %d", c.Concurrency))
	}
	durs := []struct {
		v    *time.Duration
		def  time.Duration
		name string
	}{
		{&c.BlockTimeout, DefaultBlockTimeout, "BlockTimeout"},
		{&c.RetryBase, DefaultRetryBase, "RetryBase"},
		{&c.RetryMax, DefaultRetryMax, "RetryMax"},
		{&c.HeartbeatInterval, DefaultHeartbeatInterval, "HeartbeatInterval"},
		{&c.HeartbeatTTL, 2 * max(c.HeartbeatInterval, 0), "HeartbeatTTL"},
	}
	for _, d := range durs {
		if *d.v < 0 {
			errs = append(errs, fmt.Errorf("queue: WorkerConfig.%s must not be negative, got %s", d.name, *d.v))
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.HeartbeatTTL == 0 {
		c.HeartbeatTTL = 2 * c.HeartbeatInterval
	}
	if c.JobTimeout < 0 {
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.JobTimeout must not be negative, got %s", c.JobTimeout))
	}
	if c.BlockTimeout > 0 && (c.BlockTimeout < time.Second || c.BlockTimeout%time.Second != 0) {
		// go-redis sends BLMOVE's timeout in whole seconds: anything else
		// would be silently rounded.
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.BlockTimeout must be a whole number of seconds, at least 1s, got %s", c.BlockTimeout))
	}
	if c.HeartbeatInterval > 0 && c.HeartbeatInterval < MinHeartbeatInterval {
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.HeartbeatInterval must be at least %s, got %s (each interval costs one pipeline)", MinHeartbeatInterval, c.HeartbeatInterval))
	}
	if c.HeartbeatInterval > 0 && c.HeartbeatTTL <= c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.HeartbeatTTL (%s) must be longer than HeartbeatInterval (%s), or one late heartbeat makes a live process look dead",
			c.HeartbeatTTL, c.HeartbeatInterval))
	}
	if c.RetryMax < c.RetryBase {
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.RetryMax (%s) must not be below RetryBase (%s)", c.RetryMax, c.RetryBase))
	}
	switch {
	case c.MaxDeliveries == 0:
		c.MaxDeliveries = DefaultMaxDeliveries
	case c.MaxDeliveries < 0:
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.MaxDeliveries must not be negative, got %d", c.MaxDeliveries))
	case c.MaxDeliveries > maxCount:
		errs = append(errs, fmt.Errorf("queue: WorkerConfig.MaxDeliveries must be at most %d, got %d", maxCount, c.MaxDeliveries))
	}
	if c.ConsumerID != "" {
		if err := checkName("WorkerConfig.ConsumerID", c.ConsumerID); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Logger == nil {
		c.Logger = q.cfg.Logger
	}
	return errors.Join(errs...)
}

// Worker consumes one queue with Concurrency handlers.
//
// Per worker there is ONE fetcher goroutine holding ONE reserved
// blocking-lane connection (BLMOVE ready -> processing list), N handler
// goroutines fed by a channel, one acker that pipelines the outcomes, and one
// scheduler that promotes delayed jobs at their exact due time. All of them
// are lifecycle tasks of the group given to Start; closing the group drains
// the worker (see Start). A Worker is safe for concurrent use; it is started
// once (a Start that failed may be called again).
type Worker struct {
	q   *Queue
	h   Handler
	cfg WorkerConfig
	log *slog.Logger

	proc  string // this consumer's processing list
	res   *pool.Reservation
	node  *node
	sched *scheduler

	slots chan struct{} // one token per job held (fetched and not yet finished)
	jobs  chan delivery // fetched jobs waiting for a handler
	acks  chan ackOp    // outcomes waiting for the acker

	mu       sync.Mutex
	inflight map[string]struct{} // elements in our processing list, until acked

	startMu      sync.Mutex    // serializes Start
	started      bool          // guarded by startMu
	stopping     chan struct{} // closed when the fetcher has stopped: drain
	stopOnce     sync.Once
	handlersLeft atomic.Int32
	handlersDone chan struct{} // closed when every handler goroutine returned
	ackerGone    chan struct{} // closed when the acker returned
	schedGone    chan struct{} // closed when the scheduler returned (or never started)
	hardCtx      context.Context
	hardCancel   context.CancelFunc

	needReconcile  atomic.Bool
	beats          int    // heartbeats seen; the heartbeat goroutine's only
	lastReconciled uint64 // jobs done at the last periodic reconcile; ditto

	st counters
}

type counters struct {
	processed, failed, retried, dead, panics, ignoredTimeouts atomic.Uint64
	recovered, lostLeases, malformed                          atomic.Uint64
	fetchErrors, ackErrors                                    atomic.Uint64
	busy                                                      atomic.Int64
	lastFetch                                                 atomic.Int64 // unix nanos
	fetchState                                                atomic.Int32
}

// Fetcher states, as reported in WorkerStats.FetcherState.
const (
	fetcherNotStarted int32 = iota
	fetcherBlocking
	fetcherWaitingForSlot
	fetcherBackingOff
	fetcherStopped
)

var fetcherStateNames = [...]string{"not started", "blocking", "waiting for a free slot", "backing off after a Redis error", "stopped"}

// NewWorker validates cfg and returns a worker for q running h. It does not
// talk to Redis; Start does.
func NewWorker(q *Queue, h Handler, cfg WorkerConfig) (*Worker, error) {
	if q == nil {
		return nil, errors.New("queue: NewWorker: nil queue")
	}
	if h == nil {
		return nil, q.errorf("NewWorker: nil handler")
	}
	if err := cfg.fill(q); err != nil {
		return nil, err
	}
	w := &Worker{
		q:            q,
		h:            h,
		cfg:          cfg,
		log:          cfg.Logger.With("queue", q.name),
		slots:        make(chan struct{}, cfg.Concurrency),
		jobs:         make(chan delivery, cfg.Concurrency),
		acks:         make(chan ackOp, 2*cfg.Concurrency),
		inflight:     make(map[string]struct{}, cfg.Concurrency),
		stopping:     make(chan struct{}),
		handlersDone: make(chan struct{}),
		ackerGone:    make(chan struct{}),
		schedGone:    make(chan struct{}),
	}
	w.hardCtx, w.hardCancel = context.WithCancel(context.Background())
	w.sched = newScheduler(w)
	return w, nil
}

// Start reserves the fetcher's blocking connection, joins this process's
// heartbeat, and starts the worker's tasks on g: a fetcher, Concurrency
// handlers, an acker and a scheduler.
//
// Closing g drains the worker: the fetcher stops fetching; handlers finish
// the jobs they run until shortly before the Close deadline, when their
// contexts are cancelled (at once when the Close context is already done);
// outcomes are written; whatever is still in the processing list (jobs not
// started, and jobs of handlers that ignored cancellation) goes back to the
// head of the ready list; the consumer leaves the heartbeat. All of it by
// the Close deadline. Nothing is lost: a job is either acked or back in
// Redis, and a handler still running past the deadline only risks running
// its job twice.
//
// Start retries Redis errors (a connection cut during a deploy) for up to
// 10 seconds. When it fails it has started no task and holds no
// reservation (a heartbeat entry it may have written just expires), and
// Start may be called again. It fails with the pool's error when the
// blocking lane cannot hold the fetcher (pool.ErrOverBudget), and with
// ErrStarted once the worker was started. A group that begins closing
// during Start stops the tasks already started; that worker cannot be
// started again.
func (w *Worker) Start(g *lifecycle.Group) error {
	if g == nil {
		return w.q.errorf("Start: nil lifecycle group")
	}
	w.startMu.Lock()
	defer w.startMu.Unlock()
	if w.started {
		return w.q.errorf("%w", ErrStarted)
	}
	if g.Closing() {
		return w.q.errorf("Start: %w", lifecycle.ErrClosed)
	}
	res, err := w.q.p.ReserveBlocking("queue:"+w.q.name, 1)
	if err != nil {
		return w.q.errorf("Start: %w", err)
	}
	id := w.cfg.ConsumerID
	n, err := w.join(g)
	if err != nil {
		_ = res.Release()
		return w.q.errorf("Start: %w", err)
	}
	// From here on Start either succeeds or the group is closing: the
	// worker counts as started either way.
	w.started = true
	w.res, w.node = res, n
	// A stable consumer ID may find its own jobs of a previous life.
	w.needReconcile.Store(true)
	w.q.addWorker(w)

	name := "queue " + w.q.name + ": "
	if err := g.Go(name+"acker", w.ackLoop); err != nil {
		// Nothing was started: undo it all, so Start may be called again.
		w.q.removeWorker(w)
		n.detach(w)
		_ = res.Release()
		w.started, w.res, w.node = false, nil, nil
		w.cfg.ConsumerID, w.proc = id, ""
		return w.q.errorf("Start: %w", err)
	}
	// From here on the acker cleans up, once stopping is closed.
	fail := func(err error) error {
		// The fetcher never ran, so nothing else releases its connection.
		_ = res.Release()
		w.stopOnce.Do(func() { close(w.stopping) })
		return w.q.errorf("Start: %w", err)
	}
	w.handlersLeft.Store(int32(w.cfg.Concurrency))
	for i := range w.cfg.Concurrency {
		if err := g.Go(name+"handler "+strconv.Itoa(i), w.handleLoop); err != nil {
			if w.handlersLeft.Add(-int32(w.cfg.Concurrency-i)) == 0 {
				close(w.handlersDone)
			}
			close(w.schedGone)
			return fail(err)
		}
	}
	if err := g.Go(name+"scheduler", w.sched.loop); err != nil {
		close(w.schedGone)
		return fail(err)
	}
	if err := g.Go(name+"fetcher", w.fetchLoop); err != nil {
		return fail(err)
	}
	return nil
}

// startTimeout bounds Start's retries of Redis errors.
const startTimeout = 10 * time.Second

// join joins this process's heartbeat for the namespace and announces the
// consumer in the queue's consumers set. Redis errors (a connection cut, a
// restart, the pool believing Redis down for a moment) are retried with
// backoff for up to startTimeout. On failure nothing of the worker is left
// in the node, and a node this call created and nothing else uses is
// dropped, so a later Start begins afresh.
func (w *Worker) join(g *lifecycle.Group) (*node, error) {
	n, err := nodeFor(w.q.p, g, w.q.cfg, w.cfg)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	for other := range n.workers {
		if other.q.k.tag == w.q.k.tag {
			n.mu.Unlock()
			return nil, fmt.Errorf("queue %q already has a worker in this process (one worker per queue; raise its Concurrency instead)", w.q.name)
		}
	}
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// Set before attach: attach starts (or signals) the heartbeat task,
	// whose start-time check may sweep this queue with w's ConsumerID as
	// the lock token at once.
	id := w.cfg.ConsumerID
	w.cfg.ConsumerID = n.id
	w.proc = w.q.k.proc(n.id)
	var bo troubleBackoff
	tries := 0
	for {
		tries++
		err = n.attach(ctx, g, w)
		if err == nil || errors.Is(err, lifecycle.ErrClosed) || !bo.wait(ctx) {
			break
		}
		w.log.Warn("queue: Start: joining the heartbeat failed; retrying", "err", err)
	}
	if err == nil {
		return n, nil
	}
	w.cfg.ConsumerID, w.proc = id, ""
	n.mu.Lock()
	unused := len(n.workers) == 0 && !n.running
	n.mu.Unlock()
	if unused {
		n.p.DeleteShared(n.key, n)
	}
	if errors.Is(err, lifecycle.ErrClosed) {
		return nil, err
	}
	return nil, fmt.Errorf("%w (tried %d times in %s; nothing was started and Start may be called again)", err, tries, startTimeout)
}

// delivery is a fetched element on its way to a handler.
type delivery struct {
	elem    string
	env     envelope
	err     error // the element did not decode
	missing bool  // its payload kept apart is gone
}

func (w *Worker) track(elem string) {
	w.mu.Lock()
	w.inflight[elem] = struct{}{}
	w.mu.Unlock()
}

func (w *Worker) untrack(elem string) {
	w.mu.Lock()
	delete(w.inflight, elem)
	w.mu.Unlock()
}

func (w *Worker) tracked(elem string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.inflight[elem]
	return ok
}

// fastFetch: a BLMOVE that returns sooner than this did not wait, so the
// ready list probably holds more; the fetcher then takes a batch with one
// script call instead of one BLMOVE per job.
const fastFetch = 300 * time.Microsecond

// fetchLoop is the fetcher: one goroutine, one reserved connection. It
// fetches only when a handler slot is free (no prefetch beyond capacity),
// blocks in Redis when the queue is empty (no polling), and switches to
// batches while there is a backlog.
func (w *Worker) fetchLoop(ctx context.Context) error {
	// A BLMOVE blocked in Redis does not notice ctx; closing the reserved
	// connection ends it. An element Redis moved at that moment stays in the
	// processing list, and the drain puts it back.
	released := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = w.res.Release(); close(released) })
	defer func() {
		// Return only once the reservation is back in the pool, so that
		// nothing of the fetcher outlives Close.
		if stop() {
			_ = w.res.Release()
		} else {
			<-released
		}
	}()
	// The acker cancels running handlers on its drain schedule; should it
	// be held up (a slow flush), the end of the Close context still
	// cancels them.
	defer func() { context.AfterFunc(lifecycle.CloseContext(ctx), w.hardCancel) }()
	defer w.stopOnce.Do(func() { close(w.stopping) })
	defer w.st.fetchState.Store(fetcherStopped)

	c := w.res.Client()
	var bo troubleBackoff
	batch := false
	previousLife := true // the first reconcile finds what a previous life held
	for {
		w.st.fetchState.Store(fetcherWaitingForSlot)
		select {
		case w.slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		held := 1
		if w.needReconcile.Load() && w.reconcile(ctx, previousLife) {
			previousLife = false
		}
		var elems []string
		var err error
		if batch {
			// Let handlers that are about to finish free their slots, so the
			// batch is as large as it can be.
			runtime.Gosched()
			for held < w.cfg.Concurrency {
				select {
				case w.slots <- struct{}{}:
					held++
					continue
				default:
				}
				break
			}
			elems, err = takeScript.Run(ctx, c, []string{w.q.k.ready, w.proc}, held).StringSlice()
			batch = err == nil && len(elems) == held
		} else {
			w.st.fetchState.Store(fetcherBlocking)
			start := time.Now()
			var elem string
			elem, err = c.BLMove(ctx, w.q.k.ready, w.proc, "RIGHT", "LEFT", w.cfg.BlockTimeout).Result()
			if err == nil {
				elems = []string{elem}
				batch = time.Since(start) < fastFetch
			}
		}
		w.st.lastFetch.Store(time.Now().UnixNano())
		w.sched.recheck()
		for range held - len(elems) {
			<-w.slots
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() != nil {
				return nil
			}
			w.st.fetchErrors.Add(1)
			// A BLMOVE that failed on our side may still have moved an
			// element on the server: reconcile before the next fetch.
			w.needReconcile.Store(true)
			w.log.Warn("queue: fetch failed; backing off", "err", err)
			w.st.fetchState.Store(fetcherBackingOff)
			if !bo.wait(ctx) {
				return nil
			}
			continue
		}
		bo.reset()
		for _, d := range w.loadPayloads(ctx, c, elems) {
			w.dispatch(ctx, d)
		}
	}
}

// loadPayloads decodes fetched elements and reads the payloads kept apart,
// one pipelined HGET each, on the fetcher's own connection: no lane is
// shared with the heartbeat or the acker, and a fetch of n jobs costs one
// more round trip, not n. An element whose read failed is not handed out:
// its slot is freed and it stays in the processing list, untracked, for the
// next reconcile to put back at the head of the ready list.
func (w *Worker) loadPayloads(ctx context.Context, c redis.Cmdable, elems []string) []delivery {
	ds := make([]delivery, len(elems))
	var pipe redis.Pipeliner
	var cmds []*redis.StringCmd
	var at []int
	for i, e := range elems {
		ds[i].elem = e
		if e == wakeMarker {
			continue
		}
		ds[i].env, ds[i].err = decodeEnvelope([]byte(e))
		if ds[i].err == nil && ds[i].env.ref != "" {
			if pipe == nil {
				pipe = c.Pipeline()
			}
			cmds, at = append(cmds, pipe.HGet(ctx, w.q.k.payloads, ds[i].env.ref)), append(at, i)
		}
	}
	if pipe == nil {
		return ds
	}
	_, execErr := pipe.Exec(ctx)
	failed := 0
	for j, cmd := range cmds {
		d := &ds[at[j]]
		v, err := cmd.Bytes()
		switch {
		case err == nil:
			d.env.payload = v
		case errors.Is(err, redis.Nil):
			d.missing = true
		default:
			d.elem, failed = "", failed+1
			<-w.slots
		}
	}
	if failed > 0 {
		if ctx.Err() == nil {
			w.st.fetchErrors.Add(1)
			w.log.Warn("queue: reading payloads failed; those jobs go back to the ready list", "count", failed, "err", execErr)
		}
		w.needReconcile.Store(true)
		kept := ds[:0]
		for _, d := range ds {
			if d.elem != "" {
				kept = append(kept, d)
			}
		}
		ds = kept
	}
	return ds
}

// dispatch hands a fetched element to a handler, or deals with it when it is
// not a runnable job. It holds one slot per element. The jobs channel has
// room for every slot, so handing over a job never blocks; an outcome for
// the acker can (Redis down, acks backed up), and then the worker's closing
// must not wait for it: the element stays in the processing list, and the
// drain puts it back or drops it.
func (w *Worker) dispatch(ctx context.Context, d delivery) {
	elem, env := d.elem, d.env
	w.track(elem)
	var op ackOp
	switch {
	case elem == wakeMarker:
		w.sched.wake(true)
		if ctx.Err() != nil {
			// The worker is stopping, and its scheduler may have stopped
			// (and handed over what it knew) before this wake: dropping
			// the marker could leave the job it announced known to no
			// live worker. It stays in the processing list, and the drain
			// puts it back at the head of the ready list. (Checked after
			// the wake: a scheduler that stops later sees the wake.)
			<-w.slots
			return
		}
		op = ackOp{kind: ackDrop, elem: elem}
	case d.err != nil:
		w.st.malformed.Add(1)
		w.log.Error("queue: malformed element sent to the dead letters", "err", d.err)
		op = ackOp{kind: ackDead, elem: elem, reason: d.err.Error(), deadID: deadIDFor(w.q.cfg.Now(), nil)}
	case d.missing:
		w.st.malformed.Add(1)
		reason := fmt.Sprintf("%v: its payload (ref %s) is missing from %s", errMalformed, env.ref, w.q.k.payloads)
		w.log.Error("queue: job without its payload sent to the dead letters", "job", env.id, "ref", env.ref)
		op = ackOp{kind: ackDead, elem: elem, id: env.id, unique: env.unique, reason: reason, attempts: env.attempt, deadID: env.id}
	case env.deliveries > w.cfg.MaxDeliveries:
		// Sweeps count deliveries; the decision is made here, so that a
		// sweep only ever moves jobs back to the ready list (one fenced
		// script, see sweep).
		reason := fmt.Sprintf("recovered from dead consumers %d times (WorkerConfig.MaxDeliveries %d): the job may be killing its consumers", env.deliveries, w.cfg.MaxDeliveries)
		w.log.Warn("queue: job sent to the dead letters", "job", env.id, "reason", reason)
		op = ackOp{kind: ackDead, elem: elem, id: env.id, unique: env.unique, reason: reason, attempts: env.attempt, deadID: env.id}
	default:
		w.jobs <- d
		return
	}
	select {
	case w.acks <- op:
	case <-ctx.Done():
	}
	<-w.slots
}

// handleLoop is one handler goroutine.
func (w *Worker) handleLoop(ctx context.Context) error {
	defer func() {
		if w.handlersLeft.Add(-1) == 0 {
			close(w.handlersDone)
		}
	}()
	for {
		// Once the worker is draining, start nothing new: jobs still waiting
		// in the channel go back to the ready list.
		select {
		case <-w.stopping:
			return nil
		default:
		}
		select {
		case d := <-w.jobs:
			w.run(d)
		case <-w.stopping:
			return nil
		}
	}
}

// ignoredTimeoutGrace is how long past its timeout a handler may take to
// return before it counts as having ignored the cancellation.
const ignoredTimeoutGrace = time.Second

func (w *Worker) run(d delivery) {
	w.st.busy.Add(1)
	defer w.st.busy.Add(-1)
	job := &Job{
		ID: d.env.id, Queue: w.q.name, Payload: d.env.payload,
		Attempt: d.env.attempt + 1, MaxAttempts: d.env.maxAttempts,
		Deliveries: d.env.deliveries, EnqueuedAt: d.env.enqueuedAt,
	}
	timeout := d.env.timeout
	if timeout == 0 {
		timeout = w.cfg.JobTimeout
	}
	ctx, cancel := w.hardCtx, context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	start := time.Now()
	err := w.call(ctx, job)
	cancel()
	if timeout > 0 && time.Since(start) > timeout+ignoredTimeoutGrace {
		w.st.ignoredTimeouts.Add(1)
		w.log.Warn("queue: handler ignored its timeout", "job", job.ID, "timeout", timeout, "ran", time.Since(start))
	}
	if err != nil && w.hardCtx.Err() != nil {
		// Cancelled by the drain, not failed: the job stays in the
		// processing list and goes back to the ready list unchanged.
		<-w.slots
		return
	}
	op := w.outcome(d, job, err)
	select {
	case w.acks <- op:
	case <-w.ackerGone:
		// The drain is over and put this job back in the ready list; its
		// outcome no longer matters here.
	}
	<-w.slots
}

// call runs the handler, turning a panic into a failed attempt.
func (w *Worker) call(ctx context.Context, job *Job) (err error) {
	defer func() {
		if v := recover(); v != nil {
			w.st.panics.Add(1)
			err = &PanicError{Value: v, Stack: shortStack()}
		}
	}()
	return w.h(ctx, job)
}

// outcome decides what happens to a job after a run.
func (w *Worker) outcome(d delivery, job *Job, err error) ackOp {
	if err == nil {
		w.st.processed.Add(1)
		return ackOp{kind: ackDone, elem: d.elem, id: d.env.id, unique: d.env.unique, ref: d.env.ref}
	}
	w.st.failed.Add(1)
	w.onError(job, err)
	var reason string
	switch {
	case IsPermanent(err):
		reason = fmt.Sprintf("attempt %d of %d failed permanently: %v", job.Attempt, job.MaxAttempts, err)
	case job.Attempt >= job.MaxAttempts:
		reason = fmt.Sprintf("attempt %d of %d failed: %v", job.Attempt, job.MaxAttempts, err)
	default:
		delay := w.retryDelay(job, err)
		next := d.env
		next.attempt++
		w.log.Debug("queue: job failed; retrying", "job", job.ID, "attempt", job.Attempt, "in", delay, "err", err)
		return ackOp{kind: ackRetry, elem: d.elem, id: d.env.id, next: next.encode(), due: w.q.cfg.Now().Add(delay)}
	}
	w.log.Warn("queue: job sent to the dead letters", "job", job.ID, "reason", reason)
	return ackOp{kind: ackDead, elem: d.elem, id: d.env.id, unique: d.env.unique, reason: reason, attempts: job.Attempt, deadID: d.env.id}
}

// onError calls WorkerConfig.OnError. A panic in it is recovered and
// logged, as a handler's is: user code must not take the process down.
func (w *Worker) onError(job *Job, err error) {
	if w.cfg.OnError == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			w.log.Error("queue: WorkerConfig.OnError panicked; ignored", "job", job.ID, "panic", v, "stack", string(shortStack()))
		}
	}()
	w.cfg.OnError(job, err)
}

// retryDelay is the delay before the next attempt of a failed job:
// WorkerConfig.Backoff's if set, else the default. A panic in Backoff is
// recovered and logged, and the default delay is used.
func (w *Worker) retryDelay(job *Job, err error) (d time.Duration) {
	if w.cfg.Backoff == nil {
		return retryDelay(job.Attempt, w.cfg.RetryBase, w.cfg.RetryMax)
	}
	defer func() {
		if v := recover(); v != nil {
			w.log.Error("queue: WorkerConfig.Backoff panicked; using the default retry delay", "job", job.ID, "panic", v, "stack", string(shortStack()))
			d = retryDelay(job.Attempt, w.cfg.RetryBase, w.cfg.RetryMax)
		}
	}()
	return max(w.cfg.Backoff(job.Attempt, err), 0)
}

// shortStack is the calling goroutine's stack, truncated to 8 KiB.
func shortStack() []byte {
	stack := debug.Stack()
	if len(stack) > 8<<10 {
		stack = stack[:8<<10]
	}
	return stack
}

// WorkerStats are a worker's counters since it started, kept in the process
// (never in Redis, so nothing accumulates there).
type WorkerStats struct {
	Concurrency     int    `json:"concurrency"`
	Busy            int64  `json:"busy"`      // handlers running a job now
	InFlight        int    `json:"in_flight"` // jobs fetched and not yet acked
	Processed       uint64 `json:"processed"`
	Failed          uint64 `json:"failed"` // failed runs, retried or not
	Retried         uint64 `json:"retried"`
	Dead            uint64 `json:"dead"` // sent to the dead letters by this worker
	Panics          uint64 `json:"panics"`
	IgnoredTimeouts uint64 `json:"ignored_timeouts"` // handlers that returned >1s after their timeout
	Recovered       uint64 `json:"recovered"`        // jobs taken back from dead consumers by this process
	Malformed       uint64 `json:"malformed"`
	// LostLeases counts outcomes that found their job gone from the
	// processing list: a sweep had already given it to another consumer
	// (this process was thought dead), so it may have run twice.
	LostLeases  uint64 `json:"lost_leases"`
	FetchErrors uint64 `json:"fetch_errors"`
	AckErrors   uint64 `json:"ack_errors"`
	// FetcherLastReturn is when the fetcher last came back from Redis. With
	// FetcherState "blocking" it is never older than BlockTimeout plus a
	// round trip in a live worker: a health check can tell a dead fetcher.
	FetcherLastReturn time.Time `json:"fetcher_last_return"`
	FetcherState      string    `json:"fetcher_state"`
	ConsumerID        string    `json:"consumer_id"`
}

// Stats returns the worker's counters.
func (w *Worker) Stats() WorkerStats {
	w.mu.Lock()
	inflight := len(w.inflight)
	w.mu.Unlock()
	s := WorkerStats{
		Concurrency: w.cfg.Concurrency, Busy: w.st.busy.Load(), InFlight: inflight,
		Processed: w.st.processed.Load(), Failed: w.st.failed.Load(), Retried: w.st.retried.Load(),
		Dead: w.st.dead.Load(), Panics: w.st.panics.Load(), IgnoredTimeouts: w.st.ignoredTimeouts.Load(),
		Recovered: w.st.recovered.Load(), Malformed: w.st.malformed.Load(), LostLeases: w.st.lostLeases.Load(),
		FetchErrors: w.st.fetchErrors.Load(), AckErrors: w.st.ackErrors.Load(),
		FetcherState: fetcherStateNames[w.st.fetchState.Load()], ConsumerID: w.cfg.ConsumerID,
	}
	if ns := w.st.lastFetch.Load(); ns != 0 {
		s.FetcherLastReturn = time.Unix(0, ns)
	}
	return s
}

// FetcherAlive reports whether the fetcher is doing its job: running, and
// either waiting for a free handler slot or back from Redis within
// BlockTimeout plus slack. A health check can call it.
func (w *Worker) FetcherAlive(slack time.Duration) bool {
	switch w.st.fetchState.Load() {
	case fetcherWaitingForSlot:
		return true
	case fetcherBlocking, fetcherBackingOff:
		last := w.st.lastFetch.Load()
		if last == 0 {
			return true // first fetch still under way
		}
		return time.Since(time.Unix(0, last)) < w.cfg.BlockTimeout+troubleMax+slack
	}
	return false
}

// Queue returns the worker's queue.
func (w *Worker) Queue() *Queue { return w.q }

// reconcileEvery is how many heartbeats pass between two reconciles of a
// busy worker's processing list.
const reconcileEvery = 6

// needsPeriodicReconcile says, on the heartbeat's goroutine, whether it is
// time to compare the processing list with what the worker holds: every
// reconcileEvery beats, if the worker did anything since the last time.
// An idle worker costs nothing.
func (w *Worker) needsPeriodicReconcile() bool {
	w.beats++
	if w.beats%reconcileEvery != 0 {
		return false
	}
	done := w.st.processed.Load() + w.st.failed.Load()
	if done == w.lastReconciled {
		return false
	}
	w.lastReconciled = done
	return true
}

// defaultConsumerID names a process: hostname-pid-random.
func defaultConsumerID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	id := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newID(time.Now())[8:])
	if checkName("consumer ID", id) != nil {
		id = fmt.Sprintf("host-%d-%s", os.Getpid(), newID(time.Now())[8:])
	}
	return id
}
