package queue

import (
	"context"
	"errors"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/lifecycle"
)

// The sweeper of a Consumer's heartbeat (node) recovers the jobs of dead
// consumers. Only when the newest page of dead the heartbeat saw is full
// does it read one more page of older dead, in rotation, so any number of
// dead consumers is seen. A dead consumer's processing lists are swept back
// to the ready lists of the queues this process consumes, one process per
// queue at a time (SET NX PX lock). The sweeper also checks each queue's
// consumers set when a worker starts and again every heartbeatRetention/4,
// so a consumer that died before anyone watched, or whose sweeps kept
// failing until its heartbeat was trimmed, is recovered too.

// sweepLoop is the sweeper: it checks the consumers of queues whose worker
// just started, and sweeps the dead consumers each heartbeat saw. It stops
// as soon as the group begins closing, checking between every two Redis
// calls: sweeping others is no part of draining (the processes that stay
// take it over), and the Close deadline bounds every task.
func (n *node) sweepLoop(ctx context.Context) error {
	checked := map[member]bool{} // workers whose queue's consumers check completed
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
				checked[w] = w.checkConsumers(ctx, n)
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
	found, inView := n.withOlderPage(ctx, v)
	dead, seen := n.notSwept(found)
	if inView {
		n.forgetGone(seen)
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
		if !n.sweepOne(ctx, ws, d) {
			return
		}
	}
}

// withOlderPage returns the dead of the view and, when its newest page is
// full, of one more page of older ones. inView reports whether every dead
// consumer is in found, so the memo of those not in it can go.
func (n *node) withOlderPage(ctx context.Context, v deadView) (found []redis.Z, inView bool) {
	found = v.found
	if len(found) < deadPage {
		n.pageOff = 0
		return found, true
	}
	// The newest page is full: older dead may be beyond it. Read one more
	// page per heartbeat, in rotation, so every dead consumer gets its turn
	// while newly dead ones are still seen at once.
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
	return found, inView
}

// deadConsumer is a dead consumer and the deadline it missed.
type deadConsumer struct {
	id string
	at int64
}

// notSwept returns the dead consumers in found not yet swept at their
// deadline, and every consumer ID seen in found.
func (n *node) notSwept(found []redis.Z) (dead []deadConsumer, seen map[string]bool) {
	seen = map[string]bool{}
	for _, z := range found {
		id, _ := z.Member.(string)
		if id == "" || id == n.id || seen[id] || isDueMember(id) {
			continue
		}
		seen[id] = true
		if at, ok := n.swept[id]; ok && at == int64(z.Score) {
			continue // already swept at this deadline
		}
		dead = append(dead, deadConsumer{id, int64(z.Score)})
	}
	return dead, seen
}

// forgetGone drops from the memo of swept consumers those not seen, when
// every dead consumer is in view: they are gone (trimmed, or alive again).
// While paging, the memo of pages out of view is kept; it is bounded by
// the set, which the trim bounds.
func (n *node) forgetGone(seen map[string]bool) {
	for id := range n.swept {
		if !seen[id] {
			delete(n.swept, id)
		}
	}
}

// sweepOne sweeps one dead consumer from every attached worker's queue,
// and remembers it as swept when all of them completed. It reports false
// when ctx ended.
func (n *node) sweepOne(ctx context.Context, ws []member, d deadConsumer) bool {
	complete := true
	for _, w := range ws {
		if ctx.Err() != nil {
			return false
		}
		if !w.sweep(ctx, n, d.id) {
			complete = false
		}
	}
	if complete {
		n.swept[d.id] = d.at
	}
	return true
}

// checkConsumers finds the dead among the queue's consumers when the
// worker starts: those with no heartbeat at all (trimmed long ago) or an
// expired one. It reports whether every one of them was swept completely.
func (w *Worker) checkConsumers(ctx context.Context, n *node) bool {
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
	proc := w.q.k.proc(consumer)
	token, elems, member, err := w.readDeadConsumer(ctx, proc, consumer)
	if err != nil {
		return w.sweepFailed(ctx, consumer, "reading a dead consumer's jobs", err)
	}
	if len(elems) == 0 && token == "" && !member {
		return true // swept already (by another process), nothing to forget
	}
	// After the token was read: a separate round trip (the heartbeat lives in
	// another Cluster slot).
	alive, err := w.aliveAgain(ctx, n, consumer, token)
	if err != nil {
		return w.sweepFailed(ctx, consumer, "checking a dead consumer's heartbeat", err)
	}
	if alive {
		return true // alive again: nothing to sweep
	}
	// Its limit slots first (limits.go): its jobs do not run any more.
	if err := w.releaseDead(ctx, consumer, token); err != nil {
		return w.sweepFailed(ctx, consumer, "giving back a dead consumer's limit slots", err)
	}
	if len(elems) > 0 {
		unlock, ok := w.lockSweep(ctx, n)
		if !ok {
			return false // another process is sweeping this queue: look again next heartbeat
		}
		defer unlock()
	}
	moved, restarted, err := w.sweepPairs(ctx, proc, consumer, token, redeliveries(elems))
	w.st.recovered.Add(uint64(moved))
	switch {
	case err != nil:
		return w.sweepFailed(ctx, consumer, "moving a dead consumer's jobs", err)
	case restarted:
		w.log.Info("queue: a dead consumer restarted during its sweep; its jobs stay with it", "dead_consumer", consumer, "requeued", moved)
	case moved > 0:
		w.log.Info("queue: recovered jobs of a dead consumer", "dead_consumer", consumer, "requeued", moved)
	}
	return true
}

// sweepFailed logs a failed step of a sweep, unless ctx ended, and
// returns false.
func (w *Worker) sweepFailed(ctx context.Context, consumer, what string, err error) bool {
	if ctx.Err() == nil {
		w.log.Warn("queue: sweep: "+what+" failed; the next heartbeat tries again", "dead_consumer", consumer, "err", err)
	}
	return false
}

// readDeadConsumer reads, in one round trip, a dead consumer's incarnation
// token ("" when none is recorded: an earlier version's consumer), its
// processing list proc, and whether it is in the queue's consumers set.
func (w *Worker) readDeadConsumer(ctx context.Context, proc, consumer string) (token string, elems []string, member bool, err error) {
	k := w.q.k
	pipe := w.q.p.Background().Pipeline()
	tokCmd := pipe.HGet(ctx, k.incarnations, consumer)
	listCmd := pipe.LRange(ctx, proc, 0, -1)
	memberCmd := pipe.SIsMember(ctx, k.consumers, consumer)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", nil, false, err
	}
	return tokCmd.Val(), listCmd.Val(), memberCmd.Val(), nil
}

// aliveAgain reports whether a consumer found dead has a heartbeat that has
// not expired and is not its previous life's (see previousLife). A consumer
// whose heartbeat was trimmed died long ago.
func (w *Worker) aliveAgain(ctx context.Context, n *node, consumer, token string) (bool, error) {
	pipe := w.q.p.Background().Pipeline()
	deadlineCmd := pipe.ZScore(ctx, n.hb, consumer)
	liveCmd := pipe.HGet(ctx, n.live, consumer)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	deadline, err := deadlineCmd.Result()
	return !errors.Is(err, redis.Nil) && int64(deadline) >= n.now().UnixMilli() && !previousLife(token, liveCmd.Val()), nil
}

// lockSweep takes the queue's sweep lock. It returns false when another
// process holds it (or Redis failed), and otherwise the unlock.
//
// The lock only saves duplicate work (every move is conditional), so it
// lasts as long as a heartbeat: a sweeper killed mid-sweep blocks the
// others no longer than its own death takes to be seen. (It used to be
// 30s, which stalled recovery when sweepers died.)
func (w *Worker) lockSweep(ctx context.Context, n *node) (unlock func(), ok bool) {
	c, key, lock := w.q.p.Background(), w.q.k.sweepLock, n.id
	ok, err := c.SetNX(ctx, key, lock, n.ttl).Result()
	if isOOM(err) { // Redis at maxmemory: sweeping frees memory (oom.go)
		ok, err = lockAtLimitScript.Run(ctx, c, []string{key}, lock, n.ttl.Milliseconds()).Bool()
	}
	if err != nil || !ok {
		return nil, false
	}
	return func() {
		// Unlocked even when the group began closing (by its deadline), or
		// the others wait HeartbeatTTL to sweep this queue.
		uctx := ctx
		if ctx.Err() != nil {
			uctx = lifecycle.CloseContext(ctx)
		}
		_ = unlockScript.Run(uctx, c, []string{key}, lock).Err()
	}, true
}

// redeliveries pairs each element of a dead consumer's processing list with
// what goes back to the ready list: the job with one more delivery. A
// marker goes back as it is; so does a malformed element, which the
// fetcher sends to the dead letters.
func redeliveries(elems []string) []any {
	pairs := make([]any, 0, 2*len(elems))
	for _, e := range elems {
		env, derr := decodeEnvelope([]byte(e))
		if e == wakeMarker || derr != nil {
			pairs = append(pairs, e, e)
			continue
		}
		next := env
		next.deliveries++
		pairs = append(pairs, e, next.encode())
	}
	return pairs
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
	ks := w.q.k.sweepKeys(proc)
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
