package queue

import (
	"fmt"
	"time"
)

// A Verdict is what the worker does with a run whose handler returned an
// error (Job.Verdict).
type Verdict struct {
	// Retry: the job runs again at RetryAt. Otherwise it goes to the dead
	// letters with Reason, the dead letter's reason.
	Retry   bool
	RetryAt time.Time
	Reason  string
}

// Verdict reports what the worker will do with this run if its handler
// returns err: retry it, and when, or send it to the dead letters, and
// why. It is for middleware that reports the outcome before the handler
// returns (contrib/otel's span events).
//
// The worker draws the retry's delay (WorkerConfig.Backoff or the default
// jittered one) once per run, at the first call of Verdict or when the
// handler returned, from that call's error; the retry, or the dead letter
// when it would start after the job's Deadline, is the one reported
// (calls at once wait for one draw: Backoff must not call Verdict). Two
// things Verdict cannot foresee: a run cancelled by Queue.Cancel (its
// ctx's cause is ErrCancelled) is dropped, and one the worker's drain
// cancelled (ctx cancelled, without that cause) goes back to the ready
// list unchanged.
//
// ok is false when err is nil and on a Job that is not a worker's (built
// by hand). It is safe to call from any goroutine during the run.
func (j *Job) Verdict(err error) (v Verdict, ok bool) {
	if err == nil || j.run == nil || j.run.w == nil {
		return Verdict{}, false
	}
	return j.run.w.verdict(j, err), true
}

// verdict decides what happens to a run that failed with err.
func (w *Worker) verdict(job *Job, err error) Verdict {
	switch {
	case IsPermanent(err):
		return Verdict{Reason: fmt.Sprintf("attempt %d of %d failed permanently: %v", job.Attempt, job.MaxAttempts, err)}
	case job.Attempt >= job.MaxAttempts:
		return Verdict{Reason: fmt.Sprintf("attempt %d of %d failed: %v", job.Attempt, job.MaxAttempts, err)}
	}
	deadline := job.Deadline
	if job.run != nil {
		deadline = job.run.deadline
	}
	due := w.retryDue(job, err)
	if !deadline.IsZero() && due.After(deadline) {
		return Verdict{Reason: fmt.Sprintf("attempt %d of %d failed and its retry would start after the deadline %s: %v", job.Attempt, job.MaxAttempts, deadline.UTC().Format(time.RFC3339Nano), err)}
	}
	return Verdict{Retry: true, RetryAt: due}
}

// retryDue is when the retry of a failed run is due: drawn once per run,
// by the first of Job.Verdict and the worker to ask, so that both see the
// same. Backoff runs outside the run's lock (it may call Progress); a call
// that comes while another draws waits for that draw.
func (w *Worker) retryDue(job *Job, err error) time.Time {
	jr := job.run
	if jr == nil {
		return w.q.cfg.Now().Add(w.retryDelay(job, err))
	}
	jr.mu.Lock()
	for !jr.retryDrawn && jr.drawing != nil {
		ch := jr.drawing
		jr.mu.Unlock()
		<-ch // closed when the draw is in
		jr.mu.Lock()
	}
	if jr.retryDrawn {
		due := jr.retryAt
		jr.mu.Unlock()
		return due
	}
	ch := make(chan struct{})
	jr.drawing = ch
	jr.mu.Unlock()
	// retryDelay recovers a panic of Backoff: the draw always comes in.
	due := w.q.cfg.Now().Add(w.retryDelay(job, err))
	jr.mu.Lock()
	jr.retryAt, jr.retryDrawn, jr.drawing = due, true, nil
	jr.mu.Unlock()
	close(ch)
	return due
}
