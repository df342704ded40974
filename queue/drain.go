package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/bounded-go/bounded/internal/backoff"
)

// drain is the end of the acker, once it no longer waits for outcomes:
// every handler still running is cancelled, the last outcomes are written,
// and finish puts back what was not finished and leaves the heartbeat.
func (a *acker) drain() error {
	w := a.w
	// However the wait ended, every handler still running is cancelled
	// before the acker writes its last outcomes: none is left running with
	// a live context once its job has been given up.
	w.hardCancel()
	a.takeAll()
	if len(a.pending) > 0 {
		if failed := w.flush(a.opCtx, a.pending); len(failed) > 0 {
			jobs := 0
			for _, op := range failed {
				if !op.written { // else only its slot's release failed: finish gives every slot back
					jobs++
				}
			}
			if jobs > 0 {
				w.log.Error("queue: could not write outcomes before the deadline; those jobs go back to the ready list", "count", jobs)
			}
		}
	}
	// The scheduler hands its knowledge of delayed jobs over before the
	// consumer leaves: if it cannot, the heartbeat must be left to expire.
	select {
	case <-w.schedGone:
	case <-a.opCtx.Done():
	}
	err := w.finish(a.opCtx)
	close(w.ackerGone)
	return err
}

// takeAll takes every outcome that arrived, however many.
func (a *acker) takeAll() {
	for {
		select {
		case op := <-a.w.acks:
			a.pending = append(a.pending, op)
		default:
			return
		}
	}
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
	if err := w.releaseMine(ctx); err != nil { // limits.go
		return fmt.Errorf("giving back the queue's limit slots: %w", err)
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
