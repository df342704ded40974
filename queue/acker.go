package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/backoff"
	"github.com/bounded-go/bounded/lifecycle"
)

type ackKind uint8

const (
	ackDone  ackKind = iota // the job succeeded: take it off the processing list
	ackRetry                // schedule the next attempt
	ackDead                 // move to the dead letters
	ackDrop                 // a wake marker: take it off the processing list
)

// ackOp is the outcome of one element, on its way to Redis.
type ackOp struct {
	kind     ackKind
	elem     string
	id       string
	unique   bool
	ref      string    // the payload kept apart, if any
	next     []byte    // ackRetry: the envelope of the next attempt
	due      time.Time // ackRetry
	reason   string    // ackDead
	attempts int       // ackDead
	deadID   string    // ackDead

	// resent: an earlier write of this outcome failed in a way that does
	// not say whether Redis ran it (a reply lost to a broken connection),
	// so "the job is not there" may mean that write succeeded.
	resent   bool
	deadKeys []string // ackDead: built once, so a resend writes the same record
	deadArgs []any
}

// maxAckBatch bounds one pipeline of outcomes.
const maxAckBatch = 256

// ackLoop is the acker: every outcome of every handler goes through it, and
// it writes them in pipelines of whatever has accumulated while the previous
// one was in flight (at most maxAckBatch), so under load a round trip
// carries many acks and a job costs well under one round trip to ack. It is
// also the last task of the worker to stop: it drains the outcomes, puts
// back what was not finished, and leaves the heartbeat.
func (w *Worker) ackLoop(ctx context.Context) error {
	opCtx := context.WithoutCancel(ctx)
	var pending []ackOp
	var bo troubleBackoff
	var retry <-chan time.Time // set while backing off after a failed flush
	stopping := w.stopping
	var cancelAt, giveUpAt <-chan time.Time
	var closeDone <-chan struct{} // the Close context's Done, once draining
	for done := false; !done; {
		if len(pending) == 0 || retry != nil {
			var acks <-chan ackOp
			if len(pending) < maxAckBatch {
				acks = w.acks
			}
			select {
			case op := <-acks:
				pending = append(pending, op)
			case <-retry:
				retry = nil
			case <-stopping:
				// The fetcher stopped: from now on work to the Close deadline.
				stopping = nil
				opCtx = lifecycle.CloseContext(ctx)
				cancelAt, giveUpAt = w.drainTimers(opCtx)
				closeDone = opCtx.Done()
			case <-cancelAt:
				cancelAt = nil
				w.log.Warn("queue: close deadline near; cancelling running handlers")
				w.hardCancel()
			case <-giveUpAt:
				w.log.Error("queue: handlers did not return in time; their jobs go back to the ready list and may run twice")
				done = true
			case <-closeDone:
				// Cancelled, or a deadline already past: there is no time
				// left to wait for anything.
				w.log.Warn("queue: close context done; cancelling running handlers now")
				done = true
			case <-w.handlersDone:
				// Handlers only return once the worker drains. If this case
				// won the race with stopping, the rest still works to the
				// Close deadline, not without one.
				if stopping != nil {
					stopping = nil
					opCtx = lifecycle.CloseContext(ctx)
				}
				done = true
			}
			if done || retry != nil || len(pending) == 0 {
				continue
			}
		}
		// Take whatever else is ready: that is the batching.
	collect:
		for len(pending) < maxAckBatch {
			select {
			case op := <-w.acks:
				pending = append(pending, op)
			default:
				break collect
			}
		}
		failed := w.flush(opCtx, pending)
		pending = append(pending[:0], failed...)
		if len(failed) == 0 {
			bo.reset()
			continue
		}
		if opCtx.Err() != nil {
			break
		}
		retry = time.After(bo.next())
	}
	// However the wait ended, every handler still running is cancelled
	// before the acker writes its last outcomes: none is left running with
	// a live context once its job has been given up.
	w.hardCancel()
	// Drain: whatever outcomes arrived, then put back the rest.
drain:
	for {
		select {
		case op := <-w.acks:
			pending = append(pending, op)
		default:
			break drain
		}
	}
	if len(pending) > 0 {
		if failed := w.flush(opCtx, pending); len(failed) > 0 {
			w.log.Error("queue: could not write outcomes before the deadline; those jobs go back to the ready list", "count", len(failed))
		}
	}
	// The scheduler hands its knowledge of delayed jobs over before the
	// consumer leaves: if it cannot, the heartbeat must be left to expire.
	select {
	case <-w.schedGone:
	case <-opCtx.Done():
	}
	err := w.finish(opCtx)
	close(w.ackerGone)
	return err
}

// drainTimers returns when to cancel running handlers and when to give up
// waiting for them, given the Close deadline: the last fifth of the time
// left (at most 2s) is for cancelled handlers to return, and the last tenth
// (at most 1s) for putting jobs back. Without a deadline the worker waits
// for its handlers however long they take.
func (w *Worker) drainTimers(closeCtx context.Context) (cancelAt, giveUpAt <-chan time.Time) {
	dl, ok := closeCtx.Deadline()
	if !ok {
		return nil, nil
	}
	left := time.Until(dl)
	cancelAt = time.After(max(left-min(left/5, 2*time.Second), 0))
	giveUpAt = time.After(max(left-min(left/10, time.Second), 0))
	return cancelAt, giveUpAt
}

// flush writes outcomes in one pipeline and returns those to try again.
// Outcomes refused with NOSCRIPT (a Redis that has not seen the scripts
// yet, or lost them in a restart) are sent again at once after loading the
// scripts, so that a drain's single last flush does not put finished jobs
// back just because the script cache was cold.
func (w *Worker) flush(ctx context.Context, ops []ackOp) []ackOp {
	failed, noScript := w.flushOnce(ctx, ops)
	if len(noScript) == 0 {
		return failed
	}
	if err := loadScripts(ctx, w.q.p.Background()); err != nil {
		w.log.Warn("queue: loading scripts failed", "err", err)
		return append(failed, noScript...)
	}
	again, still := w.flushOnce(ctx, noScript)
	return append(append(failed, again...), still...)
}

// flushOnce is one pipeline of outcomes. It returns those that failed, and
// apart those refused with NOSCRIPT.
func (w *Worker) flushOnce(ctx context.Context, ops []ackOp) (failed, noScript []ackOp) {
	c := w.q.p.Background()
	k := w.q.k
	pipe := c.Pipeline()
	cmds := make([]redis.Cmder, len(ops))
	for i, op := range ops {
		switch op.kind {
		case ackDone, ackDrop:
			if op.unique || op.ref != "" {
				ks := []string{w.proc, k.payloads}
				if op.unique {
					ks = append(ks, k.unique(op.id))
				}
				cmds[i] = ackScript.EvalSha(ctx, pipe, ks, op.elem, op.ref)
			} else {
				cmds[i] = pipe.LRem(ctx, w.proc, 1, op.elem)
			}
		case ackRetry:
			cmds[i] = retryScript.EvalSha(ctx, pipe,
				[]string{w.proc, k.delayed, k.ready, k.wake},
				op.elem, op.next, op.due.UnixMilli(), wakeMarker, wakeTTL.Milliseconds(), boolArg(op.resent))
		case ackDead:
			if op.deadKeys == nil {
				op.deadKeys, op.deadArgs = w.q.deadArgs(w.proc, []byte(op.elem), op.deadID, op.reason, op.attempts, op.unique, nil)
				ops[i] = op
			}
			op.deadArgs[len(op.deadArgs)-1] = boolArg(op.resent)
			cmds[i] = deadScript.EvalSha(ctx, pipe, op.deadKeys, op.deadArgs...)
		}
	}
	_, _ = pipe.Exec(ctx)
	for i, op := range ops {
		err := cmds[i].Err()
		if err != nil {
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				noScript = append(noScript, op)
				continue
			}
			var reply redis.Error
			if !errors.As(err, &reply) {
				// No reply: Redis may have run it.
				op.resent = true
			}
			w.st.ackErrors.Add(1)
			w.log.Warn("queue: writing an outcome failed; will retry", "job", op.id, "err", err)
			failed = append(failed, op)
			continue
		}
		if n := cmdInt(cmds[i]); n == 0 && op.kind != ackDrop && !op.resent {
			// The job was no longer ours: a sweep gave it to another
			// consumer, which may run it again.
			w.st.lostLeases.Add(1)
		} else {
			// An outcome resent after a lost reply that finds its job gone
			// was most likely written by the first send (the scripts confirm
			// it, answering 2, while the dead record or the delayed next
			// attempt is still there); a sweep taking the job in between
			// is far less likely, and cannot be told apart, so it counts as
			// written, not as a lost lease.
			if n == 0 {
				w.log.Info("queue: an outcome resent after a lost reply found its job gone; counted as written", "job", op.id)
			}
			switch op.kind {
			case ackRetry:
				w.st.retried.Add(1)
				w.sched.wakeFor(op.due)
			case ackDead:
				w.st.dead.Add(1)
			}
		}
		w.untrack(op.elem)
	}
	return failed, noScript
}

func loadScripts(ctx context.Context, c redis.Scripter) error {
	var errs []error
	for _, s := range allScripts {
		if err := s.Load(ctx, c).Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reconcile compares the processing list with what this worker holds, and
// puts back elements it does not know: a BLMOVE that failed on our side can
// still have moved one on the server, and a stable consumer ID may find
// jobs of its previous life. It runs on the fetcher's goroutine, so no fetch
// races it.
//
// With previousLife (the reconcile at start), the elements are jobs a
// previous process with this ConsumerID died holding: as a sweep does for
// a dead consumer, each goes back with one more delivery, or to the dead
// letters past MaxDeliveries. No other process sweeps them (the consumer
// is alive again), so otherwise a job that crashes its process would
// crash-loop a pod restarting under a stable ID forever. It reports
// whether the reconcile completed.
func (w *Worker) reconcile(ctx context.Context, previousLife bool) bool {
	c := w.q.p.Background()
	elems, err := c.LRange(ctx, w.proc, 0, -1).Result()
	if err != nil {
		w.log.Warn("queue: reconcile: reading the processing list failed", "err", err)
		return false
	}
	w.needReconcile.Store(false)
	var pairs []any
	var errs []error
	for _, e := range elems {
		if w.tracked(e) {
			continue
		}
		env, derr := decodeEnvelope([]byte(e))
		switch {
		case !previousLife || e == wakeMarker || derr != nil:
			pairs = append(pairs, e, e)
		case env.deliveries+1 > w.cfg.MaxDeliveries:
			reason := fmt.Sprintf("recovered from dead consumers %d times (WorkerConfig.MaxDeliveries %d): the job may be killing its consumers", env.deliveries+1, w.cfg.MaxDeliveries)
			ks, args := w.q.deadArgs(w.proc, []byte(e), env.id, reason, env.attempt, env.unique, []byte(e))
			if n, err := deadScript.Run(ctx, c, ks, args...).Int(); err != nil {
				errs = append(errs, err)
			} else if n == 1 {
				w.st.dead.Add(1)
				w.log.Warn("queue: job sent to the dead letters", "job", env.id, "reason", reason)
			}
		default:
			next := env
			next.deliveries++
			pairs = append(pairs, e, next.encode())
		}
	}
	n := 0
	if len(pairs) > 0 {
		n, err = w.recoverPairs(ctx, w.proc, pairs)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		w.needReconcile.Store(true)
		w.log.Warn("queue: reconcile: putting back elements failed", "err", err)
		return false
	}
	if n > 0 {
		w.log.Info("queue: reconcile put back elements this worker did not hold", "count", n)
	}
	return true
}

// recoverPairs runs recoverScript in chunks of at most 500 pairs and about
// maxLuaBytes (at least one pair).
func (w *Worker) recoverPairs(ctx context.Context, proc string, pairs []any) (int, error) {
	const chunk = 2 * 500
	total := 0
	for len(pairs) > 0 {
		n, bytes := 0, 0
		for n < min(len(pairs), chunk) && (n == 0 || bytes < maxLuaBytes) {
			bytes += argLen(pairs[n]) + argLen(pairs[n+1])
			n += 2
		}
		got, err := recoverScript.Run(ctx, w.q.p.Background(), []string{proc, w.q.k.ready}, pairs[:n]...).Int()
		if err != nil {
			return total, err
		}
		total += got
		pairs = pairs[n:]
	}
	return total, nil
}

// finish ends a drained worker: everything left in its processing list goes
// back to the head of the ready list, and the consumer leaves the queue's
// consumers and the heartbeat. Against a failing Redis it tries again, with
// backoff, until ctx (the Close deadline) ends. If it never succeeds, the
// heartbeat is left to expire, so other processes see this consumer die
// and sweep its list: the jobs are late, not lost.
func (w *Worker) finish(ctx context.Context) error {
	defer w.q.removeWorker(w)
	defer w.node.detach(w)
	// Stop retrying a little before the deadline: the worker's tasks and
	// the heartbeat must still return by it.
	var stopAt time.Time
	if dl, ok := ctx.Deadline(); ok {
		stopAt = dl.Add(-min(time.Until(dl)/4, 200*time.Millisecond))
	}
	var bo troubleBackoff
	for {
		err := w.putBack(ctx)
		if err == nil {
			w.mu.Lock()
			clear(w.inflight)
			w.mu.Unlock()
			return nil
		}
		wait := bo.next()
		if ctx.Err() != nil || (!stopAt.IsZero() && time.Now().Add(wait).After(stopAt)) || !backoff.Sleep(ctx, wait) {
			w.node.keepHeartbeat()
			w.log.Error("queue: drain: could not put unfinished jobs back; they stay in the processing list until another process sees this consumer's heartbeat expire and sweeps it", "err", err)
			return w.q.errorf("drain: putting unfinished jobs back: %w", err)
		}
		w.log.Warn("queue: drain: putting unfinished jobs back failed; retrying", "err", err)
	}
}

// putBack moves the processing list to the head of the ready list and
// leaves the queue's consumers set.
func (w *Worker) putBack(ctx context.Context) error {
	c := w.q.p.Background()
	elems, err := c.LRange(ctx, w.proc, 0, -1).Result()
	if err != nil {
		return fmt.Errorf("reading the processing list: %w", err)
	}
	if len(elems) > 0 {
		// Oldest (rightmost) last, so it ends up first in line.
		pairs := make([]any, 0, 2*len(elems))
		for _, e := range elems {
			pairs = append(pairs, e, e)
		}
		n, err := w.recoverPairs(ctx, w.proc, pairs)
		if n > 0 {
			w.log.Info("queue: drain put unfinished jobs back", "count", n)
		}
		if err != nil {
			return fmt.Errorf("moving jobs to the ready list: %w", err)
		}
	}
	pipe := c.Pipeline()
	pipe.SRem(ctx, w.q.k.consumers, w.c.ID())
	pipe.HDel(ctx, w.q.k.incarnations, w.c.ID())
	if _, err := pipe.Exec(ctx); err != nil {
		// Harmless: the next worker's check finds an empty list.
		w.log.Warn("queue: drain: leaving the consumers set failed", "err", err)
	}
	return nil
}

func argLen(a any) int {
	switch x := a.(type) {
	case string:
		return len(x)
	case []byte:
		return len(x)
	}
	return 0
}

// cmdInt reads the integer reply of a pipelined LREM or script call.
func cmdInt(c redis.Cmder) int64 {
	switch x := c.(type) {
	case *redis.IntCmd:
		return x.Val()
	case *redis.Cmd:
		n, _ := x.Int64()
		return n
	}
	return 0
}
