package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// MaxProgress is the largest value Job.Progress accepts, in bytes.
const MaxProgress = 4 << 10

// progressTTL is how long a progress value is kept after it was written
// (each write renews it).
const progressTTL = time.Hour

// progressEvery is the default shortest time between two writes of one
// job's progress (Worker.progressEvery; tests shorten it).
const progressEvery = time.Second

var (
	// ErrProgressTooLarge: a Job.Progress value over MaxProgress bytes.
	// Nothing was recorded.
	ErrProgressTooLarge = errors.New("queue: progress value too large")
	// ErrResultTooLarge: a Job.SetResult value over WorkerConfig.MaxResult
	// bytes. The result was not set.
	ErrResultTooLarge = errors.New("queue: result too large")
	// errNotRunning: Progress or SetResult on a Job that no handler runs.
	errNotRunning = errors.New("the job is not running (Progress and SetResult are for the handler, until it returns)")
)

// jobRun is one run of a job, as its Job's Progress and SetResult and the
// control channel see it.
type jobRun struct {
	w      *Worker
	id     string
	key    string // runKey
	ctx    context.Context
	cancel context.CancelCauseFunc // nil without Control
	early  bool                    // cancelled before it started (without Control)

	mu         sync.Mutex
	ended      bool
	lastWrite  time.Time // of the progress, by Config.Now
	pending    []byte    // the latest progress value not written yet
	hasPending bool
	result     []byte
	run        string    // the run's markerValue, kept with its result (keys.resultRun); "" when the worker keeps none
	deadline   time.Time // the envelope's, which a handler cannot change (verdict.go)
	retryAt    time.Time // drawn once per run (retryDue, verdict.go)
	retryDrawn bool
	drawing    chan struct{} // while a call draws retryAt: closed when it is in
}

// Progress records v as the job's progress, readable with Queue.Get (for an
// hour after it was written). At most one value per job and second goes to
// Redis: a value given sooner than that after the last write is kept, the
// latest replacing the earlier ones, and written when the handler returns
// (or by the next call a second or more after the last write). A write goes
// inline, on the pool's background lane: no goroutine per job.
//
// v is copied. It is at most MaxProgress (4 KiB) bytes: a larger one fails
// with ErrProgressTooLarge. Progress fails once the handler has returned,
// and on a Job that is not a worker's. The error of a write to Redis is
// returned, and the value is then written with the job's outcome.
func (j *Job) Progress(ctx context.Context, v []byte) error {
	if len(v) > MaxProgress {
		return fmt.Errorf("%w: %d bytes, the limit is %d (queue.MaxProgress)", ErrProgressTooLarge, len(v), MaxProgress)
	}
	jr := j.run
	if jr == nil {
		return fmt.Errorf("queue: Progress: %w", errNotRunning)
	}
	w := jr.w
	now := w.q.cfg.Now()
	jr.mu.Lock()
	if jr.ended {
		jr.mu.Unlock()
		return fmt.Errorf("queue: Progress: %w", errNotRunning)
	}
	every := w.progressEvery
	if every <= 0 {
		every = progressEvery
	}
	if !jr.lastWrite.IsZero() && now.Sub(jr.lastWrite) < every && now.Sub(jr.lastWrite) >= 0 {
		jr.pending, jr.hasPending = append(jr.pending[:0], v...), true
		jr.mu.Unlock()
		return nil
	}
	jr.lastWrite, jr.hasPending = now, false
	jr.mu.Unlock()
	if err := w.q.p.Background().Set(ctx, w.q.k.progress(jr.id), v, progressTTL).Err(); err != nil {
		jr.mu.Lock()
		if !jr.hasPending {
			jr.pending, jr.hasPending = append(jr.pending[:0], v...), true
		}
		jr.mu.Unlock()
		return fmt.Errorf("queue: Progress: %w", err)
	}
	return nil
}

// SetResult sets the result of the job, stored when the handler returns nil
// and readable with Queue.Wait and Queue.Get for WorkerConfig.ResultTTL. The
// last call wins; a job that succeeds without one stores an empty result.
// b is copied. It fails with ErrResultTooLarge over WorkerConfig.MaxResult
// bytes (the result is then unchanged: the handler decides whether the job
// fails), when the worker keeps no results (ResultTTL 0), and once the
// handler has returned.
func (j *Job) SetResult(b []byte) error {
	jr := j.run
	if jr == nil {
		return fmt.Errorf("queue: SetResult: %w", errNotRunning)
	}
	cfg := jr.w.cfg
	if cfg.ResultTTL <= 0 {
		return fmt.Errorf("queue: SetResult: the worker keeps no results (WorkerConfig.ResultTTL is 0)")
	}
	if len(b) > cfg.MaxResult {
		return fmt.Errorf("%w: %d bytes, the limit is %d (WorkerConfig.MaxResult)", ErrResultTooLarge, len(b), cfg.MaxResult)
	}
	jr.mu.Lock()
	defer jr.mu.Unlock()
	if jr.ended {
		return fmt.Errorf("queue: SetResult: %w", errNotRunning)
	}
	jr.result = append(jr.result[:0:0], b...)
	if jr.result == nil {
		jr.result = []byte{}
	}
	return nil
}

// beginRun prepares a run: its context, cancelled with cause ErrCancelled by
// the control channel, and its registration. A cancel that came before the
// run started cancels it at once.
//
// Without ConsumerConfig.Control nothing can cancel a run once it started,
// so a run costs no cancellable context and no entry in the registry of
// running jobs (the drain's hot path): only a cancel recorded before a
// retried or recovered run starts is honoured (early).
func (w *Worker) beginRun(ctx context.Context, d delivery, job *Job) (context.Context, *jobRun) {
	jr := &jobRun{w: w, id: d.env.id, deadline: d.env.deadline}
	if w.cfg.ResultTTL > 0 {
		jr.run = markerValue(d.env)
	}
	job.run = jr
	if !w.c.cfg.Control {
		jr.ctx = ctx
		jr.early = w.cancelRecorded(ctx, d.env)
		return ctx, jr
	}
	jr.key = runKey(d.env.id, markerValue(d.env))
	jr.ctx, jr.cancel = context.WithCancelCause(ctx)
	if w.ctl.begin(jr, w.q.cfg.Now()) || w.cancelRecorded(ctx, d.env) {
		jr.cancel(ErrCancelled)
	}
	return jr.ctx, jr
}

// cancelledRun reports whether the run was cancelled (by Queue.Cancel).
func (jr *jobRun) cancelledRun() bool {
	return jr.early || context.Cause(jr.ctx) == ErrCancelled
}

// cancelRecorded reads the cancel marker of a run that follows an earlier
// one: a retry (attempt > 0) or a job recovered from a dead consumer
// (deliveries > 0). A cancel recorded while the earlier run held the job
// may never have reached its handler: the consumer runs without Control,
// the message came just after the handler returned with an error (the
// retry was already on its way), or the consumer died and a sweep
// recovered the job. Such a run is dropped without starting. A first run
// reads nothing (the drain's hot path is unchanged): a job cancelled while
// it waited was removed, and one cancelled between its fetch and its start
// is in the control channel's memory (workerCtl.recent). A read that fails
// lets the run start.
func (w *Worker) cancelRecorded(ctx context.Context, e envelope) bool {
	if e.attempt == 0 && e.deliveries == 0 {
		return false
	}
	mv := markerValue(e)
	vs, err := w.q.p.Background().MGet(ctx, w.q.k.runCancel(e.id, mv), w.q.k.cancelMarker(e.id)).Result()
	if err != nil {
		w.log.Warn("queue: reading the cancel of a retried or recovered job failed; it runs", "job", e.id, "err", err)
		return false
	}
	return cancelNamesRun(vs, mv)
}

// cancelNamesRun reads the MGET of a run's keys.runCancel and its job's
// cancelMarker: the run was cancelled when the first exists, or the marker
// names the run (written alone by an older version, or the run's cancel
// key gone by a restart that kept the marker).
func cancelNamesRun(vs []any, mv string) bool {
	if len(vs) != 2 {
		return false
	}
	if vs[0] != nil {
		return true
	}
	v, _ := vs[1].(string)
	return v == mv
}

// callRun runs the handler, unless the run was cancelled before it started.
func (w *Worker) callRun(ctx context.Context, job *Job) error {
	if job.run.cancelledRun() {
		return ErrCancelled
	}
	return w.call(ctx, job)
}

// endRun ends a run: Progress and SetResult fail from now on. It reports
// whether the run ended because it was cancelled: an error after a cancel.
func (w *Worker) endRun(jr *jobRun, err error) (cancelled bool) {
	cancelled = err != nil && jr.cancelledRun()
	if jr.cancel != nil {
		w.ctl.end(jr)
		jr.cancel(nil)
	}
	jr.mu.Lock()
	jr.ended = true
	jr.mu.Unlock()
	if cancelled {
		w.ctl.cancelled.Add(1)
	}
	return cancelled
}
