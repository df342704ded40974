package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Job control by ID: Get, Cancel (this file), the control channel that
// reaches running handlers (ctlconsumer.go), Progress and results
// (progress.go, result.go). See docs/queue.md, "Job control by ID".

var (
	// ErrCancelled is the cause of a handler's context cancelled by
	// Queue.Cancel (context.Cause(ctx) == ErrCancelled), and what Wait
	// returns for a cancelled job. A run that ends with an error after its
	// cancel is never retried: the job is dropped.
	ErrCancelled = errors.New("queue: job cancelled")
	// ErrJobNotFound: no job with this ID is waiting, running or dead, and
	// none finished recently enough to have left a result, a progress
	// value or a cancel behind. Only returned when every place was looked
	// at in full (see ErrLookupIncomplete).
	ErrJobNotFound = errors.New("queue: job not found")
	// ErrLookupIncomplete: the job was not found within the bounds of one
	// lookup (about 10,000 elements of the ready and processing lists and
	// 10,000 members of the delayed set), and the queue holds more than
	// that. The job may be deep in the ready list or the delayed set. It
	// does not match ErrJobNotFound.
	ErrLookupIncomplete = errors.New("queue: job not found within the lookup bounds")
	// ErrJobFinished: Cancel of a job that is dead or has already
	// succeeded; nothing was changed. Also Wait's, for a job that ended
	// and whose ID a later job took before Wait read how it ended.
	ErrJobFinished = errors.New("queue: job already finished")
	// ErrJobDead is wrapped by Wait's error for a job that went to the dead
	// letters; the message holds the dead letter's reason.
	ErrJobDead = errors.New("queue: job is dead")
)

// cancelTTL is how long a cancel is remembered in Redis (its marker): Get
// reports the job cancelled and Wait returns ErrCancelled for that long, and
// a control subscriber that reconnects finds the cancels of the jobs it
// holds that were sent while it was away.
const cancelTTL = 10 * time.Minute

// cancelMarker holds the cancel of a job: the enqueue time (unix ms) of the
// run it cancels, so that a later job reusing the ID is not cancelled.
func (k keys) cancelMarker(id string) string { return k.tag + ":cancel:" + id }

// runCancel holds the cancel of one run of a job that was running when it
// was cancelled (mv: markerValue), beside its cancelMarker: an enqueue
// that takes the ID deletes the cancelMarker (keys.endKeys, for Wait and
// Get), but a run still held (its retry, or a recovery, reads the cancel to
// be dropped: Worker.cancelRecorded, controlSub.catchUp) may not hold the
// ID (a requeued dead letter, a lapsed UniqueTTL), and its cancel must
// outlive the new job's enqueue. IDs hold no '|': no ID's cancelMarker is
// a runCancel key.
func (k keys) runCancel(id, mv string) string { return k.tag + ":cancelrun:" + id + "|" + mv }

// resultWaiters counts the producers waiting for a job (Queue.Wait): only a
// job somebody waits for costs a message when it ends.
func (k keys) resultWaiters(id string) string { return k.tag + ":waiting:" + id }

// doneChannel carries the IDs of the jobs that ended while somebody waited
// for them (Queue.Wait).
func (k keys) doneChannel() string { return k.tag + ":done" }

// controlChannel is the channel of one consumer (process) of a namespace:
// cancels of the jobs it runs (ctlconsumer.go).
func controlChannel(namespace, consumer string) string {
	return "{" + namespace + "}:control:" + consumer
}

// Where findJobScript found a job.
const (
	locNowhere        = 0
	locReady          = 1
	locDelayed        = 2
	locRunning        = 3
	locDead           = 4
	locFair           = 5 // waiting in a partition (parts.go)
	locConsumersMoved = -2
)

// location is a job as findJobScript found it.
type location struct {
	where    int
	elem     string   // the element, or the dead record
	env      envelope // decoded element (ready, delayed, running)
	envErr   error
	due      time.Time // delayed
	consumer string    // running
	deadRef  string    // dead: its payload kept apart
	complete bool      // no bound stopped a scan
}

// globEscape escapes the glob metacharacters of s for a MATCH pattern.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// locateTries bounds the rereads of the consumers set when it changes
// between the read and the lookup (a consumer joining or swept).
const locateTries = 3

// locate finds the job with ID id at one instant (one script call), within
// the bounds of findJobScript. Costs two round trips on the request lane:
// the consumers set, then the script.
func (q *Queue) locate(ctx context.Context, id string) (location, error) {
	c := q.p.Client()
	prefix := envelopeVersion + id + "|"
	for range locateTries {
		ids, err := c.SMembers(ctx, q.k.consumers).Result()
		if err != nil {
			return location{}, err
		}
		ks := append([]string{q.k.ready, q.k.delayed, q.k.deadData, q.k.deadRefs, q.k.consumers, q.k.fair()}, q.k.levels...)
		elems, scan := lookupElems, lookupScan
		if q.lookupBound > 0 { // tests
			elems, scan = q.lookupBound, q.lookupBound
		}
		args := []any{prefix, globEscape(prefix) + "*", id, strconv.Itoa(elems) + " " + strconv.Itoa(scan)}
		for _, cid := range ids {
			ks = append(ks, q.k.proc(cid))
			args = append(args, cid)
		}
		res, err := findJobScript.Run(ctx, c, ks, args...).Slice()
		if err != nil {
			return location{}, err
		}
		where, _ := res[0].(int64)
		if where == locConsumersMoved {
			continue
		}
		if len(res) < 4 {
			return location{}, fmt.Errorf("locate script answered %v", res)
		}
		loc := location{where: int(where)}
		loc.elem, _ = res[1].(string)
		complete, _ := res[3].(int64)
		loc.complete = complete == 1
		switch loc.where {
		case locReady, locDelayed, locRunning, locFair:
			loc.env, loc.envErr = decodeEnvelope([]byte(loc.elem))
			n, _ := res[2].(int64)
			if loc.where == locDelayed {
				loc.due = time.UnixMilli(n)
			}
			if loc.where == locRunning && n >= 1 && int(n) <= len(ids) {
				loc.consumer = ids[n-1]
			}
		case locDead:
			loc.deadRef, _ = res[2].(string)
		}
		return loc, nil
	}
	return location{}, fmt.Errorf("the consumers set changed %d times while the job was looked for", locateTries)
}

// Get describes the job with ID id: where it is (ready, delayed, running
// and on which consumer, dead), its attempts, its last error (the dead
// letter's reason, or the error of its last failed run while it waits to
// retry, when recorded), its progress (Job.Progress), its result
// (WorkerConfig.ResultTTL) and its payload. A job that succeeded is
// reported StateDone while its result, or its progress, is kept; a
// cancelled one StateCancelled for 10 minutes. For a reused ID (see Wait)
// Get describes the latest job: an enqueue that takes the ID deletes the
// result, progress, cancel and last error of earlier jobs.
//
// Jobs have no per-ID index: Get looks for the job in the processing lists,
// the ready list and the delayed set, within bounds (about 10,000 list
// elements and 10,000 delayed jobs per call), in one script call that sees
// them at one instant. It costs three round trips on the request lane.
// Errors: ErrJobNotFound when the job is nowhere and every place was looked
// at in full; ErrLookupIncomplete when it was not found but a bound stopped
// the lookup (a backlog deeper than the bounds: the job may be in its
// middle).
func (q *Queue) Get(ctx context.Context, id string) (JobInfo, error) {
	if err := validID(id); err != nil {
		return JobInfo{}, q.errorf("get: %w: %w", ErrInvalidArgument, err)
	}
	loc, err := q.locate(ctx, id)
	if err != nil {
		return JobInfo{}, q.errorf("get %s: %w", id, err)
	}
	info := JobInfo{ID: id, Queue: q.name}
	ref := ""
	switch loc.where {
	case locReady, locDelayed, locRunning, locFair:
		if loc.envErr != nil {
			return info, q.errorf("get %s: %w", id, loc.envErr)
		}
		info.State = map[int]JobState{locReady: StateReady, locDelayed: StateDelayed, locRunning: StateRunning, locFair: StateReady}[loc.where]
		info.fromEnvelope(loc.env)
		info.Due, info.Consumer, ref = loc.due, loc.consumer, loc.env.ref
	case locDead:
		ref = loc.deadRef
		if err := info.fromDeadRecord(loc.elem); err != nil {
			return info, q.errorf("get %s: %w", id, err)
		}
	}
	extra, err := q.readJobKeys(ctx, id, ref)
	if err != nil {
		return info, q.errorf("get %s: %w", id, err)
	}
	own := false
	if loc.where == locDead && extra.cancelled && !extra.hasResult {
		if own, err = q.deadOwnsCancel(ctx, id, loc.elem, extra.mark); err != nil {
			return info, q.errorf("get %s: %w", id, err)
		}
	}
	if loc.where == locDead && (extra.hasResult || extra.cancelled && !own) {
		// A later job of the ID succeeded or was cancelled: the enqueue
		// that took the ID deleted what earlier jobs left (keys.endKeys),
		// so these are its, and the dead letter is an earlier job's. A
		// marker that names the dead job's own run is a cancel that came
		// too late to stop it: the job is dead.
		info, loc.where = JobInfo{ID: id, Queue: q.name}, locNowhere
		extra.payload = nil
	}
	info.Progress, info.Result = extra.progress, extra.result
	if info.State != StateDead {
		info.LastError = extra.lastErr
	}
	if ref != "" {
		info.Payload = extra.payload
	}
	if loc.where != locNowhere {
		return info, nil
	}
	switch {
	case extra.hasResult:
		info.State = StateDone
	case extra.cancelled:
		info.State = StateCancelled
	case !loc.complete:
		return JobInfo{}, q.errorf("get %s: %w", id, ErrLookupIncomplete)
	case extra.progress != nil:
		info.State = StateDone
	default:
		return JobInfo{}, q.errorf("get %s: %w", id, ErrJobNotFound)
	}
	return info, nil
}

// fromEnvelope fills the fields an element holds.
func (j *JobInfo) fromEnvelope(e envelope) {
	j.Attempt, j.MaxAttempts, j.Deliveries, j.EnqueuedAt = e.attempt, e.maxAttempts, e.deliveries, e.enqueuedAt
	j.Type, j.Partition, j.Priority = e.typ, e.part, e.level
	if e.ref == "" {
		j.Payload = e.payload
	}
}

// fromDeadRecord fills the fields of a dead job.
func (j *JobInfo) fromDeadRecord(rec string) error {
	r, err := parseDeadRecord([]byte(rec))
	if err != nil {
		return fmt.Errorf("unreadable dead record: %w", err)
	}
	j.State, j.DiedAt, j.LastError = StateDead, time.UnixMilli(r.DiedMs), r.Reason
	if e, err := decodeEnvelope(r.Element); err == nil {
		j.fromEnvelope(e)
	}
	j.Attempt = r.Attempts
	return nil
}

// jobKeys are the per-job keys Get reads.
type jobKeys struct {
	progress, result, payload []byte
	hasResult, cancelled      bool
	lastErr                   string
	mark                      string // the cancel marker's value: the run it cancels (markerValue)
}

// deadOwnsCancel reports whether the cancel marker beside the dead letter
// of id (its record rec, the marker's value mark) is the dead job's own: a
// cancel of its last run that came too late to stop it (a consumer without
// Control, a message after the handler returned), not the cancel of a later
// job of the ID. The marker names the run by its enqueue time in ms, which
// a later job enqueued within the same millisecond shares: the run's own
// cancel key (keys.runCancel, written only for a running job's cancel)
// settles it. A second read, only when the marker names the dead run.
func (q *Queue) deadOwnsCancel(ctx context.Context, id, rec, mark string) (bool, error) {
	r, err := parseDeadRecord([]byte(rec))
	if err != nil {
		return false, nil
	}
	e, err := decodeEnvelope(r.Element)
	if err != nil || markerValue(e) != mark {
		return false, nil
	}
	n, err := q.p.Client().Exists(ctx, q.k.runCancel(id, mark)).Result()
	return n == 1, err
}

// readJobKeys reads a job's progress, result, last error and cancel marker,
// and its payload kept apart under ref (if any), in one pipeline.
func (q *Queue) readJobKeys(ctx context.Context, id, ref string) (jobKeys, error) {
	pipe := q.p.Client().Pipeline()
	prog := pipe.Get(ctx, q.k.progress(id))
	res := pipe.Get(ctx, q.k.result(id))
	lastErr := pipe.Get(ctx, q.k.lastErr(id))
	mark := pipe.Get(ctx, q.k.cancelMarker(id))
	var pay *redis.StringCmd
	if ref != "" {
		pay = pipe.HGet(ctx, q.k.payloads, ref)
	}
	var out jobKeys
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return out, err
	}
	if b, err := prog.Bytes(); err == nil {
		out.progress = b
	}
	if b, err := res.Bytes(); err == nil {
		out.result, out.hasResult = b, true
	}
	out.lastErr = lastErr.Val()
	m, err := mark.Result()
	out.mark, out.cancelled = m, err == nil
	if pay != nil {
		out.payload, _ = pay.Bytes()
	}
	return out, nil
}

// Cancel cancels the job with ID id.
//
// A waiting job (ready, delayed, or waiting to retry) is removed at once,
// with its payload kept apart and its idempotency key, by a script that
// removes the exact element it found, so a job a fetcher has just taken is
// never removed from under it: Cancel then finds it running. The room it
// leaves wakes the producers waiting for it (WaitForRoom), as a take's does.
//
// A running job's handler context is cancelled, with cause ErrCancelled,
// in whichever process runs it: Cancel sends the cancel on the control
// channel of the consumer that holds the job, which its Consumer receives
// when it runs with ConsumerConfig.Control (a consumer without it does not
// interrupt the handler). Cancel returns once the cancel is sent, not when
// the handler has returned. A run that then ends with an error is not
// retried, and not sent to the dead letters when it was the job's last
// attempt: the job is dropped, like a removed one, also when the handler
// never saw the cancel. A handler that returns nil all the same succeeds.
//
// Cancel records the cancel for 10 minutes: Get reports StateCancelled,
// Wait returns ErrCancelled, and a consumer whose control subscription was
// down when the cancel was sent finds it when it subscribes again. Cancel of
// a job already cancelled returns nil.
//
// Errors: ErrJobFinished for a dead job (it is left in the dead letters:
// Requeue would run it again, purge it to be rid of it) or one that
// succeeded and left its result; ErrJobNotFound and ErrLookupIncomplete as
// for Get. A pending occurrence of a schedule cannot be cancelled (it would
// end the schedule's chain): Unschedule it; a running one can.
func (q *Queue) Cancel(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return q.errorf("cancel: %w: %w", ErrInvalidArgument, err)
	}
	c := q.p.Client()
	for range locateTries {
		loc, err := q.locate(ctx, id)
		if err != nil {
			return q.errorf("cancel %s: %w", id, err)
		}
		var n int
		switch loc.where {
		case locReady, locDelayed, locFair:
			if loc.envErr != nil {
				return q.errorf("cancel %s: %w", id, loc.envErr)
			}
			if strings.HasPrefix(id, cronPrefix) {
				return q.errorf("cancel %s: a pending occurrence of a schedule cannot be cancelled (it would end the schedule's chain); use Unschedule", id)
			}
			n, err = q.cancelWaiting(ctx, c, loc)
		case locRunning:
			n, err = q.cancelRunning(ctx, c, loc)
		case locDead:
			return q.errorf("cancel %s: %w: it is in the dead letters", id, ErrJobFinished)
		default:
			return q.cancelGone(ctx, id, loc.complete)
		}
		if err != nil {
			return q.errorf("cancel %s: %w", id, err)
		}
		if n > 0 {
			return nil
		}
		// The job moved between the lookup and the cancel (fetched,
		// promoted, retried, finished): look again.
	}
	return q.errorf("cancel %s: the job moved %d times while it was being cancelled; try again", id, locateTries)
}

// cancelWaiting removes a waiting job; 0 when its element moved.
func (q *Queue) cancelWaiting(ctx context.Context, c redis.Scripter, loc location) (int, error) {
	list, zset := q.k.readyAt(loc.env.level), "0"
	switch loc.where {
	case locDelayed:
		list, zset = q.k.delayed, "1"
	case locFair:
		list, zset = q.k.fair(), "2"
	}
	id := loc.env.id
	ks := []string{list, q.k.payloads, q.k.cancelMarker(id), q.k.resultWaiters(id), q.k.lastErr(id)}
	if loc.env.unique {
		ks = append(ks, q.k.unique(id))
	}
	if loc.where == locFair || loc.where == locDelayed {
		ks = append(ks, q.k.partKeys()...)
	}
	ks = append(ks, q.k.waitersKey(), q.k.partWaiters())
	return cancelWaitingScript.Run(ctx, c, ks, loc.elem, zset, loc.env.ref, markerValue(loc.env),
		cancelTTL.Milliseconds(), q.k.doneChannel(), id, q.k.roomChannel()).Int()
}

// cancelRunning records the cancel of a running job and sends it to its
// consumer; 0 when the job left the consumer's processing list.
func (q *Queue) cancelRunning(ctx context.Context, c redis.Scripter, loc location) (int, error) {
	if loc.envErr != nil {
		return 0, loc.envErr
	}
	id := loc.env.id
	msg := q.name + " " + id + " " + markerValue(loc.env)
	return cancelRunningScript.Run(ctx, c, []string{q.k.proc(loc.consumer), q.k.cancelMarker(id), q.k.runCancel(id, markerValue(loc.env))},
		loc.elem, markerValue(loc.env), cancelTTL.Milliseconds(), controlChannel(q.cfg.Namespace, loc.consumer), msg).Int()
}

// cancelGone answers Cancel of a job found nowhere.
func (q *Queue) cancelGone(ctx context.Context, id string, complete bool) error {
	pipe := q.p.Client().Pipeline()
	res := pipe.Exists(ctx, q.k.result(id))
	mark := pipe.Exists(ctx, q.k.cancelMarker(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return q.errorf("cancel %s: %w", id, err)
	}
	switch {
	case mark.Val() == 1:
		return nil // cancelled already
	case res.Val() == 1:
		return q.errorf("cancel %s: %w: it succeeded", id, ErrJobFinished)
	case !complete:
		return q.errorf("cancel %s: %w", id, ErrLookupIncomplete)
	}
	return q.errorf("cancel %s: %w", id, ErrJobNotFound)
}

// markerValue names one run of a job in its cancel marker and message: its
// enqueue time, which a retry or a recovery keeps and a new job with the
// same ID does not share (to the millisecond).
func markerValue(e envelope) string { return strconv.FormatInt(e.enqueuedAt.UnixMilli(), 10) }
