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
// pipeline: ZADD our deadline, ZRANGEBYSCORE for deadlines already passed.
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
	changed  chan struct{} // a worker attached or detached
	swept    map[string]int64
	lastTrim time.Time
}

type nodeKey struct {
	ns string
	g  *lifecycle.Group
}

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
	checked := map[*Worker]bool{} // workers whose queue got its start-time check
	for {
		for _, w := range n.attached() {
			if !checked[w] {
				checked[w] = true
				n.checkQueue(opCtx, w)
			}
		}
		select {
		case <-t.C:
			n.tick(opCtx)
		case <-n.changed:
		case <-ctx.Done():
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
				n.leave(opCtx)
				return nil
			}
		}
	}
}

// leave removes the heartbeat: a process that stopped cleanly is not dead,
// it is gone.
func (n *node) leave(ctx context.Context) {
	n.p.DeleteShared(n.key, n)
	if err := n.p.Background().ZRem(ctx, n.hb, n.id).Err(); err != nil {
		n.log.Warn("queue: leaving the heartbeat failed; it will expire", "err", err)
	}
}

// tick is one heartbeat: extend our deadline and list the consumers whose
// deadline passed. Two commands in one round trip.
func (n *node) tick(ctx context.Context) {
	now := n.now()
	c := n.p.Background()
	pipe := c.Pipeline()
	pipe.ZAdd(ctx, n.hb, redis.Z{Score: float64(now.Add(n.ttl).UnixMilli()), Member: n.id})
	deadCmd := pipe.ZRangeByScoreWithScores(ctx, n.hb, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: 64})
	if now.Sub(n.lastTrim) > heartbeatRetention/4 {
		n.lastTrim = now
		pipe.ZRemRangeByScore(ctx, n.hb, "-inf", strconv.FormatInt(now.Add(-heartbeatRetention).UnixMilli(), 10))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		n.log.Warn("queue: heartbeat failed", "err", err)
		return
	}
	var dead []string
	seen := map[string]bool{}
	for _, z := range deadCmd.Val() {
		id, _ := z.Member.(string)
		if id == "" || id == n.id {
			continue
		}
		seen[id] = true
		if n.swept[id] == int64(z.Score) {
			continue // already swept at this deadline
		}
		dead = append(dead, id)
		n.swept[id] = int64(z.Score)
	}
	for id := range n.swept {
		if !seen[id] {
			delete(n.swept, id) // trimmed, or alive again
		}
	}
	for _, w := range n.attached() {
		if w.needsPeriodicReconcile() {
			w.needReconcile.Store(true)
		}
		for _, id := range dead {
			w.sweep(ctx, id)
		}
	}
}

// checkQueue finds the dead among a queue's consumers when a worker starts:
// those with no heartbeat at all (trimmed long ago) or an expired one.
func (n *node) checkQueue(ctx context.Context, w *Worker) {
	c := n.p.Background()
	ids, err := c.SMembers(ctx, w.q.k.consumers).Result()
	if err != nil || len(ids) == 0 {
		return
	}
	scores, err := c.ZMScore(ctx, n.hb, ids...).Result()
	if err != nil {
		n.log.Warn("queue: checking consumers failed", "queue", w.q.name, "err", err)
		return
	}
	now := n.now().UnixMilli()
	for i, id := range ids {
		if id == n.id {
			continue
		}
		// ZMSCORE answers 0 for a member that is not there.
		if scores[i] == 0 || int64(scores[i]) < now {
			w.sweep(ctx, id)
		}
	}
}

// sweepLockTTL bounds how long a crashed sweeper blocks the others.
const sweepLockTTL = 30 * time.Second

// sweep moves a dead consumer's processing list of this worker's queue back
// to the head of the ready list. Each job's delivery count goes up; a job
// recovered more than MaxDeliveries times goes to the dead letters instead
// (it probably kills its consumers). Every move is conditional on the
// element still being in the dead consumer's list, so a sweep racing a
// zombie consumer's ack, or another sweep, never duplicates a job.
func (w *Worker) sweep(ctx context.Context, consumer string) {
	q, c := w.q, w.q.p.Background()
	proc := q.k.proc(consumer)
	elems, err := c.LRange(ctx, proc, 0, -1).Result()
	if err != nil {
		w.log.Warn("queue: sweep: reading a dead consumer's jobs failed", "consumer", consumer, "err", err)
		return
	}
	if len(elems) == 0 {
		_ = c.SRem(ctx, q.k.consumers, consumer).Err()
		return
	}
	token := w.cfg.ConsumerID
	ok, err := c.SetNX(ctx, q.k.sweepLock, token, sweepLockTTL).Result()
	if err != nil || !ok {
		return // another process is sweeping this queue
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
		return
	}
	w.log.Info("queue: recovered jobs of a dead consumer", "consumer", consumer, "requeued", n, "dead_lettered", died)
}
