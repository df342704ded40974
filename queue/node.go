package queue

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// node is one run of a Consumer's heartbeat: from the first worker's Start
// until the group closes and the last worker has drained. It is ONE
// heartbeat and one sweeper of dead consumers (sweep.go), whatever the
// number of queues and workers, on one ticker.
//
// Liveness is a sorted set per namespace: member = consumer ID, score = the
// unix ms after which the consumer counts as dead. Each tick is one
// pipeline: ZADD our deadline, and a range of the most recently dead
// (ZREVRANGEBYSCORE, newest first, a page of deadPage). The heartbeat hands
// that view to the sweeper, a task of its own, and never waits for it:
// sweeps cost several round trips per dead consumer and queue (seconds
// against a slow Redis), and a heartbeat that waited for them would make
// this process look dead, its running jobs swept and run twice.
type node struct {
	c        *Consumer
	p        *pool.Pool
	g        *lifecycle.Group
	id       string
	token    string // this incarnation of the consumer (see Worker.sweep)
	hb       string
	live     string // liveKey: the token each live consumer runs as
	interval time.Duration
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger
	unclaim  func() // gives the pool's claim of the consumer ID back (Consumer.heartbeatOn)

	mu      sync.Mutex
	workers map[member]struct{}
	running bool
	changed chan struct{} // a worker attached or detached: for the heartbeat
	joined  chan struct{} // a worker attached: for the sweeper
	dirty   bool          // a worker could not put its jobs back: leave the heartbeat to expire

	lastTrim time.Time        // the heartbeat's own
	lastDead map[string]int64 // the heartbeat's own: the dead it saw last time, and their deadlines
	views    chan deadView    // the heartbeat's latest view of the dead, for the sweeper (latest wins)
	ctl      *controlSub      // the control subscription (ConsumerConfig.Control), else nil
	hubs     hubs             // the fetch hubs, one per slot group (hub.go)

	// The sweeper's own.
	swept   map[string]int64 // dead consumer -> deadline at which every attached queue was swept
	pageOff int64            // offset of the next older page of dead, while the newest page is full
}

// member is what the heartbeat and the sweeper need of a worker, and all
// they use of it.
type member interface {
	// queueTag and queueName name the worker's queue: one worker per queue
	// and process.
	queueTag() string
	queueName() string
	// announce adds to pipe the commands that make the consumer, running
	// as token, a consumer of the worker's queue.
	announce(ctx context.Context, pipe redis.Pipeliner, id, token string)
	// beat is called on every heartbeat; newlyDead says that it saw a
	// consumer newly dead. dueOverdue is called when the queue's due
	// announcement has passed (due.go).
	beat(newlyDead bool)
	dueOverdue()
	// checkConsumers sweeps the dead among the queue's consumers, and
	// sweep one dead consumer's list of the queue; both report whether
	// they completed (see sweep.go).
	checkConsumers(ctx context.Context, n *node) bool
	sweep(ctx context.Context, n *node, consumer string) bool
}

// deadView is what one heartbeat saw: the newest page of dead consumers.
type deadView struct {
	now     time.Time
	found   []redis.Z
	recheck bool // check every queue's consumers set again (see sweep.go)
}

// deadPage is how many dead consumers one heartbeat reads at a time.
const deadPage = 64

// heartbeatRetention is how long a dead consumer stays in the heartbeat set
// (so every process watching gets to sweep its queues) before it is trimmed.
const heartbeatRetention = time.Hour

func newNode(c *Consumer, g *lifecycle.Group, log *slog.Logger) *node {
	ns := c.cfg.Namespace
	if c.cfg.Logger != nil {
		log = c.cfg.Logger
	}
	return &node{
		c: c, p: c.p, g: g, id: c.cfg.ConsumerID, token: newID(time.Now()), hb: heartbeatKey(ns), live: liveKey(ns),
		interval: c.cfg.HeartbeatInterval, ttl: c.cfg.HeartbeatTTL, now: c.cfg.Now, log: log.With("consumer", c.cfg.ConsumerID),
		workers: map[member]struct{}{}, changed: make(chan struct{}, 1), joined: make(chan struct{}, 1),
		views: make(chan deadView, 1), swept: map[string]int64{},
	}
}

// hasQueue reports whether a worker of the queue with this tag is attached.
func (n *node) hasQueue(tag string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for w := range n.workers {
		if w.queueTag() == tag {
			return true
		}
	}
	return false
}

// attach adds a worker. The first one starts the heartbeat and sweeper
// tasks on the node's group. The consumer is alive in Redis (heartbeat
// written, its incarnation recorded, member of the queue's consumers)
// before attach returns, so it never holds a job unannounced.
func (n *node) attach(ctx context.Context, w member) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.workers {
		if other.queueTag() == w.queueTag() {
			return errOneWorkerPerQueue(w.queueName())
		}
	}
	c := n.p.Background()
	// Heartbeat and live token together (one slot, one MULTI): a sweep
	// that finds this consumer alive under another token than a queue's
	// knows that queue's list is a previous life's.
	tx := c.TxPipeline()
	tx.ZAdd(ctx, n.hb, redis.Z{Score: float64(n.now().Add(n.ttl).UnixMilli()), Member: n.id})
	tx.HSet(ctx, n.live, n.id, n.token)
	cmds, err := tx.Exec(ctx)
	if oomRefused(cmds, err) { // Redis at maxmemory: join all the same (oom.go)
		err = replayAtLimit(ctx, c, cmds)
	}
	if err != nil {
		return fmt.Errorf("joining the heartbeat: %w", err)
	}
	// Only once the heartbeat is written (a separate round trip: on Redis
	// Cluster the two keys live on different nodes): a sweep that reads
	// this token then finds the heartbeat alive (see Worker.sweep).
	pipe := c.Pipeline()
	w.announce(ctx, pipe, n.id, n.token)
	if cmds, err = pipe.Exec(ctx); oomRefused(cmds, err) {
		err = replayAtLimit(ctx, c, cmds)
	}
	if err != nil {
		return fmt.Errorf("joining the queue's consumers: %w", err)
	}
	if !n.running {
		// The sweeper first: if the heartbeat cannot start, the group is
		// closing and the sweeper returns at once.
		ns := n.c.cfg.Namespace
		if err := n.g.Go("queue sweeper ("+ns+")", n.sweepLoop); err != nil {
			return err
		}
		if err := n.g.Go("queue heartbeat ("+ns+")", n.loop); err != nil {
			return err
		}
		if n.ctl != nil {
			if err := n.g.Go("queue control ("+ns+")", n.ctl.loop); err != nil {
				return err
			}
		}
		n.running = true
	}
	n.workers[w] = struct{}{}
	n.signal()
	select {
	case n.joined <- struct{}{}:
	default:
	}
	return nil
}

func errOneWorkerPerQueue(queue string) error {
	return fmt.Errorf("queue %q already has a worker in this process (one worker per queue; raise its Concurrency instead)", queue)
}

// unused reports whether no worker is attached and no task runs: a node a
// failed Start made, which its Consumer can forget.
func (n *node) unused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.workers) == 0 && !n.running
}

// keepHeartbeat makes the node leave without removing its heartbeat: a
// worker that could not put its processing list back needs the others to
// see this consumer die and sweep it.
func (n *node) keepHeartbeat() {
	n.mu.Lock()
	n.dirty = true
	n.mu.Unlock()
}

func (n *node) detach(w member) {
	n.mu.Lock()
	delete(n.workers, w)
	n.mu.Unlock()
	n.signal()
}

func (n *node) signal() {
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

func (n *node) attached() []member {
	n.mu.Lock()
	defer n.mu.Unlock()
	ws := make([]member, 0, len(n.workers))
	for w := range n.workers {
		ws = append(ws, w)
	}
	return ws
}

// loop beats every interval until the group closes AND every worker has
// drained: a draining worker still holds jobs, and must not look dead. It
// never sweeps (the sweeper does), so nothing but its own round trip
// delays a beat.
func (n *node) loop(ctx context.Context) error {
	t := time.NewTicker(n.interval)
	defer t.Stop()
	opCtx := context.WithoutCancel(ctx)
	done := ctx.Done()
	for {
		select {
		case <-t.C:
			n.tick(opCtx)
		case <-n.changed:
		case <-done:
			// Seen once is enough: from now on wait for the workers to
			// drain (n.changed) while still beating.
			done = nil
		}
		if ctx.Err() != nil {
			opCtx = lifecycle.CloseContext(ctx)
			n.mu.Lock()
			idle := len(n.workers) == 0
			if idle {
				n.running = false
			}
			n.mu.Unlock()
			if idle || opCtx.Err() != nil {
				// Past the Close deadline with workers still attached,
				// their processing lists may hold jobs: the heartbeat
				// must expire so that others sweep them.
				n.leave(opCtx, idle)
				return nil
			}
		}
	}
}

// leave removes the heartbeat: a process that stopped cleanly is not dead,
// it is gone. One whose workers did not all put their jobs back keeps it,
// so it expires and the others sweep what is left. Its Consumer forgets it
// only once it is gone from Redis: a new run of the Consumer (same ID) must
// not have its fresh heartbeat removed by this one's leaving.
func (n *node) leave(ctx context.Context, drained bool) {
	defer n.c.forget(n)
	n.mu.Lock()
	clean := drained && !n.dirty
	n.mu.Unlock()
	if !clean {
		n.log.Warn("queue: leaving with jobs possibly still held; the heartbeat expires and other processes recover them", "within", n.ttl+n.interval)
		return
	}
	tx := n.p.Background().TxPipeline()
	tx.ZRem(ctx, n.hb, n.id)
	tx.HDel(ctx, n.live, n.id)
	tx.HDel(ctx, consumerQueuesKey(n.c.cfg.Namespace), n.id)
	if _, err := tx.Exec(ctx); err != nil {
		n.log.Warn("queue: leaving the heartbeat failed; it will expire", "err", err)
	}
}

// tick is one heartbeat: extend our deadline and list the consumers whose
// deadline passed, newest first, in one round trip, tell the workers, and
// hand the list to the sweeper without waiting for it.
func (n *node) tick(ctx context.Context) {
	now := n.now()
	found, trimmed, err := n.beat(ctx, now)
	if err != nil {
		n.log.Warn("queue: heartbeat failed", "err", err)
		return // the trim and the recheck are tried again next time
	}
	// A dead consumer trimmed before every process could sweep it (its
	// sweeps kept failing for an hour) is still in its queues' consumers
	// sets: have the sweeper check those again. Not on the first beat: the
	// start-time check has just run.
	recheck := trimmed && !n.lastTrim.IsZero()
	if trimmed {
		n.lastTrim = now
	}
	if recheck {
		// The Inspector's registry, refreshed every 15 minutes; the
		// workers' Start noted it already (registry.go).
		n.noteQueues(ctx)
	}
	overdue, found := overdueQueues(found)
	n.notify(n.sawNewlyDead(found), overdue)
	n.post(deadView{now: now, found: found, recheck: recheck})
}

// beat sends one heartbeat pipeline: our deadline, the newest page of the
// dead, and every heartbeatRetention/4 the trim of those dead for longer
// than heartbeatRetention (trimmed says whether it did).
func (n *node) beat(ctx context.Context, now time.Time) (found []redis.Z, trimmed bool, err error) {
	nowMs := strconv.FormatInt(now.UnixMilli(), 10)
	pipe := n.p.Background().Pipeline()
	pipe.ZAdd(ctx, n.hb, redis.Z{Score: float64(now.Add(n.ttl).UnixMilli()), Member: n.id})
	deadCmd := pipe.ZRevRangeByScoreWithScores(ctx, n.hb, &redis.ZRangeBy{Min: "-inf", Max: nowMs, Count: deadPage})
	tailCmd := n.tailNote(ctx, pipe, now) // tail.go
	trimmed = now.Sub(n.lastTrim) > heartbeatRetention/4
	if trimmed {
		// EVAL, not EVALSHA: once per 15 minutes, and a Redis that lost its
		// scripts must not fail the heartbeat's pipeline.
		trimHeartbeatsScript.Eval(ctx, pipe, []string{n.hb, n.live, consumerQueuesKey(n.c.cfg.Namespace)}, now.Add(-heartbeatRetention).UnixMilli())
	}
	cmds, err := pipe.Exec(ctx)
	if oomRefused(cmds, err) { // Redis at maxmemory (oom.go)
		err = replayAtLimit(ctx, n.p.Background(), cmds)
	}
	if err = n.tailTolerate(cmds, tailCmd, err); err != nil { // tail.go
		return nil, false, err
	}
	n.applyTails(tailCmd.Val())
	return deadCmd.Val(), trimmed, nil
}

// sawNewlyDead remembers the dead of this beat and reports whether one of
// them was not dead (at that deadline) on the last beat.
func (n *node) sawNewlyDead(found []redis.Z) bool {
	newlyDead := false
	seen := make(map[string]int64, len(found))
	for _, z := range found {
		id, _ := z.Member.(string)
		if id == n.id {
			continue
		}
		seen[id] = int64(z.Score)
		if at, ok := n.lastDead[id]; !ok || at != int64(z.Score) {
			newlyDead = true
		}
	}
	n.lastDead = seen
	return newlyDead
}

// notify tells every worker of the beat. A consumer newly seen dead may
// have been the only one that knew when the next delayed job is due: every
// scheduler re-reads. Done here, not by the sweeper, which may be busy with
// a long list.
func (n *node) notify(newlyDead bool, overdue map[string]bool) {
	for _, w := range n.attached() {
		w.beat(newlyDead)
		if overdue[w.queueTag()] {
			w.dueOverdue()
		}
	}
}

// post hands a view to the sweeper, replacing one it has not taken yet (a
// newer view supersedes it; a recheck it asked for is kept).
func (n *node) post(v deadView) {
	for {
		select {
		case n.views <- v:
			return
		default:
		}
		select {
		case old := <-n.views:
			v.recheck = v.recheck || old.recheck
		default:
		}
	}
}
