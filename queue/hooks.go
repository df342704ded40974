package queue

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Outcome is what an outcome hook (WorkerConfig.OnDone, OnRetry, OnDead)
// learns of one job's outcome, once Redis has it.
type Outcome struct {
	// Job is the run as the handler saw it, without its Payload (outcomes
	// wait for the acker in memory, and must not hold payloads there).
	Job Job
	// Err is the run's error: nil for OnDone; for OnDead of a job that did
	// not run (malformed, its payload missing, recovered more than
	// MaxDeliveries times) the reason as an error.
	Err error
	// Ran is how long the handler ran; 0 when it did not run.
	Ran time.Duration
	// RetryAt is when the next attempt is due (OnRetry).
	RetryAt time.Time
	// Reason is the dead letter's reason (OnDead).
	Reason string
}

// lastErrMax caps the error text kept for a job waiting to retry.
const lastErrMax = 1 << 10

// lastErrMargin is added to a retry's delay (and the job's timeout) for the
// TTL of its last error: long enough to be read while the job waits and
// runs again, short enough that nothing accumulates.
const lastErrMargin = time.Hour

// outcomeExtra is what an outcome carries beyond its write: the last error
// to keep or clear, and what its hook needs. Nil when there is neither.
type outcomeExtra struct {
	out      Outcome
	hook     func(Outcome) // nil: no hook for this kind
	lastErr  string        // ackRetry: the failed run's error text
	errTTL   time.Duration // ackRetry: its TTL
	clearErr bool          // ackDone, ackDead: the job failed before; delete its last error
}

// extend adds to op its last error and hook. d is the delivery, job and err
// the run (job nil when the job did not run), timeout the run's.
func (w *Worker) extend(op *ackOp, d delivery, job *Job, err error, ran, timeout time.Duration) {
	x := outcomeExtra{clearErr: d.err == nil && d.env.attempt > 0 && op.kind != ackRetry}
	switch op.kind {
	case ackDone:
		x.hook = w.cfg.OnDone
	case ackRetry:
		x.hook = w.cfg.OnRetry
		if err != nil {
			x.lastErr = truncate(err.Error(), lastErrMax)
			x.errTTL = max(op.due.Sub(w.q.cfg.Now()), 0) + max(timeout, 0) + lastErrMargin
		}
	case ackDead:
		x.hook = w.cfg.OnDead
	}
	if x.hook == nil && x.lastErr == "" && !x.clearErr {
		return
	}
	if x.hook != nil {
		if job != nil {
			x.out.Job = *job
		} else if d.err == nil {
			x.out.Job = Job{ID: d.env.id, Queue: w.q.name, Namespace: w.q.cfg.Namespace, Type: d.env.typ, Attempt: d.env.attempt, MaxAttempts: d.env.maxAttempts, Deliveries: d.env.deliveries, EnqueuedAt: d.env.enqueuedAt}
		} else {
			x.out.Job = Job{ID: op.deadID, Queue: w.q.name, Namespace: w.q.cfg.Namespace}
		}
		x.out.Job.Payload = nil
		x.out.Err, x.out.Ran, x.out.Reason = err, ran, op.reason
		if op.kind == ackRetry {
			x.out.RetryAt = op.due
		}
		if op.kind == ackDead && err == nil {
			x.out.Err = errors.New(op.reason)
		}
	}
	op.x = &x
}

// queueLastErr adds to pipe, before the outcome's own write, the write of
// its last error: SET with a TTL for a retry (the failed run's error, which
// Queue.Get reports while the job waits), DEL for a success or a dead
// letter of a job that failed before. Same pipeline, no round trip of its
// own; its failure is not retried (the text is informative only). It
// returns the command added, if any.
func (w *Worker) queueLastErr(ctx context.Context, pipe redis.Pipeliner, op *ackOp) redis.Cmder {
	if op.x == nil || op.id == "" {
		return nil
	}
	switch {
	case op.x.lastErr != "":
		return pipe.Set(ctx, w.q.k.lastErr(op.id), op.x.lastErr, op.x.errTTL)
	case op.x.clearErr:
		return pipe.Del(ctx, w.q.k.lastErr(op.id))
	}
	return nil
}

// callHook calls the outcome's hook, on the acker's goroutine, once Redis
// wrote the outcome. A panic is recovered, logged and counted
// (WorkerStats.HookPanics). A slow hook delays the acker's next pipeline:
// hooks must be quick (see WorkerConfig.OnDone).
func (w *Worker) callHook(op ackOp) {
	if op.x == nil || op.x.hook == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			w.hookPanics.Add(1)
			w.log.Error("queue: an outcome hook panicked; ignored", "job", op.id, "panic", v, "stack", string(shortStack()))
		}
	}()
	op.x.hook(op.x.out)
}

// reconciledDead completes a dead-lettering that reconcile wrote itself (a
// job a previous life of the consumer held once too often), as the acker
// completes its own: its waiters are woken, its last error goes, and
// OnDead is called. The hook runs on the fetcher's goroutine, which
// reconciles its previous life's list before its first fetch (unless that
// reconcile failed and is retried later), so normally no outcome of this
// worker is acked meanwhile.
func (w *Worker) reconciledDead(ctx context.Context, elem string, env envelope, reason string) {
	c := w.q.p.Background()
	// The producers waiting for it (Queue.Wait), as wakeWaitersOfDead has
	// the acker wake them for a job the fetcher dead-letters.
	w.wakeWaiters(ctx, c, env.id)
	op := ackOp{kind: ackDead, elem: elem, id: env.id, unique: env.unique, reason: reason, attempts: env.attempt, deadID: env.id}
	w.extend(&op, delivery{elem: elem, env: env}, nil, nil, 0, 0)
	if op.x == nil {
		return
	}
	if op.x.clearErr {
		if err := c.Del(ctx, w.q.k.lastErr(env.id)).Err(); err != nil {
			w.log.Debug("queue: deleting a dead job's last error failed; it expires", "job", env.id, "err", err)
		}
	}
	w.callHook(op)
}

// reconciledCancelled completes the drop of a job of a previous life that
// deadScript found cancelled (see droppedCancelled): its waiters are woken
// and its last error goes, without OnDead.
func (w *Worker) reconciledCancelled(ctx context.Context, env envelope) {
	c := w.q.p.Background()
	w.ctl.cancelled.Add(1)
	w.wakeWaiters(ctx, c, env.id)
	if env.attempt > 0 {
		if err := c.Del(ctx, w.q.k.lastErr(env.id)).Err(); err != nil {
			w.log.Debug("queue: deleting a cancelled job's last error failed; it expires", "job", env.id, "err", err)
		}
	}
}
