package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxResult is WorkerConfig.MaxResult's default; maxResultLimit its
// largest value.
const (
	DefaultMaxResult = 64 << 10
	maxResultLimit   = 1 << 20
)

// ackExtra is what an outcome writes besides the job's move: the result,
// the last progress value, and the wake-up of producers waiting for the
// job. Written in the acker's pipeline: the result before the ack, the
// wake-up after it, so a woken producer finds the result.
type ackExtra struct {
	result      []byte
	storeResult bool
	run         string // the run's markerValue, stored beside the result (keys.resultRun)
	progress    []byte
	notify      bool
}

// cancelledOutcome drops a job whose run ended because it was cancelled: off
// the processing list, its payload kept apart, idempotency key and last
// error deleted, as a success is, without a result or a hook; never retried.
func (w *Worker) cancelledOutcome(d delivery) ackOp {
	w.log.Debug("queue: job cancelled; dropped", "job", d.env.id)
	op := ackOp{kind: ackDone, elem: d.elem, id: d.env.id, unique: d.env.unique, ref: d.env.ref}
	if d.env.attempt > 0 {
		// A run after a failed one: the failed run's error goes with the
		// job, as a success or a cancel of the waiting retry deletes it.
		op.x = &outcomeExtra{clearErr: true}
	}
	return op
}

// withExtra adds to op what the run leaves besides its outcome.
func (w *Worker) withExtra(op ackOp, jr *jobRun, cancelled bool) ackOp {
	jr.mu.Lock()
	var x ackExtra
	if jr.hasPending {
		x.progress = jr.pending
	}
	switch {
	case cancelled:
		x.notify = true
	case op.kind == ackDone && w.cfg.ResultTTL > 0:
		x.result, x.storeResult, x.notify, x.run = jr.result, true, true, jr.run
		if x.result == nil {
			x.result = []byte{}
		}
	case op.kind == ackDead:
		x.notify = true
	}
	jr.mu.Unlock()
	if x.progress != nil || x.storeResult || x.notify {
		op.extra = &x
	}
	return op
}

// wakeWaitersOfDead has a job the fetcher sends to the dead letters
// (deadline passed, MaxDeliveries, payload missing) wake the producers
// waiting for it.
func wakeWaitersOfDead(op ackOp) ackOp {
	if op.kind == ackDead && op.id != "" && op.extra == nil {
		op.extra = &ackExtra{notify: true}
	}
	return op
}

// wakeWaiters wakes the producers waiting for a job that ended outside the
// acker's pipelines (a restarted consumer's previous life sent it to the
// dead letters), if any.
func (w *Worker) wakeWaiters(ctx context.Context, c redis.Scripter, id string) {
	if err := notifyScript.Run(ctx, c, []string{w.q.k.resultWaiters(id)}, w.q.k.doneChannel(), id).Err(); err != nil {
		w.log.Warn("queue: waking the producers waiting for a job failed", "job", id, "err", err)
	}
}

// ctlExtras writes the extras of one pipeline of outcomes.
type ctlExtras struct {
	notifies []*redis.Cmd
	ids      []string
}

// before adds what goes before op's write: its progress and result. It
// appends the commands added to cmds.
func (x *ctlExtras) before(ctx context.Context, w *Worker, pipe redis.Pipeliner, op *ackOp, cmds []redis.Cmder) []redis.Cmder {
	e := op.extra
	if e == nil {
		return cmds
	}
	if e.progress != nil {
		cmds = append(cmds, pipe.Set(ctx, w.q.k.progress(op.id), e.progress, progressTTL))
	}
	if e.storeResult {
		// The run first: a Wait that reads them between the two SETs sees
		// no result yet, not this result beside an earlier run's stamp.
		cmds = append(cmds, pipe.Set(ctx, w.q.k.resultRun(op.id), e.run, w.cfg.ResultTTL))
		cmds = append(cmds, pipe.Set(ctx, w.q.k.result(op.id), e.result, w.cfg.ResultTTL))
	}
	return cmds
}

// after adds what goes after op's write: the wake-up of its waiters.
func (x *ctlExtras) after(ctx context.Context, w *Worker, pipe redis.Pipeliner, op *ackOp) {
	if op.extra == nil || !op.extra.notify {
		return
	}
	x.notifies = append(x.notifies, notifyScript.EvalSha(ctx, pipe, []string{w.q.k.resultWaiters(op.id)}, w.q.k.doneChannel(), op.id))
	x.ids = append(x.ids, op.id)
}

// done sends again the wake-ups refused with NOSCRIPT (a cold script
// cache): a lost one would leave a producer waiting.
func (x *ctlExtras) done(ctx context.Context, w *Worker, c redis.Scripter) {
	for i, cmd := range x.notifies {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			if err := notifyScript.Run(ctx, c, []string{w.q.k.resultWaiters(x.ids[i])}, w.q.k.doneChannel(), x.ids[i]).Err(); err != nil {
				w.log.Warn("queue: waking the producers waiting for a job failed", "job", x.ids[i], "err", err)
			}
		}
	}
}

// waitTTLMax bounds how long one registration of a waiting producer lives
// in Redis; a longer Wait renews it.
const waitTTLMax = time.Hour

// Wait waits until the job with ID id has ended and returns its result:
// the result its handler set (Job.SetResult; empty when it set none) when
// it succeeded, an error wrapping ErrJobDead and the dead letter's reason
// when it went to the dead letters, ErrCancelled when it was cancelled, or
// ctx's error. It is woken by Pub/Sub (the Queue's subscriber: Wait needs
// Queue.Start, else it fails with ErrNotStarted), never by polling, and
// reads the job's end in Redis after it registered, so a job that ended
// before Wait was called is answered at once.
//
// A success is only seen when the queue's workers keep results
// (WorkerConfig.ResultTTL): without, Wait waits until ctx ends. Wait does
// not look the job up: for an unknown ID it waits until ctx ends (use Get).
// The result is written just before the job's ack, in the same pipeline
// but not atomically with it, so Wait can return a moment before the ack
// lands: a Get right after may still say StateRunning.
// A reused ID (the ID option, after the job with it ended) is the new
// job's: the enqueue that takes the ID deletes, in the same script, the
// result, progress, cancel and last error the earlier job left, so a Wait
// called after that waits for the new job's end. A Wait reports the end of
// the job that held the ID when it started (its idempotency key names its
// run), never a later job's: when a later job took the ID before Wait read
// that end, the job's dead letter still answers, and a success or cancel,
// deleted with the ID, answers an error wrapping ErrJobFinished. (A
// debounced job's key names no run: a Wait for it is not pinned.) Not
// covered: a job that runs past its UniqueTTL lets a later job take the
// ID, and when that later job ends first Wait answers ErrJobFinished
// although the job it waits for still runs (it cannot tell that job from
// one whose end the later enqueue deleted). The
// earlier job's dead letter is kept (it is history): it answers Wait only
// while no job holds the ID, so a new job that succeeds with no result
// kept (ResultTTL 0) may be reported dead by it. At most Config.MaxWaiters producers of a process wait for
// results of one queue at once: one more fails with ErrTooManyWaiters.
func (q *Queue) Wait(ctx context.Context, id string) ([]byte, error) {
	if err := validID(id); err != nil {
		return nil, q.errorf("wait: %w", err)
	}
	r := q.room.Load()
	if r == nil {
		return nil, q.errorf("wait %s: %w", id, ErrNotStarted)
	}
	c := q.p.Client()
	register := func() (time.Duration, error) {
		ttl := resultWaitTTL(ctx)
		return ttl, waitRegisterScript.Run(ctx, c, []string{q.k.resultWaiters(id)}, ttl.Milliseconds()).Err()
	}
	ttl, err := register()
	if err != nil {
		return nil, q.errorf("wait %s: %w", id, err)
	}
	renew := time.NewTimer(ttl / 2)
	defer renew.Stop()
	var pin waitPin
	for woken := false; ; woken = true {
		if woken {
			// The message that woke us consumed the registration, and the
			// job may not have ended (a wake-up for every waiter, or an
			// outcome whose write failed after its wake-up was sent and is
			// sent again): register again first. This also renews it.
			if _, err := register(); err != nil {
				return nil, q.errorf("wait %s: %w", id, err)
			}
		}
		ch, err := r.results.add(id)
		if err != nil {
			return nil, q.errorf("wait %s: %w", id, err)
		}
		res, ended, err := q.ended(ctx, id, &pin)
		if ended || err != nil {
			r.results.remove(id, ch)
			if err != nil {
				return nil, q.errorf("wait %s: %w", id, err)
			}
			return res, nil
		}
		select {
		case <-ch:
		case <-renew.C:
			// The registration is renewed at the top of the loop.
			r.results.remove(id, ch)
			renew.Reset(resultWaitTTL(ctx) / 2)
		case <-ctx.Done():
			r.results.remove(id, ch)
			return nil, q.errorf("wait %s: %w", id, context.Cause(ctx))
		}
	}
}

// resultWaitTTL is how long a Wait registration lives: until ctx's deadline and
// a second more, at most waitTTLMax.
func resultWaitTTL(ctx context.Context) time.Duration {
	ttl := waitTTLMax
	if dl, ok := ctx.Deadline(); ok {
		ttl = min(ttl, max(time.Until(dl), 0)+time.Second)
	}
	return ttl
}

// waitPin is the job a Wait waits for: the enqueue stamp (markerValue) of
// the job that held the ID (its idempotency key) at Wait's first read.
type waitPin struct {
	read  bool   // the first read is done
	stamp string // "": no job held the ID (or its key names no run)
}

// ended reads whether the job ended: its result, its cancel, or its dead
// letter, and who holds its ID, at one instant (MULTI). err is the job's
// failure when it did not succeed.
//
// The result and the cancel marker are the latest job's of the ID: an
// enqueue that takes the ID deletes them (keys.endKeys). A dead letter is
// history and stays: it is the job's only while no later job holds the ID
// (its idempotency key, which a death frees). A Wait pinned to the job that
// held the ID at its first read (pin) reports that job's end only: once
// the ID is no longer that job's, a result, cancel or dead letter counts
// only when it names that job's run, and when a later job holds the ID
// and none does, the job's end is gone with the ID (ErrJobFinished).
func (q *Queue) ended(ctx context.Context, id string, pin *waitPin) (res []byte, ended bool, err error) {
	pipe := q.p.Client().TxPipeline()
	resCmd := pipe.Get(ctx, q.k.result(id))
	runCmd := pipe.Get(ctx, q.k.resultRun(id))
	dead := pipe.HGet(ctx, q.k.deadData, id)
	markCmd := pipe.Get(ctx, q.k.cancelMarker(id))
	// Its first bytes only: a debounced job's key holds its element, its
	// payload inline; a stamp or the element's version prefix is enough.
	heldCmd := pipe.GetRange(ctx, q.k.unique(id), 0, holderReadMax-1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, false, err
	}
	holderV := heldCmd.Val() // "" for no key: no value of it is empty
	held, holder := holderV != "", holderStamp(holderV)
	if !pin.read {
		pin.read, pin.stamp = true, holder
	}
	mark, err := markCmd.Result()
	marked := err == nil
	if pin.stamp != "" && holder != pin.stamp {
		return q.pinnedEnded(ctx, id, pin.stamp, held, resCmd, runCmd, dead, mark, marked)
	}
	if b, err := resCmd.Bytes(); err == nil {
		return b, true, nil
	}
	// A marker beside the dead letter is a later job's cancel, unless it
	// is the dead job's own (a cancel too late to stop its last run).
	if rec, err := dead.Result(); err == nil && !held {
		isDead := true
		if marked {
			if isDead, err = q.deadOwnsCancel(ctx, id, rec, mark); err != nil {
				return nil, false, err
			}
		}
		if isDead {
			return nil, true, deadErr(rec)
		}
	}
	if marked {
		return nil, true, ErrCancelled
	}
	return nil, false, nil
}

// pinnedEnded is ended for a Wait whose job (its run stamp) no longer
// holds the ID: it ended, or its key lapsed (UniqueTTL) while it waited or
// ran. Only an end that names its run counts; a result written without its
// run (by an older version) is taken as its. Once a later job holds the ID
// or left its own end, the job's result and cancel are gone (the later
// enqueue deleted them): ErrJobFinished.
func (q *Queue) pinnedEnded(ctx context.Context, id, stamp string, held bool, resCmd, runCmd *redis.StringCmd, dead *redis.StringCmd, mark string, marked bool) ([]byte, bool, error) {
	later := held // a later job holds the ID, or left its end under it
	if b, err := resCmd.Bytes(); err == nil {
		run, err := runCmd.Result()
		if err != nil || run == stamp {
			return b, true, nil
		}
		later = true
	}
	if marked {
		if mark == stamp {
			return nil, true, ErrCancelled
		}
		later = true
	}
	if rec, err := dead.Result(); err == nil {
		if deadNamesRun(rec, id, stamp) {
			return nil, true, deadErr(rec)
		}
		// The ID died before: a later death of it is kept as <id>~<ms>.
		rec, err := q.deadOfRun(ctx, id, stamp)
		if err != nil {
			return nil, false, err
		}
		if rec != "" {
			return nil, true, deadErr(rec)
		}
	}
	if later {
		return nil, true, fmt.Errorf("%w: a later job took its ID before Wait read how it ended (a reused ID is the new job's)", ErrJobFinished)
	}
	return nil, false, nil
}

// deadNamesRun reports whether the dead record rec is of job id's run stamp.
func deadNamesRun(rec, id, stamp string) bool {
	r, err := parseDeadRecord([]byte(rec))
	if err != nil {
		return false
	}
	e, err := decodeEnvelope(r.Element)
	return err == nil && e.id == id && markerValue(e) == stamp
}

// deadOfRun finds the dead record of job id's run stamp among the dead
// letters of its ID kept beside the first (deadScript names them
// <id>~<died ms>[~i]); "" when there is none. It scans the dead index
// (ZSCAN MATCH, COUNT deadScanCount a call, and one HMGET of the records
// each page names), so Wait calls it only for an
// ID whose first dead letter is another run's, once per read.
func (q *Queue) deadOfRun(ctx context.Context, id, stamp string) (string, error) {
	c := q.p.Client()
	match := globEscape(id) + "~*"
	var cursor uint64
	for {
		ids, next, err := c.ZScan(ctx, q.k.deadIdx, cursor, match, deadScanCount).Result()
		if err != nil {
			return "", err
		}
		members := make([]string, 0, len(ids)/2)
		for i := 0; i+1 < len(ids); i += 2 { // member, score
			members = append(members, ids[i])
		}
		if len(members) > 0 {
			// One HMGET for the page, not an HGET per dead letter.
			recs, err := c.HMGet(ctx, q.k.deadData, members...).Result()
			if err != nil {
				return "", err
			}
			for _, v := range recs {
				rec, ok := v.(string) // nil: trimmed or requeued meanwhile
				if ok && deadNamesRun(rec, id, stamp) {
					return rec, nil
				}
			}
		}
		if cursor = next; cursor == 0 {
			return "", nil
		}
	}
}

// deadScanCount is the COUNT of deadOfRun's ZSCAN calls.
const deadScanCount = 1000

// holderReadMax is how much of an idempotency key's value Wait reads: a
// run stamp (unix ms) fits whole, an element is told by its version prefix.
const holderReadMax = 32

// holderStamp is the run stamp an idempotency key names (uniqueOwnLua): its
// value, or the stamp of the element it holds (a debounced job, whose
// replacements are that job still but carry stamps of their own: no
// stamp); "" for none.
func holderStamp(v string) string {
	if v == "" || v == "1" || strings.HasPrefix(v, envelopeVersion) {
		return ""
	}
	return v
}

// deadErr is Wait's error for a dead job, from its dead record.
func deadErr(rec string) error {
	reason := "unreadable dead record"
	if r, err := parseDeadRecord([]byte(rec)); err == nil {
		reason = r.Reason
	}
	return fmt.Errorf("%w: %s", ErrJobDead, reason)
}

// resultWaiters are the producers of one Queue waiting for jobs to end
// (Wait) in this process, by job ID: each waits on a channel closed when a
// message names its job, or when the subscriber (re)subscribes.
type resultWaiters struct {
	mu     sync.Mutex
	m      map[string]map[chan struct{}]struct{}
	n      int
	max    int
	closed bool
}

func newResultWaiters(max int) *resultWaiters {
	return &resultWaiters{m: map[string]map[chan struct{}]struct{}{}, max: max}
}

func (r *resultWaiters) add(id string) (chan struct{}, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrNotStarted
	}
	if r.n >= r.max {
		return nil, fmt.Errorf("%w: %d wait already (Config.MaxWaiters)", ErrTooManyWaiters, r.max)
	}
	ch := make(chan struct{})
	if r.m[id] == nil {
		r.m[id] = map[chan struct{}]struct{}{}
	}
	r.m[id][ch] = struct{}{}
	r.n++
	return ch, nil
}

func (r *resultWaiters) remove(id string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[id][ch]; ok {
		delete(r.m[id], ch)
		r.n--
		if len(r.m[id]) == 0 {
			delete(r.m, id)
		}
	}
}

// wake wakes the waiters of id.
func (r *resultWaiters) wake(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ch := range r.m[id] {
		close(ch)
		r.n--
	}
	delete(r.m, id)
}

// wakeAll wakes every waiter: messages may have been missed.
func (r *resultWaiters) wakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, chs := range r.m {
		for ch := range chs {
			close(ch)
		}
		delete(r.m, id)
	}
	r.n = 0
}

// close wakes every waiter for good: the group closed.
func (r *resultWaiters) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wakeAll()
}

func (r *resultWaiters) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
