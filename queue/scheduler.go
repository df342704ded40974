package queue

import (
	"context"
	"math"
	"sync/atomic"
	"time"
)

// promoteLimit bounds the jobs one promote call moves.
const promoteLimit = 1000

// scheduler moves a queue's delayed and retrying jobs to the ready list at
// their due time. It sleeps on one timer until the exact next due time (no
// polling) and is woken early by:
//   - an Enqueue with a delay in this process (Queue.notifyDelayed);
//   - a retry scheduled by this worker's acker;
//   - a wake marker the fetcher found on the ready list: another process
//     enqueued a job that became the earliest one.
//
// With no delayed job at all it sends nothing to Redis.
type scheduler struct {
	w      *Worker
	wakeCh chan struct{}
	clear  atomic.Bool  // the wake flag in Redis must be cleared on the next promote
	next   atomic.Int64 // unix ms the loop sleeps until; MaxInt64 when nothing is due
}

func newScheduler(w *Worker) *scheduler {
	s := &scheduler{w: w, wakeCh: make(chan struct{}, 1)}
	s.next.Store(math.MaxInt64)
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

// wakeFor wakes the loop if due is earlier than the time it sleeps until.
func (s *scheduler) wakeFor(due time.Time) {
	if due.UnixMilli() < s.next.Load() {
		s.wake(false)
	}
}

func (s *scheduler) loop(ctx context.Context) error {
	w := s.w
	k := w.q.k
	var bo troubleBackoff
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		// Claim the wake before reading, so a wake that arrives during the
		// read is not lost.
		clearFlag := s.clear.Swap(false)
		select {
		case <-s.wakeCh:
		default:
		}
		// Until this read's answer is in, any retry or enqueue must wake
		// the loop: a job added after the read would otherwise wait for a
		// next due time read without it.
		s.next.Store(math.MaxInt64)
		now := w.q.cfg.Now()
		res, err := promoteScript.Run(ctx, w.q.p.Background(), []string{k.delayed, k.ready, k.wake},
			now.UnixMilli(), promoteLimit, boolArg(clearFlag)).Int64Slice()
		if err != nil || len(res) != 2 {
			if ctx.Err() != nil {
				return nil
			}
			if clearFlag {
				s.clear.Store(true)
			}
			w.log.Warn("queue: promoting delayed jobs failed; backing off", "err", err)
			if !bo.wait(ctx) {
				return nil
			}
			continue
		}
		bo.reset()
		if res[0] == promoteLimit {
			continue // more are due
		}
		if res[1] < 0 {
			s.next.Store(math.MaxInt64)
		} else {
			s.next.Store(res[1])
			// A timer never fires early, and a job due at ms X is promoted by
			// a scheduler whose clock reads X (due times are rounded up at
			// enqueue, so that is never before the time the job was given).
			timer.Reset(time.UnixMilli(res[1]).Sub(w.q.cfg.Now()))
		}
		select {
		case <-timer.C:
		case <-s.wakeCh:
			timer.Stop()
		case <-ctx.Done():
			return nil
		}
	}
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
