package queue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnqueueOption changes one enqueued job.
type EnqueueOption func(*enqueueOpts) error

type enqueueOpts struct {
	at          time.Time // zero: now
	delay       time.Duration
	maxAttempts int
	timeout     time.Duration
	id          string
	durable     durability
	wait        bool // WaitForRoom
	// unique.go
	window        time.Duration // UniqueFor
	idFromPayload bool
	debounce      debounceMode
	deadline      time.Time

	headers []header // Header, Headers; in the order set
	typ     string   // Type (typed.go)
	part    string   // Partition (parts.go)
	pweight int      // PartitionWeight (parts.go); 0: none given
	level   int      // Priority (levels.go)
}

// Delay makes the job ready d from now. d <= 0 means now.
func Delay(d time.Duration) EnqueueOption {
	return func(o *enqueueOpts) error { o.delay, o.at = d, time.Time{}; return nil }
}

// At makes the job ready at t; a t in the past means now. t must be before
// the year 10000.
func At(t time.Time) EnqueueOption {
	return func(o *enqueueOpts) error {
		if !t.Before(maxDue) {
			return fmt.Errorf("queue: At(%s): must be before the year 10000", t)
		}
		o.at, o.delay = t, 0
		return nil
	}
}

// maxDue bounds due times, so that every due time and idempotency-key TTL
// is a valid Redis score and expiry (and far from float64's 2^53 ms).
var maxDue = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)

// maxCount bounds the counts an envelope holds (attempts, max attempts,
// deliveries): the decoder accepts up to it, and the API refuses more.
const maxCount = math.MaxInt32

// MaxAttempts sets how many times the job may run before it goes to the dead
// letters (1 <= n <= 2^31-1; 1 means no retry). The default is Config.MaxAttempts.
func MaxAttempts(n int) EnqueueOption {
	return func(o *enqueueOpts) error {
		if n < 1 {
			return fmt.Errorf("queue: MaxAttempts(%d): must be at least 1", n)
		}
		if n > maxCount {
			return fmt.Errorf("queue: MaxAttempts(%d): must be at most %d", n, maxCount)
		}
		o.maxAttempts = n
		return nil
	}
}

// Timeout bounds one run of the job: the handler's context is cancelled
// after d. The default is WorkerConfig.JobTimeout.
func Timeout(d time.Duration) EnqueueOption {
	return func(o *enqueueOpts) error {
		if d <= 0 {
			return fmt.Errorf("queue: Timeout(%s): must be positive", d)
		}
		if d < time.Millisecond {
			return fmt.Errorf("queue: Timeout(%s): the resolution is one millisecond", d)
		}
		o.timeout = d
		return nil
	}
}

// ID gives the job its ID and makes the enqueue idempotent: while a job with
// this ID exists (ready, delayed, retrying or running), another enqueue with
// the same ID adds nothing and returns ErrDuplicate. The ID is free again
// once the job has succeeded or gone to the dead letters, and at the latest
// Config.UniqueTTL after the job's due time; a job whose key lapsed does
// not free the key of a newer job with the ID. A later job with the ID that
// dies too does not replace the first one's dead letter: both are kept
// (see DeadJob.ID). IDs are printable ASCII without
// spaces, '|', '{' or '}', at most 200 bytes, and do not start with
// "cron:" (the occurrences of schedules).
func ID(id string) EnqueueOption {
	return func(o *enqueueOpts) error {
		if err := validID(id); err != nil {
			return fmt.Errorf("queue: ID: %w", err)
		}
		if strings.HasPrefix(id, cronPrefix) {
			return fmt.Errorf("queue: ID %q: the prefix %q is reserved for the occurrences of schedules", id, cronPrefix)
		}
		o.id = id
		return nil
	}
}

// ErrNotReplicated: an Enqueue with the Durable option wrote the job, but
// fewer replicas than asked acknowledged it within the timeout. The job is
// on the master and is run, unless a failover loses it first (see Durable).
var ErrNotReplicated = errors.New("queue: job not acknowledged by enough replicas")

// durability is the Durable option; replicas 0: not asked for.
type durability struct {
	replicas int
	timeout  time.Duration
}

// invalidOption marks err, an option's refusal of its value or of the
// options it is combined with, as matching ErrInvalidArgument, without
// changing its message. Every place that applies options (prepare,
// batchOptions, scheduleDef) passes their errors through it, so a new
// option's error matches without remembering to wrap. nil stays nil; an
// error matching ErrInvalidArgument already is returned as it is.
func invalidOption(err error) error {
	if err == nil || errors.Is(err, ErrInvalidArgument) {
		return err
	}
	return &invalidOptionError{err}
}

type invalidOptionError struct{ err error }

func (e *invalidOptionError) Error() string   { return e.err.Error() }
func (e *invalidOptionError) Unwrap() []error { return []error{e.err, ErrInvalidArgument} }

// Durable makes Enqueue wait, after writing the job and on the same
// connection (Redis WAIT), until replicas replicas have it or timeout has
// passed. Redis replication is asynchronous, so a master that fails over
// can lose a job it acknowledged; with Durable, a nil error means the job
// reached that many replicas, and ErrNotReplicated (the job's ID returned
// with it) means it is on the master but may not survive a failover. A
// caller that must not lose it enqueues it again (with the ID option, that
// answers ErrDuplicate while the first one still exists); either way a job
// runs at least once.
//
// It costs one WAIT in the same round trip as the write: Enqueue returns
// when the replicas acknowledge (about one more round trip to them), or
// after timeout. Keep timeout well under the pool's ReadTimeout. replicas
// is at least 1 and timeout at least 1ms. EnqueueBatch refuses the option,
// and so does a pool on Redis Cluster, where go-redis cannot send WAIT on
// the write's connection. A Durable job keeps its payload in its element
// whatever its size (a payload over 4 KiB is otherwise written apart, in a
// MULTI that cannot share the WAIT's pipeline).
func Durable(replicas int, timeout time.Duration) EnqueueOption {
	return func(o *enqueueOpts) error {
		if replicas < 1 {
			return fmt.Errorf("queue: Durable(%d, %s): replicas must be at least 1", replicas, timeout)
		}
		if timeout < time.Millisecond {
			return fmt.Errorf("queue: Durable(%d, %s): timeout must be at least 1ms (WAIT 0 would wait for ever)", replicas, timeout)
		}
		o.durable = durability{replicas: replicas, timeout: timeout}
		return nil
	}
}

// enqueueDurable is Enqueue with the Durable option: the write Enqueue
// would send, then WAIT, in one pipeline, so both run on one connection.
func (q *Queue) enqueueDurable(ctx context.Context, pr prepared) (string, error) {
	if q.p.IsCluster() {
		return "", q.errorf("enqueue: %w", invalidOption(errors.New("the Durable option is not supported on Redis Cluster (WAIT must run on the write's connection)")))
	}
	write, wait := q.sendDurable(ctx, pr, false)
	if redis.HasErrorPrefix(write.Err(), "NOSCRIPT") {
		// Nothing was written: EVALSHA found no script. Send the script.
		write, wait = q.sendDurable(ctx, pr, true)
	}
	if err := write.Err(); err != nil {
		return "", q.errorf("enqueue: %w", err)
	}
	added, err := q.durableAdded(write, pr)
	if err != nil {
		return "", q.errorf("enqueue: %w", err)
	}
	if !added {
		return pr.id, q.errorf("enqueue %s: %w", pr.id, ErrDuplicate)
	}
	if !pr.due.IsZero() && !q.bounded() && pr.part == "" { // boundedReply and partReply told them
		q.notifyDelayed(pr.due)
	}
	return pr.id, q.replicated(pr, wait)
}

// sendDurable sends the write and the WAIT in one pipeline; with eval, the
// scripts go as EVAL instead of EVALSHA. Each command keeps its own
// outcome.
func (q *Queue) sendDurable(ctx context.Context, pr prepared, eval bool) (write redis.Cmder, wait *redis.Cmd) {
	pipe := q.p.Client().Pipeline()
	run := func(s *redis.Script, keys []string, args ...any) redis.Cmder {
		if eval {
			return s.Eval(ctx, pipe, keys, args...)
		}
		return s.EvalSha(ctx, pipe, keys, args...)
	}
	switch {
	case pr.part != "": // the payload is inline: no MULTI (parts.go)
		ks, args, _ := q.partArgs([]prepared{pr}, q.partBounds(false))
		write = run(partEnqueueScript, ks, args...)
	case q.bounded(): // the payload is inline: no MULTI
		ks, args, _ := q.boundedArgs([]prepared{pr}, false)
		write = run(boundedScript, ks, args...)
	case pr.due.IsZero() && !pr.unique:
		write = run(pushScript, []string{q.k.readyAt(pr.level), q.k.bell}, pr.elem)
	case pr.due.IsZero():
		write = run(enqueueUniqueScript, q.uniqueKeys(pr), pr.elem, q.uniqueTTL(pr.due))
	default:
		ks, args := q.scheduleArgs(pr)
		write = run(scheduleScript, ks, args...)
	}
	wait = pipe.Do(ctx, "WAIT", pr.durable.replicas, pr.durable.timeout.Milliseconds())
	_, _ = pipe.Exec(ctx)
	return write, wait
}

// durableAdded reads a durable write's reply: added is false for a
// duplicate.
func (q *Queue) durableAdded(write redis.Cmder, pr prepared) (added bool, err error) {
	if pr.part != "" {
		res, err := q.partReply(write.(*redis.Cmd), []prepared{pr})
		if err != nil {
			return false, err
		}
		return res[0], nil
	}
	if q.bounded() {
		res, err := q.boundedReply(write.(*redis.Cmd), []prepared{pr})
		if err != nil {
			return false, err
		}
		return res[0], nil
	}
	if ic, ok := write.(*redis.Cmd); ok {
		if n, err := ic.Int(); err == nil && n == 0 {
			return false, nil
		}
	}
	return true, nil
}

// replicated reads the WAIT of a durable write: an error unless enough
// replicas acknowledged it in time.
func (q *Queue) replicated(pr prepared, wait *redis.Cmd) error {
	d := pr.durable
	acked, werr := wait.Int()
	switch {
	case werr != nil:
		return q.errorf("enqueue %s: %w: the job is written, WAIT failed: %w", pr.id, ErrNotReplicated, werr)
	case acked < d.replicas:
		return q.errorf("enqueue %s: %w: %d of %d replicas within %s", pr.id, ErrNotReplicated, acked, d.replicas, d.timeout)
	}
	return nil
}
