package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// node is this process as a consumer of a namespace's queues: ONE heartbeat
// and one sweeper of dead consumers, whatever the number of queues and
// workers, on one ticker. It is shared by the workers started on the same
// pool, namespace and lifecycle group (kept with pool.Shared, so there is no
// package-level state), and runs while at least one of them does.
//
// Liveness is a sorted set per namespace: member = consumer ID, score = the
// unix ms after which the consumer counts as dead. Each tick is one
// pipeline: ZADD our deadline, and a range of the most recently dead
// (ZREVRANGEBYSCORE, newest first, a page of deadPage). The heartbeat hands
// that view to the sweeper, a task of its own, and never waits for it:
// sweeps cost several round trips per dead consumer and queue (seconds
// against a slow Redis), and a heartbeat that waited for them would make
// this process look dead, its running jobs swept and run twice.
//
// Only when the newest page is full does the sweeper read one more page of
// older dead, in rotation, so any number of dead consumers is seen. A dead
// consumer's processing lists are swept back to the ready lists of the
// queues this process consumes, one process per queue at a time (SET NX PX
// lock). The sweeper also checks each queue's consumers set when a worker
// starts and again every heartbeatRetention/4, so a consumer that died
// before anyone watched, or whose sweeps kept failing until its heartbeat
// was trimmed, is recovered too.
type node struct {
	p        *pool.Pool
	key      nodeKey
	id       string
	token    string // this incarnation of the consumer (see Worker.sweep)
	hb       string
	live     string // liveKey: the token each live consumer runs as
	interval time.Duration
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger

	mu      sync.Mutex
	workers map[*Worker]struct{}
	running bool
	changed chan struct{} // a worker attached or detached: for the heartbeat
	joined  chan struct{} // a worker attached: for the sweeper
	dirty   bool          // a worker could not put its jobs back: leave the heartbeat to expire

	lastTrim time.Time        // the heartbeat's own
	lastDead map[string]int64 // the heartbeat's own: the dead it saw last time, and their deadlines
	views    chan deadView    // the heartbeat's latest view of the dead, for the sweeper (latest wins)

	// The sweeper's own.
	swept   map[string]int64 // dead consumer -> deadline at which every attached queue was swept
	pageOff int64            // offset of the next older page of dead, while the newest page is full
}

// deadView is what one heartbeat saw: the newest page of dead consumers.
type deadView struct {
	now     time.Time
	found   []redis.Z
	recheck bool // check every queue's consumers set again (see node)
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
			p: p, key: key, id: id, token: newID(time.Now()), hb: heartbeatKey(qc.Namespace), live: liveKey(qc.Namespace),
			interval: wc.HeartbeatInterval, ttl: wc.HeartbeatTTL, now: qc.Now,
			log:     wc.Logger,
			workers: map[*Worker]struct{}{}, changed: make(chan struct{}, 1), joined: make(chan struct{}, 1),
			views: make(chan deadView, 1), swept: map[string]int64{},
		}
	}).(*node)
	if n.interval != wc.HeartbeatInterval || n.ttl != wc.HeartbeatTTL || (wc.ConsumerID != "" && n.id != wc.ConsumerID) {
		return nil, fmt.Errorf("workers started on one pool and group share a heartbeat: this worker has ConsumerID %q, HeartbeatInterval %s, HeartbeatTTL %s but the heartbeat runs with %q, %s, %s",
			wc.ConsumerID, wc.HeartbeatInterval, wc.HeartbeatTTL, n.id, n.interval, n.ttl)
	}
	return n, nil
}

// attach adds a worker. The first one starts the heartbeat and sweeper
// tasks on g. The consumer is alive in Redis (heartbeat written, its
// incarnation recorded, member of the queue's consumers) before attach
// returns, so it never holds a job unannounced.
func (n *node) attach(ctx context.Context, g *lifecycle.Group, w *Worker) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.workers {
		if other.q.k.tag == w.q.k.tag {
			return fmt.Errorf("queue %q already has a worker in this process (one worker per queue; raise its Concurrency instead)", w.q.name)
		}
	}
	c := n.p.Background()
	// Heartbeat and live token together (one slot, one MULTI): a sweep
	// that finds this consumer alive under another token than a queue's
	// knows that queue's list is a previous life's.
	tx := c.TxPipeline()
	tx.ZAdd(ctx, n.hb, redis.Z{Score: float64(n.now().Add(n.ttl).UnixMilli()), Member: n.id})
	tx.HSet(ctx, n.live, n.id, n.token)
	if _, err := tx.Exec(ctx); err != nil {
		return fmt.Errorf("joining the heartbeat: %w", err)
	}
	// Only once the heartbeat is written (a separate round trip: on Redis
	// Cluster the two keys live on different nodes): a sweep that reads
	// this token then finds the heartbeat alive (see Worker.sweep).
	pipe := c.Pipeline()
	pipe.HSet(ctx, w.q.k.incarnations, n.id, n.token)
	pipe.SAdd(ctx, w.q.k.consumers, n.id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("joining the queue's consumers: %w", err)
	}
	if !n.running {
		// The sweeper first: if the heartbeat cannot start, the group is
		// closing and the sweeper returns at once.
		if err := g.Go("queue sweeper ("+n.key.ns+")", n.sweepLoop); err != nil {
			return err
		}
		if err := g.Go("queue heartbeat ("+n.key.ns+")", n.loop); err != nil {
			return err
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
	tx := n.p.Background().TxPipeline()
	tx.ZRem(ctx, n.hb, n.id)
	tx.HDel(ctx, n.live, n.id)
	if _, err := tx.Exec(ctx); err != nil {
		n.log.Warn("queue: leaving the heartbeat failed; it will expire", "err", err)
	}
}

// tick is one heartbeat: extend our deadline and list the consumers whose
// deadline passed, newest first, in one round trip, and hand the list to
// the sweeper without waiting for it.
func (n *node) tick(ctx context.Context) {
	now := n.now()
	nowMs := strconv.FormatInt(now.UnixMilli(), 10)
	pipe := n.p.Background().Pipeline()
	pipe.ZAdd(ctx, n.hb, redis.Z{Score: float64(now.Add(n.ttl).UnixMilli()), Member: n.id})
	deadCmd := pipe.ZRevRangeByScoreWithScores(ctx, n.hb, &redis.ZRangeBy{Min: "-inf", Max: nowMs, Count: deadPage})
	recheck, lastTrim := false, n.lastTrim
	if now.Sub(n.lastTrim) > heartbeatRetention/4 {
		// A dead consumer trimmed here before every process could sweep it
		// (its sweeps kept failing for an hour) is still in its queues'
		// consumers sets: have the sweeper check those again.
		// Not on the first beat: the start-time check has just run.
		recheck = !n.lastTrim.IsZero()
		n.lastTrim = now
		// EVAL, not EVALSHA: once per 15 minutes, and a Redis that lost its
		// scripts must not fail the heartbeat's pipeline.
		trimHeartbeatsScript.Eval(ctx, pipe, []string{n.hb, n.live}, now.Add(-heartbeatRetention).UnixMilli())
	}
	if _, err := pipe.Exec(ctx); err != nil {
		n.log.Warn("queue: heartbeat failed", "err", err)
		n.lastTrim = lastTrim // try the trim and the recheck again
		return
	}
	// A consumer newly seen dead may have been the only one that knew when
	// the next delayed job is due: every scheduler re-reads. Done here, not
	// by the sweeper, which may be busy with a long list.
	found := deadCmd.Val()
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
	for _, w := range n.attached() {
		if newlyDead {
			w.sched.wake(false)
		}
		if w.needsPeriodicReconcile() {
			w.needReconcile.Store(true)
		}
	}
	n.post(deadView{now: now, found: found, recheck: recheck})
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

// sweepLoop is the sweeper: it checks the consumers of queues whose worker
// just started, and sweeps the dead consumers each heartbeat saw. It stops
// as soon as the group begins closing, checking between every two Redis
// calls: sweeping others is no part of draining (the processes that stay
// take it over), and the Close deadline bounds every task.
func (n *node) sweepLoop(ctx context.Context) error {
	checked := map[*Worker]bool{} // workers whose queue's consumers check completed
	for {
		ws := n.attached()
		for w := range checked {
			if !slices.Contains(ws, w) {
				delete(checked, w)
			}
		}
		for _, w := range ws {
			if !checked[w] && ctx.Err() == nil {
				// Retried on every heartbeat until it completes (a sweep
				// lock held by another process, a Redis error).
				checked[w] = n.checkQueue(ctx, w)
			}
		}
		select {
		case v := <-n.views:
			if v.recheck {
				clear(checked)
			}
			n.sweepDead(ctx, v)
		case <-n.joined:
		case <-ctx.Done():
			return nil
		}
	}
}

// sweepDead sweeps the dead consumers of one heartbeat's view, and of one
// more page of older ones while the newest page is full.
func (n *node) sweepDead(ctx context.Context, v deadView) {
	found := v.found
	// inView: every dead consumer is in found, so the memo of those not in
	// it can go.
	inView := len(found) < deadPage
	if inView {
		n.pageOff = 0
	} else {
		// The newest page is full: older dead may be beyond it. Read one
		// more page per heartbeat, in rotation, so every dead consumer gets
		// its turn while newly dead ones are still seen at once.
		off := max(n.pageOff, deadPage)
		nowMs := strconv.FormatInt(v.now.UnixMilli(), 10)
		older, err := n.p.Background().ZRevRangeByScoreWithScores(ctx, n.hb, &redis.ZRangeBy{Min: "-inf", Max: nowMs, Offset: off, Count: deadPage}).Result()
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
	for i, d := range dead {
		if i > 0 && len(n.views) > 0 {
			// A newer view is waiting: take it, so a consumer that died
			// meanwhile (newest first) is not kept waiting behind a long
			// list. Those not swept yet are in it again. Not before the
			// first one: against a Redis slower than a heartbeat a newer
			// view is always waiting by now (the older page's read), and
			// nothing would ever be swept.
			return
		}
		complete := true
		for _, w := range ws {
			if ctx.Err() != nil {
				return
			}
			if !w.sweep(ctx, n, d.id) {
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
	pipe := c.Pipeline()
	idsCmd := pipe.SMembers(ctx, w.q.k.consumers)
	toksCmd := pipe.HGetAll(ctx, w.q.k.incarnations)
	if _, err := pipe.Exec(ctx); err != nil {
		n.log.Warn("queue: checking consumers failed", "queue", w.q.name, "err", err)
		return false
	}
	ids, toks := idsCmd.Val(), toksCmd.Val()
	if len(ids) == 0 {
		return true
	}
	pipe = c.Pipeline()
	scoresCmd := pipe.ZMScore(ctx, n.hb, ids...)
	liveCmd := pipe.HMGet(ctx, n.live, ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		n.log.Warn("queue: checking consumers failed", "queue", w.q.name, "err", err)
		return false
	}
	scores, lives := scoresCmd.Val(), liveCmd.Val()
	now := n.now().UnixMilli()
	complete := true
	for i, id := range ids {
		if id == n.id {
			continue
		}
		if ctx.Err() != nil {
			return false
		}
		// ZMSCORE answers 0 for a member that is not there. A live
		// consumer whose token for this queue is not the one it runs as
		// left jobs of a previous life here.
		live, _ := lives[i].(string)
		gone := scores[i] == 0 || int64(scores[i]) < now || previousLife(toks[id], live)
		if gone && !w.sweep(ctx, n, id) {
			complete = false
		}
	}
	return complete
}

// sweep moves a dead consumer's processing list of this worker's queue back
// to the head of the ready list, each job's delivery count going up (a job
// recovered more than MaxDeliveries times then goes to the dead letters
// when it is fetched, instead of running: it probably kills its
// consumers). Every move is conditional on the element still being in the
// dead consumer's list, so a sweep racing a zombie consumer's ack, or
// another sweep, never duplicates a job.
//
// "Dead" was decided from an older view, and a consumer with a stable ID
// may have restarted since and fetched jobs into the same list. So the
// sweep reads the consumer's incarnation token, THEN confirms its heartbeat
// is still expired, and the move script checks the token has not changed:
// a new incarnation writes its heartbeat and then its token before it
// fetches anything, so either the check sees it alive or the script sees
// the new token (and moves nothing).
//
// It stops early when ctx ends, and reports whether the dead consumer's
// list is known to be empty now (or the consumer turned out alive): false
// when Redis failed, ctx ended or another process holds the sweep lock, so
// the caller tries again on a later heartbeat.
func (w *Worker) sweep(ctx context.Context, n *node, consumer string) bool {
	q, c := w.q, w.q.p.Background()
	proc := q.k.proc(consumer)
	fail := func(what string, err error) bool {
		if ctx.Err() == nil {
			w.log.Warn("queue: sweep: "+what+" failed; the next heartbeat tries again", "consumer", consumer, "err", err)
		}
		return false
	}
	pipe := c.Pipeline()
	tokCmd := pipe.HGet(ctx, q.k.incarnations, consumer)
	listCmd := pipe.LRange(ctx, proc, 0, -1)
	memberCmd := pipe.SIsMember(ctx, q.k.consumers, consumer)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fail("reading a dead consumer's jobs", err)
	}
	token := tokCmd.Val() // "" when none is recorded (an earlier version's consumer)
	if len(listCmd.Val()) == 0 && token == "" && !memberCmd.Val() {
		return true // swept already (by another process), nothing to forget
	}
	// After the token was read: a separate round trip (the heartbeat lives in
	// another Cluster slot).
	hbPipe := c.Pipeline()
	deadlineCmd := hbPipe.ZScore(ctx, n.hb, consumer)
	liveCmd := hbPipe.HGet(ctx, n.live, consumer)
	_, err := hbPipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return fail("checking a dead consumer's heartbeat", err)
	}
	deadline, err := deadlineCmd.Result()
	switch {
	case errors.Is(err, redis.Nil): // trimmed: dead long ago
	case int64(deadline) >= n.now().UnixMilli() && !previousLife(token, liveCmd.Val()):
		return true // alive again: nothing to sweep
	}
	elems := listCmd.Val()
	if len(elems) > 0 {
		lock := w.cfg.ConsumerID
		// The lock only saves duplicate work (every move is conditional), so
		// it lasts as long as a heartbeat: a sweeper killed mid-sweep
		// blocks the others no longer than its own death takes to be seen.
		// (It used to be 30s, which stalled recovery when sweepers died.)
		ok, err := c.SetNX(ctx, q.k.sweepLock, lock, w.cfg.HeartbeatTTL).Result()
		if err != nil || !ok {
			return false // another process is sweeping this queue: look again next heartbeat
		}
		defer func() {
			// Unlocked even when the group began closing (by its deadline),
			// or the others wait HeartbeatTTL to sweep this queue.
			uctx := ctx
			if ctx.Err() != nil {
				uctx = lifecycle.CloseContext(ctx)
			}
			_ = unlockScript.Run(uctx, c, []string{q.k.sweepLock}, lock).Err()
		}()
	}
	pairs := make([]any, 0, 2*len(elems))
	for _, e := range elems {
		env, derr := decodeEnvelope([]byte(e))
		if e == wakeMarker || derr != nil {
			// A marker goes back as it is; so does a malformed element,
			// which the fetcher sends to the dead letters.
			pairs = append(pairs, e, e)
			continue
		}
		next := env
		next.deliveries++
		pairs = append(pairs, e, next.encode())
	}
	moved, restarted, err := w.sweepPairs(ctx, proc, consumer, token, pairs)
	w.st.recovered.Add(uint64(moved))
	switch {
	case err != nil:
		return fail("moving a dead consumer's jobs", err)
	case restarted:
		w.log.Info("queue: a dead consumer restarted during its sweep; its jobs stay with it", "consumer", consumer, "requeued", moved)
	case moved > 0:
		w.log.Info("queue: recovered jobs of a dead consumer", "consumer", consumer, "requeued", moved)
	}
	return true
}

// previousLife reports whether a queue's list, recorded under token, belongs
// to an earlier incarnation of a consumer that is alive as live: restarted
// under the same ConsumerID, and not (yet) consuming that queue. Unknown
// tokens (consumers of earlier versions, or a list whose token a sweep
// already forgot) count as the live incarnation's.
func previousLife(token, live string) bool {
	return token != "" && live != "" && token != live
}

// sweepPairs runs sweepScript in chunks of at most 500 pairs and about
// maxLuaBytes (as recoverPairs), and once with no pairs when there are none,
// so that an empty list is forgotten. It stops at the first chunk that finds
// the consumer restarted.
func (w *Worker) sweepPairs(ctx context.Context, proc, consumer, token string, pairs []any) (moved int, restarted bool, err error) {
	const chunk = 2 * 500
	ks := []string{proc, w.q.k.ready, w.q.k.incarnations, w.q.k.consumers}
	for first := true; first || len(pairs) > 0; first = false {
		if err := ctx.Err(); err != nil {
			return moved, false, err
		}
		k, bytes := 0, 0
		for k < min(len(pairs), chunk) && (k == 0 || bytes < maxLuaBytes) {
			bytes += argLen(pairs[k]) + argLen(pairs[k+1])
			k += 2
		}
		args := append([]any{consumer, token}, pairs[:k]...)
		n, err := sweepScript.Run(ctx, w.q.p.Background(), ks, args...).Int()
		if err != nil {
			return moved, false, err
		}
		if n < 0 {
			return moved, true, nil
		}
		moved += n
		pairs = pairs[k:]
	}
	return moved, false, nil
}
