package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// node is this process as a consumer of a namespace's queues: ONE heartbeat
// and one check for dead consumers, whatever the number of queues and
// workers, on one ticker. It is shared by the workers started on the same
// pool, namespace and lifecycle group (kept with pool.Shared, so there is no
// package-level state), and runs while at least one of them does.
//
// Liveness is a sorted set per namespace: member = consumer ID, score = the
// unix ms after which the consumer counts as dead. Each tick is one
// pipeline: ZADD our deadline, and a range of the most recently dead
// (ZREVRANGEBYSCORE, newest first, a page of deadPage). Only when that page
// is full does a tick cost a third command, reading the next page of older
// dead in rotation, so any number of dead consumers is seen.
// A dead consumer's processing lists are swept back to the ready lists of
// the queues this process consumes, one process per queue at a time (SET NX
// PX lock). A worker that starts also checks its queue's consumers set, so a
// consumer that died before anyone watched is recovered too.
type node struct {
	p        *pool.Pool
	key      nodeKey
	id       string
	hb       string
	interval time.Duration
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger

	mu       sync.Mutex
	workers  map[*Worker]struct{}
	running  bool
	changed  chan struct{}    // a worker attached or detached
	swept    map[string]int64 // dead consumer -> deadline at which every attached queue was swept
	pageOff  int64            // offset of the next older page of dead, while the newest page is full
	dirty    bool             // a worker could not put its jobs back: leave the heartbeat to expire
	lastTrim time.Time
}

type nodeKey struct {
	ns string
	g  *lifecycle.Group
}

// deadPage is how many dead consumers one heartbeat reads at a time.
const deadPage = 64

// heartbeatRetention is how long a dead consumer stays in the heartbeat set
// (so every process watching gets to sweep its queues) before it is trimmed.
const heartbeatRetention = time.Hour

func nodeFor(p *pool.Pool, g *lifecycle.Group, qc Config, wc WorkerConfig) (*node, error) {
	key := nodeKey{ns: qc.Namespace, g: g}
	n := p.Shared(key, func() any {
		id := wc.ConsumerID
		if id == "" {
			id = defaultConsumerID()
		}
		return &node{
			p: p, key: key, id: id, hb: heartbeatKey(qc.Namespace),
			interval: wc.HeartbeatInterval, ttl: wc.HeartbeatTTL, now: qc.Now,
			log:     wc.Logger,
			workers: map[*Worker]struct{}{}, changed: make(chan struct{}, 1), swept: map[string]int64{},
		}
	}).(*node)
	if n.interval != wc.HeartbeatInterval || n.ttl != wc.HeartbeatTTL || (wc.ConsumerID != "" && n.id != wc.ConsumerID) {
		return nil, fmt.Errorf("workers started on one pool and group share a heartbeat: this worker has ConsumerID %q, HeartbeatInterval %s, HeartbeatTTL %s but the heartbeat runs with %q, %s, %s",
			wc.ConsumerID, wc.HeartbeatInterval, wc.HeartbeatTTL, n.id, n.interval, n.ttl)
	}
	return n, nil
}

// attach adds a worker. The first one starts the heartbeat task on g. The
// consumer is alive in Redis (heartbeat written, member of the queue's
// consumers) before attach returns, so it never holds a job unannounced.
func (n *node) attach(ctx context.Context, g *lifecycle.Group, w *Worker) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.workers {
		if other.q.k.tag == w.q.k.tag {
			return fmt.Errorf("queue %q already has a worker in this process (one worker per queue; raise its Concurrency instead)", w.q.name)
		}
	}
	c := n.p.Background()
	pipe := c.Pipeline()
	pipe.ZAdd(ctx, n.hb, redis.Z{Score: float64(n.now().Add(n.ttl).UnixMilli()), Member: n.id})
	pipe.SAdd(ctx, w.q.k.consumers, n.id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("joining the heartbeat: %w", err)
	}
	if !n.running {
		if err := g.Go("queue heartbeat ("+n.key.ns+")", n.loop); err != nil {
			return err
		}
		n.running = true
	}
	n.workers[w] = struct{}{}
	n.signal()
	return nil
}

// keepHeartbeat makes the node leave without removing its heartbeat: a
// worker that could not put its processing list back needs the others to
// see this consumer die and sweep it.
func (n *node) keepHeartbeat() {
	n.mu.Lock()
	n.dirty = true
	n.mu.Unlock()
}

func (n *node) detach(w *Worker) {
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

func (n *node) attached() []*Worker {
	n.mu.Lock()
	defer n.mu.Unlock()
	ws := make([]*Worker, 0, len(n.workers))
	for w := range n.workers {
		ws = append(ws, w)
	}
	return ws
}

// loop beats every interval until the group closes AND every worker has
// drained: a draining worker still holds jobs, and must not look dead.
func (n *node) loop(ctx context.Context) error {
	t := time.NewTicker(n.interval)
	defer t.Stop()
	opCtx := context.WithoutCancel(ctx)
	checked := map[*Worker]bool{} // workers whose queue's start-time check completed
	done := ctx.Done()
	for {
		for _, w := range n.attached() {
			if !checked[w] {
				// Retried on every tick until it completes (a sweep lock
				// held by another process, a Redis error).
				checked[w] = n.checkQueue(opCtx, w)
			}
		}
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
// so it expires and the others sweep what is left.
func (n *node) leave(ctx context.Context, drained bool) {
	n.p.DeleteShared(n.key, n)
	n.mu.Lock()
	clean := drained && !n.dirty
	n.mu.Unlock()
	if !clean {
		n.log.Warn("queue: leaving with jobs possibly still held; the heartbeat expires and other processes recover them", "consumer", n.id, "within", n.ttl+n.interval)
		return
	}
	if err := n.p.Background().ZRem(ctx, n.hb, n.id).Err(); err != nil {
		n.log.Warn("queue: leaving the heartbeat failed; it will expire", "err", err)
	}
}

// tick is one heartbeat: extend our deadline and list the consumers whose
// deadline passed, newest first. Two commands in one round trip; a third
// only while more than deadPage consumers are dead.
func (n *node) tick(ctx context.Context) {
	now := n.now()
	nowMs := strconv.FormatInt(now.UnixMilli(), 10)
	c := n.p.Background()
	pipe := c.Pipeline()
	pipe.ZAdd(ctx, n.hb, redis.Z{Score: float64(now.Add(n.ttl).UnixMilli()), Member: n.id})
	deadCmd := pipe.ZRevRangeByScoreWithScores(ctx, n.hb, &redis.ZRangeBy{Min: "-inf", Max: nowMs, Count: deadPage})
	if now.Sub(n.lastTrim) > heartbeatRetention/4 {
		n.lastTrim = now
		pipe.ZRemRangeByScore(ctx, n.hb, "-inf", strconv.FormatInt(now.Add(-heartbeatRetention).UnixMilli(), 10))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		n.log.Warn("queue: heartbeat failed", "err", err)
		return
	}
	found := deadCmd.Val()
	// inView: every dead consumer is in found, so the memo of those not in
	// it can go.
	inView := len(found) < deadPage
	if inView {
		n.pageOff = 0
	} else {
		// The newest page is full: older dead may be beyond it. Read one
		// more page per tick, in rotation, so every dead consumer gets its
		// turn while newly dead ones are still seen at once.
		off := max(n.pageOff, deadPage)
		older, err := c.ZRevRangeByScoreWithScores(ctx, n.hb, &redis.ZRangeBy{Min: "-inf", Max: nowMs, Offset: off, Count: deadPage}).Result()
		if err != nil {
			n.log.Warn("queue: reading older dead consumers failed", "err", err)
		}
		found = append(found, older...)
		inView = err == nil && off == deadPage && len(older) < deadPage
		n.pageOff = off + deadPage
		if len(older) < deadPage {
			n.pageOff = deadPage // wrap around
		}
	}
	type deadline struct {
		id string
		at int64
	}
	var dead []deadline
	seen := map[string]bool{}
	for _, z := range found {
		id, _ := z.Member.(string)
		if id == "" || id == n.id || seen[id] {
			continue
		}
		seen[id] = true
		if at, ok := n.swept[id]; ok && at == int64(z.Score) {
			continue // already swept at this deadline
		}
		dead = append(dead, deadline{id, int64(z.Score)})
	}
	if inView {
		// Every dead consumer is in view: forget those that are gone
		// (trimmed, or alive again). While paging, the memo of pages out of
		// view is kept; it is bounded by the set, which the trim bounds.
		for id := range n.swept {
			if !seen[id] {
				delete(n.swept, id)
			}
		}
	}
	ws := n.attached()
	for _, w := range ws {
		if len(dead) > 0 {
			// A dead process may have been the only one that knew when the
			// next delayed job is due.
			w.sched.wake(false)
		}
		if w.needsPeriodicReconcile() {
			w.needReconcile.Store(true)
		}
	}
	for _, d := range dead {
		complete := true
		for _, w := range ws {
			if !w.sweep(ctx, d.id) {
				complete = false
			}
		}
		if complete {
			n.swept[d.id] = d.at
		}
	}
}

// checkQueue finds the dead among a queue's consumers when a worker starts:
// those with no heartbeat at all (trimmed long ago) or an expired one. It
// reports whether every one of them was swept completely.
func (n *node) checkQueue(ctx context.Context, w *Worker) bool {
	c := n.p.Background()
	ids, err := c.SMembers(ctx, w.q.k.consumers).Result()
	if err != nil {
		n.log.Warn("queue: checking consumers failed", "queue", w.q.name, "err", err)
		return false
	}
	if len(ids) == 0 {
		return true
	}
	scores, err := c.ZMScore(ctx, n.hb, ids...).Result()
	if err != nil {
		n.log.Warn("queue: checking consumers failed", "queue", w.q.name, "err", err)
		return false
	}
	now := n.now().UnixMilli()
	complete := true
	for i, id := range ids {
		if id == n.id {
			continue
		}
		// ZMSCORE answers 0 for a member that is not there.
		if (scores[i] == 0 || int64(scores[i]) < now) && !w.sweep(ctx, id) {
			complete = false
		}
	}
	return complete
}

// sweepLockTTL bounds how long a crashed sweeper blocks the others.
const sweepLockTTL = 30 * time.Second

// sweep moves a dead consumer's processing list of this worker's queue back
// to the head of the ready list. Each job's delivery count goes up; a job
// recovered more than MaxDeliveries times goes to the dead letters instead
// (it probably kills its consumers). Every move is conditional on the
// element still being in the dead consumer's list, so a sweep racing a
// zombie consumer's ack, or another sweep, never duplicates a job.
//
// It reports whether the dead consumer's list is known to be empty now (or
// dead-lettered and requeued in full): false when Redis failed or another
// process holds the sweep lock, so the caller tries again on a later tick.
func (w *Worker) sweep(ctx context.Context, consumer string) bool {
	q, c := w.q, w.q.p.Background()
	proc := q.k.proc(consumer)
	elems, err := c.LRange(ctx, proc, 0, -1).Result()
	if err != nil {
		w.log.Warn("queue: sweep: reading a dead consumer's jobs failed", "consumer", consumer, "err", err)
		return false
	}
	if len(elems) == 0 {
		return c.SRem(ctx, q.k.consumers, consumer).Err() == nil
	}
	token := w.cfg.ConsumerID
	ok, err := c.SetNX(ctx, q.k.sweepLock, token, sweepLockTTL).Result()
	if err != nil || !ok {
		return false // another process is sweeping this queue: look again next tick
	}
	defer func() { _ = unlockScript.Run(ctx, c, []string{q.k.sweepLock}, token).Err() }()

	var pairs []any
	var errs []error
	died := 0
	for _, e := range elems {
		if e == wakeMarker {
			pairs = append(pairs, e, e)
			continue
		}
		env, derr := decodeEnvelope([]byte(e))
		var reason, id string
		var unique bool
		switch {
		case derr != nil:
			reason, id = derr.Error(), deadIDFor(q.cfg.Now(), nil)
		case env.deliveries+1 > w.cfg.MaxDeliveries:
			reason = fmt.Sprintf("recovered from dead consumers %d times (WorkerConfig.MaxDeliveries %d): the job may be killing its consumers", env.deliveries+1, w.cfg.MaxDeliveries)
			id, unique = env.id, env.unique
		default:
			next := env
			next.deliveries++
			pairs = append(pairs, e, next.encode())
			continue
		}
		ks, args := q.deadArgs(proc, []byte(e), id, reason, env.attempt, unique, []byte(e))
		if err := deadScript.Run(ctx, c, ks, args...).Err(); err != nil {
			errs = append(errs, err)
		} else {
			died++
		}
	}
	n, err := w.recoverPairs(ctx, proc, pairs)
	if err != nil {
		errs = append(errs, err)
	}
	w.st.recovered.Add(uint64(n))
	w.st.dead.Add(uint64(died))
	if left, err := c.LLen(ctx, proc).Result(); err == nil && left == 0 {
		_ = c.SRem(ctx, q.k.consumers, consumer).Err()
	}
	if err := errors.Join(errs...); err != nil {
		w.log.Warn("queue: sweep incomplete; the next one continues", "consumer", consumer, "err", err)
		return false
	}
	w.log.Info("queue: recovered jobs of a dead consumer", "consumer", consumer, "requeued", n, "dead_lettered", died)
	return true
}
