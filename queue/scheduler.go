package queue

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/bounded-go/bounded/lifecycle"
)

// promoteLimit bounds the jobs one promote call moves.
const promoteLimit = 1000

// scheduler moves a queue's delayed and retrying jobs to the ready list at
// their due time. It sleeps on one timer until the exact next due time (no
// polling) and is woken early by:
//   - an Enqueue with a delay in this process (Queue.notifyDelayed);
//   - a retry scheduled by this worker's acker;
//   - a wake marker the fetcher found on the ready list: another process
//     enqueued a job that became the earliest one, or a scheduler that knew
//     of delayed jobs stopped and handed its knowledge over;
//   - the heartbeat, when the queue's due announcement has passed (due.go):
//     the earliest job may have been announced by a wake marker to a
//     process that died since;
//   - the heartbeat, when it finds a dead consumer: that process may have
//     been the only one that knew the earliest due time.
//
// While it waits it sends nothing to Redis, whether delayed jobs exist or
// not: an idle queue with delayed jobs (or schedules) costs what an idle
// queue without them costs.
type scheduler struct {
	w      *Worker
	wakeCh chan struct{}
	clear  atomic.Bool  // the wake flag in Redis must be cleared on the next promote
	next   atomic.Int64 // unix ms the loop sleeps until; MaxInt64 when nothing is due
	// known: the last read found delayed jobs (or failed, so there may be
	// some). Only then does a stopping scheduler hand over.
	known atomic.Bool
	reads atomic.Uint64 // reads completed, for tests
	// fromDue: the queue's due announcement passed (due.go); announced:
	// the due time this scheduler announced last.
	fromDue   atomic.Bool
	announced atomic.Int64
}

func newScheduler(w *Worker) *scheduler {
	s := &scheduler{w: w, wakeCh: make(chan struct{}, 1)}
	s.next.Store(math.MaxInt64)
	s.announced.Store(math.MinInt64)
	return s
}

// wake makes the loop re-read the delayed set now.
func (s *scheduler) wake(clearFlag bool) {
	if clearFlag {
		s.clear.Store(true)
	}
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

// handOver runs when the scheduler stops: if it knew of delayed jobs (or
// took a wake marker it did not act on yet), it pushes a wake marker, so
// that another live worker of the queue learns the next due time at once
// instead of waiting for a later enqueue; not when the delayed set is
// empty by then (nothing to learn: the marker stayed for good when this
// was the queue's last worker). If that fails, the process leaves
// its heartbeat to expire: the others re-read when they see it dead.
func (s *scheduler) handOver(ctx context.Context) {
	if !s.known.Load() && !s.clear.Load() {
		return
	}
	w := s.w
	closeCtx := lifecycle.CloseContext(ctx)
	// The marker and the doorbell's ring in one script, only while delayed
	// jobs are left to hand over.
	ks := []string{w.q.k.ready, w.q.k.bell, w.q.k.delayed}
	err := handOverScript.Run(closeCtx, w.q.p.Background(), ks, wakeMarker).Err()
	if isOOM(err) {
		err = handOverAtLimitScript.Run(closeCtx, w.q.p.Background(), ks, wakeMarker).Err()
	}
	if err != nil {
		w.node.keepHeartbeat()
		w.log.Warn("queue: handing the delayed jobs over to other workers failed; they take over when this process's heartbeat expires", "err", err)
	}
}

// wakeFor wakes the loop if due is earlier than the time it sleeps until.
func (s *scheduler) wakeFor(due time.Time) {
	if due.UnixMilli() < s.next.Load() {
		s.wake(false)
	}
}

// loop is the scheduler: it promotes the delayed jobs that are due, then
// sleeps until the next due time or a wake.
func (s *scheduler) loop(ctx context.Context) error {
	defer close(s.w.schedGone)
	defer s.handOver(ctx)
	w := s.w
	k := w.q.k
	var bo troubleBackoff
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// What the reads since the last announcement taught this process
	// (see announce).
	var promoted int64
	informed := false
	for {
		clearFlag := s.beginRead()
		fromDue := s.fromDue.Swap(false)
		now := w.q.cfg.Now()
		res, err := w.promote(ctx, w.q.p.Background(), k.promoteKeys(),
			now.UnixMilli(), promoteLimit, boolArg(clearFlag))
		if err != nil || len(res) != 2 {
			if fromDue {
				s.fromDue.Store(true)
			}
			if !s.readFailed(ctx, &bo, clearFlag, err) {
				return nil
			}
			continue
		}
		bo.reset()
		promoted += res[0]
		informed = informed || clearFlag || fromDue
		if s.moreDue(res, now) {
			continue // more are due (the script also stops at its byte and job bounds)
		}
		s.announce(ctx, promoted, res[1], informed)
		promoted, informed = 0, false
		s.arm(timer, res[1])
		if !s.sleep(ctx, timer) {
			return nil
		}
	}
}

// beginRead claims the wake and the clear flag before a read, so a wake
// that arrives during the read is not lost, and returns the clear flag.
func (s *scheduler) beginRead() (clearFlag bool) {
	clearFlag = s.clear.Swap(false)
	select {
	case <-s.wakeCh:
	default:
	}
	// Until this read's answer is in, any retry or enqueue must wake the
	// loop: a job added after the read would otherwise wait for a next due
	// time read without it.
	s.next.Store(math.MaxInt64)
	return clearFlag
}

// readFailed deals with a failed promotion and backs off. It reports
// false when ctx ended.
func (s *scheduler) readFailed(ctx context.Context, bo *troubleBackoff, clearFlag bool, err error) bool {
	if clearFlag {
		s.clear.Store(true)
	}
	if ctx.Err() != nil {
		return false // stopped mid-read: what was known still stands
	}
	s.known.Store(true) // not known to be empty
	s.w.log.Warn("queue: promoting delayed jobs failed; backing off", "err", err)
	return bo.wait(ctx)
}

// moreDue records a promotion's answer (promoted, next due time or -1) and
// reports whether more jobs are due now.
func (s *scheduler) moreDue(res []int64, now time.Time) bool {
	s.reads.Add(1)
	s.known.Store(res[1] >= 0)
	return res[0] == promoteLimit || (res[1] >= 0 && res[1] <= now.UnixMilli())
}

// arm sets the timer for the next due time (ms; -1: none).
func (s *scheduler) arm(timer *time.Timer, next int64) {
	if next < 0 {
		s.next.Store(math.MaxInt64)
		return
	}
	s.next.Store(next)
	// A timer never fires early, and a job due at ms X is promoted by a
	// scheduler whose clock reads X (due times are rounded up at enqueue,
	// so that is never before the time the job was given).
	timer.Reset(time.UnixMilli(next).Sub(s.w.q.cfg.Now()))
}

// sleep waits for the timer or a wake. It reports false when ctx ended.
func (s *scheduler) sleep(ctx context.Context, timer *time.Timer) bool {
	select {
	case <-timer.C:
	case <-s.wakeCh:
		timer.Stop()
	case <-ctx.Done():
		return false
	}
	return true
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
