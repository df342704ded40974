package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
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
	ID    string
	Queue string
	// Namespace is the queue's namespace (Config.Namespace): queues of
	// one name in two namespaces are two queues.
	Namespace   string
	Payload     []byte // the run's own copy: a handler may keep or change it (a retry runs the payload as enqueued)
	Attempt     int    // 1 on the first run
	MaxAttempts int
	Deliveries  int // times the job was recovered from a consumer that died
	EnqueuedAt  time.Time
	// Schedule and Due: for an occurrence of a schedule (Queue.Schedule),
	// its name and due time; else "" and the zero time.
	Schedule string
	Due      time.Time
	// Deadline is the job's Deadline option (zero: none). The handler's
	// context is not bound by it: it only has to start by then.
	Deadline time.Time
	// Headers are the job's headers (Header, Headers, JobHeaders), nil
	// when it has none. The map is the run's own: a handler may keep or
	// change it, and changes do not travel with the job.
	Headers map[string]string
	// Type is the job's type (the Type option), "" when it has none. A
	// Mux routes on it.
	Type string
	// Partition is the job's partition (the Partition option), "" when it
	// has none.
	Partition string
	// Priority is the job's level (the Priority option), 0 by default.
	Priority int

	run *jobRun // the run, for Progress, SetResult and Cancel (progress.go)
}

// Worker consumes one queue with Concurrency handlers.
//
// Per worker there is ONE fetcher goroutine, which takes jobs with the take
// script (ready -> processing list) on the pool's background lane and, when
// the queue is empty, waits for its Consumer's fetch hub to report a ring
// of the queue's doorbell: the Consumer blocks for ALL its queues on ONE
// reserved blocking-lane connection (one per hash-slot group on Redis
// Cluster; see hub). Then N handler goroutines fed by a channel, one acker
// that pipelines the outcomes, and one scheduler that promotes delayed jobs
// at their exact due time. All of them
// are lifecycle tasks of the group given to Start; closing the group drains
// the worker (see Start). The worker belongs to the Consumer given to
// NewWorker, whose heartbeat keeps its jobs its own. A Worker is safe for
// concurrent use; it is started once (a Start that failed may be called
// again).
type Worker struct {
	q   *Queue
	h   Handler
	cfg WorkerConfig
	log *slog.Logger

	c     *Consumer
	proc  string // this consumer's processing list
	hub   *hub   // the consumer's fetch hub of the queue's slot group, once started
	node  *node  // the consumer's heartbeat the worker is attached to, once started
	sched *scheduler

	slots    chan struct{} // one token per job held (fetched and not yet finished)
	lane     *lane         // its share of WorkerConfig.Slots, nil without (slots.go)
	handlers *handlerPool  // its handlers, started on demand, with a lane (handlers.go); nil: Concurrency fixed ones
	wakeCh   chan struct{} // the hub saw the queue's doorbell ring (buffered 1)
	jobs     chan delivery // fetched jobs waiting for a handler
	acks     chan ackOp    // outcomes waiting for the acker

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

	mem memState // Redis's memory limit and eviction policy (oom.go, policy.go)

	hookPanics atomic.Uint64 // outcome hooks that panicked (hooks.go)
	tail       tailState     // live outcomes for a follower (tail.go)

	needReconcile  atomic.Bool
	beats          int    // heartbeats seen; the heartbeat goroutine's only
	lastReconciled uint64 // jobs done at the last periodic reconcile; ditto

	st  counters
	lat latency // latency.go

	ctl           workerCtl     // running jobs and cancels (ctlconsumer.go)
	progressEvery time.Duration // shortest time between two progress writes of a job; 0: progressEvery

	// limits (limits.go): lim is nil when the queue has no Limit;
	// limitNow, set by tests, is the rate's clock (nil: Redis TIME).
	lim         *limiter
	limitNow    func() time.Time
	rateWaiting atomic.Bool // the fetcher sleeps until the rate allows a job
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
	fetcherWaitingAtLimit
	fetcherWaitingForRate     // limits.go
	fetcherWaitingForShared   // slots.go: its own slot is free, the shared ones are not
	fetcherWaitingForPartRate // limits.go
)

var fetcherStateNames = [...]string{"not started", "blocking", "waiting for a free slot", "backing off after a Redis error", "stopped", "waiting: Redis at maxmemory", "waiting: the queue's rate limit", "waiting for a shared slot", "waiting: the partitions' rate limit"}

// NewWorker validates cfg and returns a worker for q running h, on the
// process's consumer c, whose namespace must be q's. It does not talk to
// Redis; Start does. Invalid settings fail with an error wrapping
// ErrInvalidConfig.
func NewWorker(c *Consumer, q *Queue, h Handler, cfg WorkerConfig) (*Worker, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: NewWorker: nil consumer", ErrInvalidConfig)
	}
	if q == nil {
		return nil, fmt.Errorf("%w: NewWorker: nil queue", ErrInvalidConfig)
	}
	if h == nil {
		return nil, q.errorf("NewWorker: nil handler")
	}
	if err := c.accepts(q); err != nil {
		return nil, err
	}
	cfg, err := cfg.withSlots(q.cfg.Logger) // and WorkerConfig.Slots (slots.go)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		q:            q,
		h:            h,
		cfg:          cfg,
		c:            c,
		proc:         q.k.proc(c.ID()),
		log:          cfg.Logger.With("queue", q.name, "consumer", c.ID()), // docs/logging.md
		slots:        make(chan struct{}, cfg.Concurrency),
		wakeCh:       make(chan struct{}, 1),
		jobs:         make(chan delivery, cfg.Concurrency),
		acks:         make(chan ackOp, 2*cfg.Concurrency),
		inflight:     make(map[string]struct{}, cfg.Concurrency),
		stopping:     make(chan struct{}),
		handlersDone: make(chan struct{}),
		ackerGone:    make(chan struct{}),
		schedGone:    make(chan struct{}),
		mem:          newMemState(),
	}
	w.hardCtx, w.hardCancel = context.WithCancel(context.Background())
	w.sched = newScheduler(w)
	if cfg.Slots != nil { // shared slots (slots.go)
		w.lane = cfg.Slots.join(cfg)
	}
	return w, nil
}

// Start joins its Consumer's heartbeat and fetch hub (starting them on g
// for the Consumer's first worker, and a hub for the first worker of each
// hash-slot group on Redis Cluster; every worker of a Consumer is started on
// the same group), and starts the worker's tasks on g: a fetcher,
// Concurrency handlers, an acker and a scheduler. The worker holds no
// connection of its own: its hub holds the one blocking connection.
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
// blocking lane cannot hold a new hub (pool.ErrOverBudget), and with
// ErrAlreadyStarted once the worker was started. A group that begins closing
// during Start stops the tasks already started; that worker cannot be
// started again.
func (w *Worker) Start(g *lifecycle.Group) error {
	if g == nil {
		return w.q.errorf("Start: nil lifecycle group")
	}
	w.startMu.Lock()
	defer w.startMu.Unlock()
	if w.started {
		return w.q.errorf("%w", ErrAlreadyStarted)
	}
	if g.Closing() {
		return w.q.errorf("Start: %w", lifecycle.ErrClosed)
	}
	if err := w.checkPolicyAtStart(); err != nil {
		return w.q.errorf("Start: %w", err)
	}
	n, err := w.c.heartbeatOn(g, w.cfg.Logger)
	if err != nil {
		return w.q.errorf("Start: %w", err)
	}
	h, err := n.hubFor(w)
	if err != nil {
		if n.unused() {
			w.c.forget(n)
		}
		return w.q.errorf("Start: %w", err)
	}
	if _, err := w.join(g); err != nil {
		n.dropHub(h)
		return w.q.errorf("Start: %w", err)
	}
	// From here on Start either succeeds or the group is closing: the
	// worker counts as started either way.
	w.started = true
	w.hub, w.node = h, n
	w.lim = newLimiter(w, n.token)     // limits.go: nil without a Limit
	n.noteQueues(context.Background()) // the Inspector's registry (registry.go)
	// A stable consumer ID may find its own jobs of a previous life.
	w.needReconcile.Store(true)
	w.q.addWorker(w)

	name := "queue " + w.q.name + ": "
	if err := g.Go(name+"acker", w.ackLoop); err != nil {
		// Nothing was started: undo it all, so Start may be called again.
		w.q.removeWorker(w)
		n.detach(w)
		n.dropHub(h)
		w.started, w.hub, w.node = false, nil, nil
		return w.q.errorf("Start: %w", err)
	}
	// From here on the acker cleans up, once stopping is closed.
	fail := func(err error) error {
		w.stopOnce.Do(w.stop)
		return w.q.errorf("Start: %w", err)
	}
	if w.lane != nil {
		// Handlers on demand, as many as the shared slots it holds
		// (handlers.go).
		w.handlers = &handlerPool{g: g, name: name + "handler", quit: make(chan struct{}, w.cfg.Concurrency)}
	} else {
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
	}
	if err := g.Go(name+"scheduler", w.sched.loop); err != nil {
		close(w.schedGone)
		return fail(err)
	}
	if err := n.startHub(h); err != nil {
		return fail(err)
	}
	// Watched before the fetcher runs: its first act is a take anyway.
	h.add(context.Background(), w)
	// Alive from here on, before the fetcher goroutine first runs (its
	// first act is to wait for a slot): a health check right after Start
	// must not find it "not started".
	w.st.fetchState.Store(fetcherWaitingForSlot)
	if err := g.Go(name+"fetcher", w.fetchLoop); err != nil {
		w.st.fetchState.Store(fetcherNotStarted)
		h.remove(w)
		return fail(err)
	}
	return nil
}

// startTimeout bounds Start's retries of Redis errors.
const startTimeout = 10 * time.Second

// join joins the consumer's heartbeat for the namespace and announces the
// consumer in the queue's consumers set. Redis errors (a connection cut, a
// restart, the pool believing Redis down for a moment) are retried with
// backoff for up to startTimeout. On failure nothing of the worker is left
// in the heartbeat, and a heartbeat this call made and nothing else uses
// is dropped, so a later Start begins afresh.
func (w *Worker) join(g *lifecycle.Group) (*node, error) {
	n, err := w.c.heartbeatOn(g, w.cfg.Logger)
	if err != nil {
		return nil, err
	}
	if n.hasQueue(w.q.k.tag) {
		return nil, errOneWorkerPerQueue(w.q.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var bo troubleBackoff
	tries := 0
	for {
		tries++
		err = n.attach(ctx, w)
		if err == nil || errors.Is(err, lifecycle.ErrClosed) || !bo.wait(ctx) {
			break
		}
		w.log.Warn("queue: Start: joining the heartbeat failed; retrying", "err", err)
	}
	if err == nil {
		return n, nil
	}
	if n.unused() {
		w.c.forget(n)
	}
	if errors.Is(err, lifecycle.ErrClosed) {
		return nil, err
	}
	return nil, fmt.Errorf("%w (tried %d times in %s; nothing was started and Start may be called again)", err, tries, startTimeout)
}

// The worker as a member of its consumer's heartbeat (see node).

func (w *Worker) queueTag() string  { return w.q.k.tag }
func (w *Worker) queueName() string { return w.q.name }

func (w *Worker) announce(ctx context.Context, pipe redis.Pipeliner, id, token string) {
	pipe.HSet(ctx, w.q.k.incarnations, id, token)
	pipe.SAdd(ctx, w.q.k.consumers, id)
}

// beat runs on the heartbeat's goroutine: a consumer newly seen dead may
// have known of delayed jobs (the scheduler re-reads), and a busy worker
// reconciles its processing list now and then.
func (w *Worker) beat(newlyDead bool) {
	if newlyDead {
		w.sched.wake(false)
	}
	if w.needsPeriodicReconcile() {
		w.needReconcile.Store(true)
	}
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

// fetchLoop is the fetcher: one goroutine, no connection of its own. It
// fetches only when a handler slot is free (no prefetch beyond capacity),
// takes as many jobs as it has free slots with one script call, and when
// the queue is empty waits for its hub to report a ring of the queue's
// doorbell (no polling: the hub blocks in Redis). It always tries a take
// before it waits, and the wake channel is emptied just before each take,
// so a ring that arrives after a take found the queue empty always wakes
// it.
func (w *Worker) fetchLoop(ctx context.Context) error {
	defer w.handOnRing(ctx)
	// The acker cancels running handlers on its drain schedule; should it
	// be held up (a slow flush), the end of the Close context still
	// cancels them.
	defer func() { context.AfterFunc(lifecycle.CloseContext(ctx), w.hardCancel) }()
	defer w.stopOnce.Do(w.stop)
	defer w.st.fetchState.Store(fetcherStopped)
	defer w.leaveLanes() // stop asking for shared slots (slots.go)

	f := &fetcher{
		w: w, ctx: ctx, c: w.q.p.Background(),
		previousLife: true, // the first reconcile finds what a previous life held
		readPolicy:   w.mem.policyStale(),
	}
	for {
		if !f.holdSlot() {
			return nil
		}
		f.reconcile()
		r := f.takeBatch()
		f.settle(r)
		if r.failed() {
			if !f.backOff(r.err) {
				return nil
			}
			continue
		}
		f.succeeded()
		f.deliver(r.elems)
		if len(r.elems) == r.held {
			continue
		}
		if r.wait > 0 {
			// The queue's rate limit stopped the take (limits.go): one
			// timer to the instant it allows the next job. The partitions'
			// rates: that timer or a ring.
			wait := f.waitRate
			if r.partWait {
				wait = f.waitPartRate
			}
			if !wait(r.wait) {
				return nil
			}
			continue
		}
		if w.needReconcile.Load() {
			// Elements wait in the processing list for a reconcile (a
			// payload read or a put-back failed): no ring may come for
			// them, so reconcile again, paced, instead of waiting.
			if !f.unreconciled.wait(ctx) {
				return nil
			}
			continue
		}
		f.unreconciled.reset()
		if !f.waitForRing(r.idleAtLimit) {
			return nil
		}
	}
}

// stop begins the drain: the fetcher has stopped (or never started).
func (w *Worker) stop() {
	close(w.stopping)
	w.handlersStopped() // handlers.go
}

// handOnRing runs when the fetcher stops: it leaves the hub, and a ring the
// hub delivered that the fetcher did not act on is rung again (if the
// queue still holds jobs), for the other consumers of the queue.
func (w *Worker) handOnRing(ctx context.Context) {
	w.hub.remove(w)
	select {
	case <-w.wakeCh:
	default:
		if !w.rateWaiting.Load() { // a rate-limited fetcher owes its queue a take (limits.go)
			return
		}
	}
	cctx := lifecycle.CloseContext(ctx)
	if err := ringIfReady(cctx, w.q.p.Background(), w.q.k); err != nil {
		w.log.Warn("queue: handing a doorbell ring on failed; other consumers take those jobs at the next ring of the queue", "err", err)
	}
}

// wakeFetcher reports a ring of the queue's doorbell to the fetcher. It
// never blocks: one pending wake is as good as many.
func (w *Worker) wakeFetcher() {
	select {
	case w.wakeCh <- struct{}{}:
	default:
	}
}

// hasRoom reports whether the worker has a free handler slot, so that a
// ring would have it take a job now (not when it waits for a shared slot
// already: slots.go).
func (w *Worker) hasRoom() bool { return len(w.slots) < cap(w.slots) && !w.asksForSharedSlot() }

// fetcher is the state of fetchLoop.
type fetcher struct {
	w            *Worker
	ctx          context.Context
	c            redis.UniversalClient // the pool's background lane
	bo           troubleBackoff
	unreconciled troubleBackoff // paces the reconciles the fetcher retries before it waits for a ring
	previousLife bool           // no reconcile has completed: the next finds what a previous life held
	// readPolicy: the connection failed since the last read of Redis's
	// eviction policy (Redis may have restarted with another config), or
	// the last read failed: read it again after the next fetch that works.
	readPolicy bool
}

// fetched is the outcome of one fetch.
type fetched struct {
	elems       []string
	held        int           // handler slots held for it
	idleAtLimit bool          // Redis is at maxmemory and the ready list is empty
	wait        time.Duration // the queue's rate limit allows the next job in wait (limits.go)
	partWait    bool          // wait is the partitions' rates' (a ring may come before)
	err         error
}

// failed reports whether the fetch failed (an empty queue is no failure).
func (r fetched) failed() bool { return r.err != nil && !errors.Is(r.err, redis.Nil) }

// holdSlot waits for a free handler slot. It reports false when ctx ended.
func (f *fetcher) holdSlot() bool {
	f.w.st.fetchState.Store(fetcherWaitingForSlot)
	select {
	case f.w.slots <- struct{}{}:
		return f.grantSlot() // and a shared slot behind it (slots.go)
	case <-f.ctx.Done():
		return false
	}
}

// reconcile reconciles the processing list when something asked for it.
func (f *fetcher) reconcile() {
	if f.w.needReconcile.Load() && f.w.reconcile(f.ctx, f.previousLife) {
		f.previousLife = false
	}
}

// takeBatch holds every free slot and takes a job for each with one script
// call (the allow-oom twin at maxmemory, see Worker.take). A ring reported
// before the take is consumed by it.
func (f *fetcher) takeBatch() fetched {
	// Let handlers that are about to finish free their slots, so the batch
	// is as large as it can be.
	runtime.Gosched()
	held := f.w.sharedBatch(f.holdFreeSlots(1)) // as many as shared slots back (slots.go)
	select {
	case <-f.w.wakeCh:
	default:
	}
	w := f.w
	if w.lim != nil {
		// A limited take (limits.go) takes the level lists after its own
		// keys (limitTakeLua).
		ks := append(append([]string{w.q.k.ready, w.proc, w.q.k.bell, w.q.k.paused}, w.q.k.partKeys()...), w.lim.held, w.lim.rate, w.lim.pheld, w.lim.prate)
		elems, wait, part, err := w.takeLimited(f.ctx, f.c, append(ks, w.q.k.levels...), held)
		return fetched{elems: elems, held: held, wait: wait, partWait: part, idleAtLimit: err == nil && len(elems) == 0 && wait == 0 && w.mem.atLimit.Load(), err: err}
	}
	elems, err := w.take(f.ctx, f.c, w.q.k.takeKeys(w.proc), held)
	return fetched{elems: elems, held: held, idleAtLimit: err == nil && len(elems) == 0 && w.mem.atLimit.Load(), err: err}
}

// holdFreeSlots holds the slots free now, up to Concurrency in all, and
// returns how many are held.
func (f *fetcher) holdFreeSlots(held int) int {
	for held < f.w.cfg.Concurrency {
		select {
		case f.w.slots <- struct{}{}:
			held++
		default:
			return held
		}
	}
	return held
}

// waitForRing waits, after a take that left free slots (the queue was
// empty, or paused), for the hub to report a ring of the doorbell; at
// maxmemory also for BlockTimeout or this worker's promotions (see
// waitAtLimit). It reports false when ctx ended.
func (f *fetcher) waitForRing(atLimit bool) bool {
	w := f.w
	w.hub.watch(f.ctx, w)
	if atLimit {
		return w.waitAtLimit(f.ctx)
	}
	w.st.fetchState.Store(fetcherBlocking)
	select {
	case <-w.wakeCh:
		return true
	case <-f.ctx.Done():
		return false
	}
}

// settle records the fetch and frees the slots it did not fill.
func (f *fetcher) settle(r fetched) {
	f.w.st.lastFetch.Store(time.Now().UnixNano())
	for range r.held - len(r.elems) {
		<-f.w.slots
	}
	f.w.settleShared(r.held, len(r.elems)) // shared slots (slots.go)
}

// backOff deals with a failed fetch and waits before the next. It reports
// false when ctx ended.
func (f *fetcher) backOff(err error) bool {
	w := f.w
	if f.ctx.Err() != nil {
		return false
	}
	w.st.fetchErrors.Add(1)
	// A take that failed on our side may still have moved elements on the
	// server: reconcile before the next fetch.
	w.needReconcile.Store(true)
	w.log.Warn("queue: fetch failed; backing off", "err", err)
	w.st.fetchState.Store(fetcherBackingOff)
	f.readPolicy = true
	return f.bo.wait(f.ctx)
}

// succeeded follows a fetch that worked: the connection is fine again.
func (f *fetcher) succeeded() {
	f.bo.reset()
	if f.readPolicy || f.w.mem.policyStale() {
		// Reconnected (the fetcher, or its hub: memState.connectionFailed):
		// Redis may have restarted with another policy.
		f.readPolicy = !f.w.readPolicy(f.ctx, f.c)
	}
}

// deliver reads the payloads of the fetched elements and hands them out.
func (f *fetcher) deliver(elems []string) {
	if len(elems) == 0 {
		return
	}
	for _, d := range f.w.loadPayloads(f.ctx, f.c, elems) {
		f.w.dispatch(f.ctx, d)
	}
}

// loadPayloads decodes fetched elements and reads the payloads kept apart,
// one pipelined HGET each: a fetch of n jobs costs one more round trip,
// not n. An element whose read failed is not handed out:
// its slot is freed and it stays in the processing list, untracked, for the
// next reconcile to put back at the head of the ready list.
func (w *Worker) loadPayloads(ctx context.Context, c redis.Cmdable, elems []string) []delivery {
	ds := decodeDeliveries(elems)
	var pipe redis.Pipeliner
	var cmds []*redis.StringCmd
	var at []int
	for i := range ds {
		d := &ds[i]
		if d.err != nil || d.env.ref == "" {
			continue
		}
		if pipe == nil {
			pipe = c.Pipeline()
		}
		cmds, at = append(cmds, pipe.HGet(ctx, w.q.k.payloads, d.env.ref)), append(at, i)
	}
	if pipe == nil {
		return ds
	}
	_, execErr := pipe.Exec(ctx)
	failed := 0
	for j, cmd := range cmds {
		if !w.setPayload(&ds[at[j]], cmd) {
			failed++
		}
	}
	if failed > 0 {
		ds = w.dropUnread(ctx, ds, failed, execErr)
	}
	return ds
}

// decodeDeliveries decodes fetched elements (a wake marker is left as it
// is).
func decodeDeliveries(elems []string) []delivery {
	ds := make([]delivery, len(elems))
	for i, e := range elems {
		ds[i].elem = e
		if e != wakeMarker {
			ds[i].env, ds[i].err = decodeEnvelope([]byte(e))
		}
	}
	return ds
}

// setPayload sets d's payload from its HGET, or marks it missing. It
// reports false when the read failed: d's slot is freed and its elem
// cleared.
func (w *Worker) setPayload(d *delivery, cmd *redis.StringCmd) bool {
	v, err := cmd.Bytes()
	switch {
	case err == nil:
		d.env.payload = v
	case errors.Is(err, redis.Nil):
		d.missing = true
	default:
		d.elem = ""
		w.freeSlot()
		return false
	}
	return true
}

// dropUnread drops the deliveries whose payload could not be read, and
// has the next reconcile put them back.
func (w *Worker) dropUnread(ctx context.Context, ds []delivery, failed int, err error) []delivery {
	if ctx.Err() == nil {
		w.st.fetchErrors.Add(1)
		w.log.Warn("queue: reading payloads failed; those jobs go back to the ready list", "count", failed, "err", err)
	}
	w.needReconcile.Store(true)
	kept := ds[:0]
	for _, d := range ds {
		if d.elem != "" {
			kept = append(kept, d)
		}
	}
	return kept
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
			w.freeSlot()
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
	case !env.deadline.IsZero() && w.q.cfg.Now().After(env.deadline):
		reason := fmt.Sprintf("deadline exceeded: not started by %s", env.deadline.UTC().Format(time.RFC3339Nano))
		w.log.Warn("queue: job sent to the dead letters", "job", env.id, "reason", reason)
		op = ackOp{kind: ackDead, elem: elem, id: env.id, unique: env.unique, reason: reason, attempts: env.attempt, deadID: env.id}
	case env.deliveries > w.cfg.MaxDeliveries:
		// Sweeps count deliveries; the decision is made here, so that a
		// sweep only ever moves jobs back to the ready list (one fenced
		// script, see sweep).
		reason := fmt.Sprintf("recovered from dead consumers %d times (WorkerConfig.MaxDeliveries %d): the job may be killing its consumers", env.deliveries, w.cfg.MaxDeliveries)
		w.log.Warn("queue: job sent to the dead letters", "job", env.id, "reason", reason)
		op = ackOp{kind: ackDead, elem: elem, id: env.id, unique: env.unique, reason: reason, attempts: env.attempt, deadID: env.id}
	default:
		w.handOver(d) // handlers.go
		return
	}
	if op.kind == ackDead {
		w.extend(&op, d, nil, nil, 0, 0) // OnDead (hooks.go)
	}
	op = wakeWaitersOfDead(op)
	select {
	case w.acks <- op:
	case <-ctx.Done():
	}
	w.freeSlot()
}

// handleLoop is one handler goroutine.
func (w *Worker) handleLoop(ctx context.Context) error {
	defer func() {
		w.dropUnstarted() // their slots, shared ones too (slots.go)
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
		ID: d.env.id, Queue: w.q.name, Namespace: w.q.cfg.Namespace, Payload: d.env.payload,
		Attempt: d.env.attempt + 1, MaxAttempts: d.env.maxAttempts,
		Deliveries: d.env.deliveries, EnqueuedAt: d.env.enqueuedAt, Deadline: d.env.deadline,
		Headers: headerMap(d.env.headers), Type: d.env.typ, Partition: d.env.part, Priority: d.env.level,
	}
	if strings.HasPrefix(d.env.id, cronPrefix) {
		if !w.cronStart(&d, job) {
			w.cronSkip(d)
			return
		}
	}
	timeout := d.env.timeout
	if timeout == 0 {
		timeout = w.cfg.JobTimeout
	}
	ctx, cancel := w.hardCtx, context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	ctx, jr := w.beginRun(ctx, d, job)
	start := time.Now()
	w.lat.started(d.env.attempt, d.env.enqueuedAt, w.q.cfg.Now)
	err := w.callRun(ctx, job)
	ran := time.Since(start)
	cancelled := w.endRun(jr, err)
	cancel()
	w.lat.ran(ran)
	if timeout > 0 && time.Since(start) > timeout+ignoredTimeoutGrace {
		w.st.ignoredTimeouts.Add(1)
		w.log.Warn("queue: handler ignored its timeout", "job", job.ID, "timeout", timeout, "ran", time.Since(start))
	}
	if err != nil && w.hardCtx.Err() != nil && !cancelled {
		// Cancelled by the drain, not failed: the job stays in the
		// processing list and goes back to the ready list unchanged.
		w.freeSlot()
		return
	}
	var op ackOp
	if cancelled { // by Queue.Cancel: never retried
		op = w.cancelledOutcome(d)
	} else {
		op = w.outcome(d, job, err)
	}
	if !cancelled { // a cancel is no outcome a hook reports
		w.extend(&op, d, job, err, ran, timeout) // last error and hook (hooks.go)
	}
	op = w.withExtra(op, jr, cancelled)
	if job.Schedule != "" {
		if op.kind == ackRetry {
			w.cronHold(job, op.due, timeout)
		} else {
			w.cronEnd(job)
		}
	}
	select {
	case w.acks <- op:
	case <-w.ackerGone:
		// The drain is over and put this job back in the ready list; its
		// outcome no longer matters here.
	}
	w.freeSlot()
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
		return ackOp{kind: ackDone, elem: d.elem, id: d.env.id, unique: d.env.unique, ref: d.env.ref, window: d.env.window.Milliseconds()}
	}
	w.st.failed.Add(1)
	w.onError(job, err)
	// The verdict Job.Verdict reported to the handler, if it asked: the
	// retry's delay is drawn once per run (verdict.go).
	v := w.verdict(job, err)
	if v.Retry {
		// From the element as fetched, not d.env: its payload is the
		// handler's Job.Payload, which the handler may have changed.
		next, _ := decodeEnvelope([]byte(d.elem)) // it decoded when fetched
		// The type is d.env's: the element's, or a schedule's registered
		// type (cronStart). The first attempt of a schedule's occurrence
		// ran the registered payload (cronStart): so does its retry,
		// unless the element's payload is kept apart (its ref stays).
		next.typ = d.env.typ
		if _, _, occ := parseOccurrence(d.env.id); occ && d.env.attempt == 0 && next.ref == "" {
			next.payload = d.env.payload
		}
		next.attempt++
		w.log.Debug("queue: job failed; retrying", "job", job.ID, "attempt", job.Attempt, "in", max(v.RetryAt.Sub(w.q.cfg.Now()), 0), "err", err)
		return ackOp{kind: ackRetry, elem: d.elem, id: d.env.id, next: next.encode(), due: v.RetryAt}
	}
	w.log.Warn("queue: job sent to the dead letters", "job", job.ID, "reason", v.Reason)
	return ackOp{kind: ackDead, elem: d.elem, id: d.env.id, unique: d.env.unique, reason: v.Reason, attempts: job.Attempt, deadID: d.env.id}
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
	HookPanics  uint64 `json:"hook_panics"` // OnDone, OnRetry and OnDead calls that panicked
	// FetcherLastReturn is when the fetcher last came back from Redis. With
	// FetcherState "blocking" it is never older than BlockTimeout plus a
	// round trip in a live worker: a health check can tell a dead fetcher.
	FetcherLastReturn time.Time `json:"fetcher_last_return"`
	FetcherState      string    `json:"fetcher_state"`
	ConsumerID        string    `json:"consumer_id"`
	// Memory is Redis's eviction policy and memory limit as the worker
	// knows them (see Worker.Memory).
	Memory MemoryStats `json:"memory"`
	// StartDelay counts first runs' waits from EnqueuedAt to the handler's
	// start (a delayed job's includes its delay; retries are left out),
	// Run every handler call's duration; see latency.go.
	StartDelay pool.Histogram `json:"start_delay"`
	Run        pool.Histogram `json:"run"`
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
		FetchErrors: w.st.fetchErrors.Load(), AckErrors: w.st.ackErrors.Load(), HookPanics: w.hookPanics.Load(),
		FetcherState: fetcherStateNames[w.st.fetchState.Load()], ConsumerID: w.c.ID(),
		Memory:     w.Memory(),
		StartDelay: bucketsOf(&w.lat.startDelay), Run: bucketsOf(&w.lat.run),
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
	case fetcherWaitingForSlot, fetcherWaitingForRate, fetcherWaitingForShared, fetcherWaitingForPartRate:
		return true
	case fetcherBlocking, fetcherBackingOff, fetcherWaitingAtLimit:
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
