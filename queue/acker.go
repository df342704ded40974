package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

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
	window   int64     // ackDone: UniqueFor's window, ms (0: none)
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

	// What a resend leaves out, because a pipeline wrote it already:
	// besideSent, the writes that go before the outcome's own (its last
	// error, progress and result: plain SETs and DELs, which went through
	// though the outcome's script was refused, say with NOSCRIPT);
	// written, the outcome itself with its wake-up of waiters, when only
	// the release of its slot of a concurrency limit failed (limits.go).
	// Every write of an outcome happens once: a resend is not a replay.
	besideSent bool
	written    bool

	x     *outcomeExtra // its last error and hook, if any (hooks.go)
	extra *ackExtra     // result, progress, wake-up of waiters (result.go)
}

// maxAckBatch bounds one pipeline of outcomes.
const maxAckBatch = 256

// ackLoop is the acker: every outcome of every handler goes through it, and
// it writes them in pipelines of whatever has accumulated while the previous
// one was in flight (at most maxAckBatch), so under load a round trip
// carries many acks and a job costs well under one round trip to ack. It is
// also the last task of the worker to stop: it drains the outcomes, puts
// back what was not finished, and leaves the heartbeat (drain.go).
func (w *Worker) ackLoop(ctx context.Context) error {
	a := &acker{w: w, ctx: ctx, opCtx: context.WithoutCancel(ctx), stopping: w.stopping}
	for {
		if a.waiting() {
			if a.wait() {
				break
			}
			if a.waiting() {
				continue
			}
		}
		a.collect()
		if !a.write() {
			break
		}
	}
	return a.drain()
}

// acker is the state of ackLoop.
type acker struct {
	w       *Worker
	ctx     context.Context // the task's
	opCtx   context.Context // for writes: never cancelled, then the Close context once draining
	pending []ackOp
	bo      troubleBackoff
	retry   <-chan time.Time // set while backing off after a failed write

	// Draining.
	stopping           <-chan struct{} // the fetcher stopped; nil once seen
	cancelAt, giveUpAt <-chan time.Time
	closeDone          <-chan struct{} // the Close context's Done, once draining
}

// waiting reports whether there is nothing to write now: no outcome, or a
// backoff under way.
func (a *acker) waiting() bool { return len(a.pending) == 0 || a.retry != nil }

// wait waits for the next event: an outcome, the end of a backoff, or a
// step of the drain. It reports whether the acker is done waiting for
// outcomes.
func (a *acker) wait() (done bool) {
	w := a.w
	var acks <-chan ackOp
	if len(a.pending) < maxAckBatch {
		acks = w.acks
	}
	select {
	case op := <-acks:
		a.pending = append(a.pending, op)
	case <-a.retry:
		a.retry = nil
	case <-a.stopping:
		// The fetcher stopped: from now on work to the Close deadline.
		a.beginDrain()
		a.cancelAt, a.giveUpAt = w.drainTimers(a.opCtx)
		a.closeDone = a.opCtx.Done()
	case <-a.cancelAt:
		a.cancelAt = nil
		w.log.Warn("queue: close deadline near; cancelling running handlers")
		w.hardCancel()
	case <-a.giveUpAt:
		w.log.Error("queue: handlers did not return in time; their jobs go back to the ready list and may run twice")
		return true
	case <-a.closeDone:
		// Cancelled, or a deadline already past: there is no time left to
		// wait for anything.
		w.log.Warn("queue: close context done; cancelling running handlers now")
		return true
	case <-w.handlersDone:
		// Handlers only return once the worker drains. If this case won the
		// race with stopping, the rest still works to the Close deadline,
		// not without one.
		if a.stopping != nil {
			a.beginDrain()
		}
		return true
	}
	return false
}

// beginDrain makes the writes work to the Close deadline.
func (a *acker) beginDrain() {
	a.stopping = nil
	a.opCtx = lifecycle.CloseContext(a.ctx)
}

// collect takes whatever else is ready, up to maxAckBatch: that is the
// batching.
func (a *acker) collect() {
	for len(a.pending) < maxAckBatch {
		select {
		case op := <-a.w.acks:
			a.pending = append(a.pending, op)
		default:
			return
		}
	}
}

// write writes the pending outcomes, keeping those that failed for a
// retry after a backoff. It reports false when writes must stop: some
// failed and the Close context has ended.
func (a *acker) write() bool {
	failed := a.w.flush(a.opCtx, a.pending)
	a.pending = append(a.pending[:0], failed...)
	if len(failed) == 0 {
		a.bo.reset()
		return true
	}
	if a.opCtx.Err() != nil {
		return false
	}
	a.retry = time.After(a.bo.next())
	return true
}

// flush writes outcomes in one pipeline and returns those to try again.
// Outcomes refused with NOSCRIPT (a Redis that has not seen the scripts
// yet, or lost them in a restart) are sent again at once after loading the
// scripts, so that a drain's single last flush does not put finished jobs
// back just because the script cache was cold.
func (w *Worker) flush(ctx context.Context, ops []ackOp) []ackOp {
	failed, noScript := w.flushOnce(ctx, ops)
	defer w.tailPublish(ctx) // tail.go: nothing unless the queue is followed
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
	pipe := c.Pipeline()
	cmds := make([]redis.Cmder, len(ops))
	var beside []redis.Cmder // the writes before the outcomes', op i's from besideAt[i]
	besideAt := make([]int, len(ops)+1)
	var extras ctlExtras
	for i := range ops {
		op := &ops[i]
		besideAt[i] = len(beside)
		if op.written {
			continue // only its release is left (queueRelease)
		}
		if !op.besideSent {
			if cmd := w.queueLastErr(ctx, pipe, op); cmd != nil {
				beside = append(beside, cmd)
			}
			beside = extras.before(ctx, w, pipe, op, beside)
		}
		cmds[i] = w.queueOutcome(ctx, pipe, op)
		extras.after(ctx, w, pipe, op)
	}
	besideAt[len(ops)] = len(beside)
	rels := w.queueRelease(ctx, pipe, ops) // limits.go: none without a concurrency limit
	gone := goneJobs(ops)
	drained := w.q.drainHook(ctx, pipe, gone)
	_, _ = pipe.Exec(ctx)
	w.q.drainDone(ctx, c, drained, gone)
	extras.done(ctx, w, c)
	relErr := releaseFailed(rels)
	for i, op := range ops {
		if op.written {
			// A release alone, sent again: giving back a slot already
			// given back frees nothing, so it may be sent any number of
			// times.
			switch {
			case relErr == nil:
			case redis.HasErrorPrefix(relErr, "NOSCRIPT"):
				noScript = append(noScript, op)
			default:
				failed = append(failed, w.releaseOnlyFailed(op, relErr))
			}
			continue
		}
		op.besideSent = op.besideSent || cmdsOK(beside[besideAt[i]:besideAt[i+1]])
		err := cmds[i].Err()
		if err == nil && relErr != nil && holdsSlot(op) {
			// The outcome is written and its slot maybe not given back:
			// the outcome counts as written now (its hook, its counts),
			// and only the release is sent again, never the outcome's
			// writes (a result, a retry, a dead letter, a wake-up).
			w.written(op, cmdInt(cmds[i]))
			op.written = true
			if redis.HasErrorPrefix(relErr, "NOSCRIPT") {
				noScript = append(noScript, op)
			} else {
				failed = append(failed, w.releaseOnlyFailed(op, relErr))
			}
			continue
		}
		switch {
		case err == nil:
			w.written(op, cmdInt(cmds[i]))
		case redis.HasErrorPrefix(err, "NOSCRIPT"):
			noScript = append(noScript, op)
		default:
			failed = append(failed, w.writeFailed(op, err))
		}
	}
	return failed, noScript
}

// cmdsOK reports whether every command of cmds succeeded.
func cmdsOK(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if c.Err() != nil {
			return false
		}
	}
	return true
}

// queueOutcome adds the write of one outcome to pipe. A dead-lettering
// keeps the keys and arguments of its record in op, so that a resend
// writes the same record.
func (w *Worker) queueOutcome(ctx context.Context, pipe redis.Pipeliner, op *ackOp) redis.Cmder {
	k := w.q.k
	switch op.kind {
	case ackDone, ackDrop:
		if !op.unique && op.ref == "" {
			return pipe.LRem(ctx, w.proc, 1, op.elem)
		}
		ks := []string{w.proc, k.payloads}
		if op.unique {
			ks = append(ks, k.unique(op.id))
		}
		return ackScript.EvalSha(ctx, pipe, ks, op.elem, op.ref, op.window)
	case ackRetry:
		return retryScript.EvalSha(ctx, pipe,
			[]string{w.proc, k.delayed, k.ready, k.wake, k.bell, k.partLen()},
			op.elem, op.next, op.due.UnixMilli(), wakeMarker, wakeTTL.Milliseconds(), boolArg(op.resent))
	case ackDead:
		if op.deadKeys == nil {
			op.deadKeys, op.deadArgs = w.q.deadMoveArgs(w.proc, []byte(op.elem), deadLetter{id: op.deadID, reason: w.deadReason(op.reason), attempts: op.attempts, unique: op.unique})
		}
		op.deadArgs[deadArgResent] = boolArg(op.resent)
		return deadScript.EvalSha(ctx, pipe, op.deadKeys, op.deadArgs...)
	}
	return nil
}

// writeFailed records an outcome whose write failed, and returns it to be
// tried again.
func (w *Worker) writeFailed(op ackOp, err error) ackOp {
	var reply redis.Error
	if !errors.As(err, &reply) {
		// No reply: Redis may have run it.
		op.resent = true
	}
	w.st.ackErrors.Add(1)
	w.log.Warn("queue: writing an outcome failed; will retry", "job", op.id, "err", err)
	return op
}

// releaseOnlyFailed records the failed release of the slot of an outcome
// that is written, and returns it to be tried again (the release alone).
func (w *Worker) releaseOnlyFailed(op ackOp, err error) ackOp {
	w.st.ackErrors.Add(1)
	w.log.Warn("queue: giving back a concurrency limit slot failed; will retry", "job", op.id, "err", err)
	return op
}

// written records an outcome Redis wrote; n is the reply of its write (0:
// the job was not in the processing list).
func (w *Worker) written(op ackOp, n int64) {
	if op.kind == ackDead && n == deadDroppedCancelled {
		w.droppedCancelled(op)
		return
	}
	if n == 0 && op.kind != ackDrop && !op.resent {
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
		w.untrack(op.elem)
		w.callHook(op)    // after the write, and only once it is ours (hooks.go)
		w.tailWritten(op) // tail.go
		return
	}
	w.untrack(op.elem)
}

// droppedCancelled records a job deadScript dropped instead of sending it
// to the dead letters: its run was cancelled while it held the job (the
// message came too late for the handler, or never: a consumer without
// Control). It ends as a cancelled run does (Worker.run): counted as
// cancelled, no OnDead, its waiters woken by its wake-up (ackExtra).
func (w *Worker) droppedCancelled(op ackOp) {
	w.log.Debug("queue: job cancelled while it ran; dropped, not dead-lettered", "job", op.id)
	w.ctl.cancelled.Add(1)
	w.untrack(op.elem)
	op.kind = ackDone // as a cancelled run's drop is (cancelledOutcome)
	w.tailWritten(op)
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
			ks, args := w.q.deadMoveArgs(w.proc, []byte(e), deadLetter{id: env.id, reason: reason, attempts: env.attempt, unique: env.unique})
			if n, err := deadScript.Run(ctx, c, ks, args...).Int(); err != nil {
				errs = append(errs, err)
			} else if n == 1 {
				w.st.dead.Add(1)
				w.log.Warn("queue: job sent to the dead letters", "job", env.id, "reason", reason)
				w.reconciledDead(ctx, e, env, reason) // hooks.go: OnDead, the last error, Queue.Wait
			} else if n == deadDroppedCancelled {
				w.reconciledCancelled(ctx, env) // hooks.go: the last error, Queue.Wait
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
	if err := w.releaseStale(ctx, previousLife); err != nil { // limits.go
		w.needReconcile.Store(true)
		w.log.Warn("queue: reconcile: giving back limit slots failed", "err", err)
		return false
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
		got, err := recoverScript.Run(ctx, w.q.p.Background(), w.q.k.recoverKeys(proc), pairs[:n]...).Int()
		if err != nil {
			return total, err
		}
		total += got
		pairs = pairs[n:]
	}
	return total, nil
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
