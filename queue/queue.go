package queue

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/pool"
)

// Defaults filled in by New for zero fields of Config.
const (
	DefaultNamespace        = "bq"
	DefaultMaxPayload       = 1 << 20
	DefaultMaxAttempts      = 5
	DefaultDeadLetterMax    = 10_000
	DefaultDeadLetterMaxAge = 7 * 24 * time.Hour
	DefaultMaxBatch         = 10_000
	DefaultMaxBatchBytes    = 16 << 20
	DefaultUniqueTTL        = 24 * time.Hour
)

// wakeTTL bounds how long a wake marker suppresses the next one, in case the
// process that took it died before its scheduler acted on it.
const wakeTTL = 10 * time.Second

// Config configures a Queue. The zero value is useful: New fills in the
// defaults documented on each field.
type Config struct {
	// Namespace prefixes every key: "{<Namespace>:<queue name>}:...".
	// Default "bq".
	Namespace string
	// MaxPayload is the largest payload Enqueue accepts, in bytes; larger
	// ones fail with ErrPayloadTooLarge. Default 1 MiB.
	MaxPayload int
	// MaxAttempts is how many times a job runs before it goes to the dead
	// letters, unless the MaxAttempts option says otherwise. Default 5.
	MaxAttempts int
	// DeadLetterMax and DeadLetterMaxAge bound the dead letters: older and
	// surplus entries are trimmed whenever one is added. Defaults 10,000 and
	// 7 days.
	DeadLetterMax    int
	DeadLetterMaxAge time.Duration
	// MaxBatch and MaxBatchBytes bound one EnqueueBatch, which is one
	// atomic command. Defaults 10,000 jobs and 16 MiB.
	MaxBatch      int
	MaxBatchBytes int
	// UniqueTTL bounds how long an ID given with the ID option stays taken
	// after the job's due time, should the job vanish without completing
	// (someone deleted keys by hand). Default 24h.
	UniqueTTL time.Duration
	// Logger receives what goes wrong in the background. Nil discards.
	Logger *slog.Logger
	// Now is the clock for due times and timestamps. Nil means time.Now.
	// Processes sharing a queue should have clocks within a fraction of a
	// second of each other (NTP): delayed jobs run by the clock of the
	// process that promotes them.
	Now func() time.Time
}

func (c *Config) fill() error {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	var errs []error
	set := func(v *int, def int, field string) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			errs = append(errs, fmt.Errorf("queue: Config.%s must not be negative, got %d", field, *v))
		}
	}
	set(&c.MaxPayload, DefaultMaxPayload, "MaxPayload")
	set(&c.MaxAttempts, DefaultMaxAttempts, "MaxAttempts")
	set(&c.DeadLetterMax, DefaultDeadLetterMax, "DeadLetterMax")
	set(&c.MaxBatch, DefaultMaxBatch, "MaxBatch")
	set(&c.MaxBatchBytes, DefaultMaxBatchBytes, "MaxBatchBytes")
	setD := func(v *time.Duration, def time.Duration, field string) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			errs = append(errs, fmt.Errorf("queue: Config.%s must not be negative, got %s", field, *v))
		}
	}
	setD(&c.DeadLetterMaxAge, DefaultDeadLetterMaxAge, "DeadLetterMaxAge")
	setD(&c.UniqueTTL, DefaultUniqueTTL, "UniqueTTL")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := checkName("Config.Namespace", c.Namespace); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Queue is a named job queue in Redis. Producers use it to enqueue; a Worker
// built on it consumes.
//
// A Queue has no useful zero value; build it with New. It is safe for
// concurrent use and holds no resources of its own (the pool does), so it
// needs no closing.
type Queue struct {
	p    *pool.Pool
	name string
	cfg  Config
	k    keys

	mu      sync.Mutex
	workers []*Worker // workers of this queue running in this process
}

// New returns the queue called name, stored in the Redis behind p. It does
// not talk to Redis. The name is part of every key; it must not contain
// spaces, '{' or '}'.
func New(p *pool.Pool, name string, cfg Config) (*Queue, error) {
	if p == nil {
		return nil, errors.New("queue: New: nil pool")
	}
	if err := checkName("name", name); err != nil {
		return nil, err
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	return &Queue{p: p, name: name, cfg: cfg, k: newKeys(cfg.Namespace, name)}, nil
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

func (q *Queue) errorf(format string, args ...any) error {
	return fmt.Errorf("queue %q: "+format, append([]any{q.name}, args...)...)
}

// newID returns a job ID: the time in milliseconds, then 64 random bits, in
// hex, so IDs sort roughly by creation time.
func newID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	r := rand.Uint64()
	for i := 0; i < 8; i++ {
		b[7-i] = byte(ms >> (8 * i))
		b[15-i] = byte(r >> (8 * i))
	}
	return hex.EncodeToString(b[2:]) // 6 bytes of time are enough until the year 10889
}

// prepared is one job ready to be written.
type prepared struct {
	id      string
	elem    []byte
	due     time.Time // zero: now
	unique  bool
	durable durability // the Durable option
}

func (q *Queue) prepare(payload []byte, opts []EnqueueOption) (prepared, error) {
	var o enqueueOpts
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return prepared{}, err
		}
	}
	if len(payload) > q.cfg.MaxPayload {
		return prepared{}, fmt.Errorf("%w: %d bytes, the limit is %d (Config.MaxPayload)", ErrPayloadTooLarge, len(payload), q.cfg.MaxPayload)
	}
	now := q.cfg.Now()
	pr := prepared{id: o.id, unique: o.id != "", durable: o.durable}
	if pr.id == "" {
		pr.id = newID(now)
	}
	switch {
	case !o.at.IsZero() && o.at.After(now):
		pr.due = o.at
	case o.delay > 0:
		pr.due = now.Add(o.delay)
	}
	if !pr.due.IsZero() {
		// Due times have millisecond resolution in Redis; round up so a
		// job never starts before the time it was given.
		pr.due = pr.due.Add(time.Millisecond - 1).Truncate(time.Millisecond)
	}
	maxAttempts := o.maxAttempts
	if maxAttempts == 0 {
		maxAttempts = q.cfg.MaxAttempts
	}
	e := envelope{id: pr.id, maxAttempts: maxAttempts, enqueuedAt: now, timeout: o.timeout, unique: pr.unique, payload: payload}
	pr.elem = e.encode()
	return pr, nil
}

func (q *Queue) uniqueTTL(due time.Time) int64 {
	ttl := q.cfg.UniqueTTL
	if !due.IsZero() {
		ttl += due.Sub(q.cfg.Now())
	}
	return ttl.Milliseconds()
}

// Enqueue adds a job and returns its ID. A plain job costs one LPUSH; a
// delayed job or one with an ID, one script call. The payload is copied.
//
// Errors: ErrPayloadTooLarge (nothing written), ErrDuplicate when the ID
// option names a job that still exists (nothing written; the ID is
// returned), option errors, and the pool's errors (pool.ErrLaneExhausted,
// pool.ErrUnavailable) or Redis's.
func (q *Queue) Enqueue(ctx context.Context, payload []byte, opts ...EnqueueOption) (string, error) {
	pr, err := q.prepare(payload, opts)
	if err != nil {
		return "", q.errorf("enqueue: %w", err)
	}
	if pr.durable.replicas > 0 {
		return q.enqueueDurable(ctx, pr)
	}
	c := q.p.Client()
	switch {
	case pr.due.IsZero() && !pr.unique:
		err = c.LPush(ctx, q.k.ready, pr.elem).Err()
	case pr.due.IsZero():
		var n int
		n, err = enqueueUniqueScript.Run(ctx, c, []string{q.k.ready, q.k.unique(pr.id)}, pr.elem, q.uniqueTTL(pr.due)).Int()
		if err == nil && n == 0 {
			return pr.id, q.errorf("enqueue %s: %w", pr.id, ErrDuplicate)
		}
	default:
		ks := []string{q.k.delayed, q.k.ready, q.k.wake}
		args := []any{pr.due.UnixMilli(), pr.elem, wakeMarker, wakeTTL.Milliseconds()}
		if pr.unique {
			ks = append(ks, q.k.unique(pr.id))
			args = append(args, q.uniqueTTL(pr.due))
		}
		var n int
		n, err = scheduleScript.Run(ctx, c, ks, args...).Int()
		if err == nil && n == 0 {
			return pr.id, q.errorf("enqueue %s: %w", pr.id, ErrDuplicate)
		}
		if err == nil {
			q.notifyDelayed(pr.due)
		}
	}
	if err != nil {
		return "", q.errorf("enqueue: %w", err)
	}
	return pr.id, nil
}

// EnqueueBatch adds many jobs in one atomic command (one LPUSH when no job
// is delayed or has an ID, one script call otherwise): all of them are
// written or none. Every option applies to every job; an ID option is
// refused (each job needs its own ID; use Enqueue). It returns the IDs in
// order.
//
// A batch over Config.MaxBatch jobs or Config.MaxBatchBytes bytes fails with
// ErrBatchTooLarge, and one payload over the limit with ErrPayloadTooLarge
// naming its index; nothing is written in either case.
func (q *Queue) EnqueueBatch(ctx context.Context, payloads [][]byte, opts ...EnqueueOption) ([]string, error) {
	if len(payloads) == 0 {
		return nil, nil
	}
	if len(payloads) > q.cfg.MaxBatch {
		return nil, q.errorf("enqueue batch: %w: %d jobs, the limit is %d (Config.MaxBatch)", ErrBatchTooLarge, len(payloads), q.cfg.MaxBatch)
	}
	var probe enqueueOpts
	for _, opt := range opts {
		if opt != nil {
			if err := opt(&probe); err != nil {
				return nil, q.errorf("enqueue batch: %w", err)
			}
		}
	}
	if probe.id != "" {
		return nil, q.errorf("enqueue batch: the ID option cannot apply to a batch; enqueue jobs with IDs one by one")
	}
	if probe.durable.replicas > 0 {
		return nil, q.errorf("enqueue batch: the Durable option applies to Enqueue only")
	}
	ids := make([]string, len(payloads))
	elems := make([]any, len(payloads))
	total := 0
	var due time.Time
	for i, pl := range payloads {
		pr, err := q.prepare(pl, opts)
		if err != nil {
			return nil, q.errorf("enqueue batch: job %d: %w", i, err)
		}
		total += len(pr.elem)
		if total > q.cfg.MaxBatchBytes {
			return nil, q.errorf("enqueue batch: %w: more than %d bytes (Config.MaxBatchBytes)", ErrBatchTooLarge, q.cfg.MaxBatchBytes)
		}
		ids[i], elems[i], due = pr.id, pr.elem, pr.due
	}
	c := q.p.Client()
	if due.IsZero() {
		if err := c.LPush(ctx, q.k.ready, elems...).Err(); err != nil {
			return nil, q.errorf("enqueue batch: %w", err)
		}
		return ids, nil
	}
	args := make([]any, 0, 3+3*len(elems))
	args = append(args, wakeMarker, wakeTTL.Milliseconds(), int64(0))
	dueMs := due.UnixMilli()
	for _, e := range elems {
		args = append(args, dueMs, e, 0)
	}
	if err := enqueueManyScript.Run(ctx, c, []string{q.k.ready, q.k.delayed, q.k.wake}, args...).Err(); err != nil {
		return nil, q.errorf("enqueue batch: %w", err)
	}
	q.notifyDelayed(due)
	return ids, nil
}

// notifyDelayed tells this process's workers of the queue about a delayed
// job, so their scheduler wakes for it without waiting for the marker.
func (q *Queue) notifyDelayed(due time.Time) {
	q.mu.Lock()
	ws := q.workers
	q.mu.Unlock()
	for _, w := range ws {
		w.sched.wakeFor(due)
	}
}

func (q *Queue) addWorker(w *Worker) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.workers = append(q.workers, w)
}

func (q *Queue) removeWorker(w *Worker) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.workers {
		if x == w {
			q.workers = append(q.workers[:i:i], q.workers[i+1:]...)
			return
		}
	}
}

// Stats describes a queue. The counts come from Redis at the time of the
// call; Local describes this process's worker, if one runs.
type Stats struct {
	Ready     int64        `json:"ready"`
	Delayed   int64        `json:"delayed"`   // delayed and waiting to retry
	InFlight  int64        `json:"in_flight"` // fetched and not yet acked, by any consumer
	Dead      int64        `json:"dead"`
	Consumers int          `json:"consumers"` // consumers with a processing list
	Local     *WorkerStats `json:"local,omitempty"`
}

// Stats reads the queue's counts from Redis (two round trips through the
// request lane) and adds this process's worker counters.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	c := q.p.Client()
	var s Stats
	pipe := c.Pipeline()
	ready := pipe.LLen(ctx, q.k.ready)
	delayed := pipe.ZCard(ctx, q.k.delayed)
	dead := pipe.ZCard(ctx, q.k.deadIdx)
	consumers := pipe.SMembers(ctx, q.k.consumers)
	if _, err := pipe.Exec(ctx); err != nil {
		return s, q.errorf("stats: %w", err)
	}
	s.Ready, s.Delayed, s.Dead = ready.Val(), delayed.Val(), dead.Val()
	if ids := consumers.Val(); len(ids) > 0 {
		pipe := c.Pipeline()
		lens := make([]*redis.IntCmd, len(ids))
		for i, id := range ids {
			lens[i] = pipe.LLen(ctx, q.k.proc(id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return s, q.errorf("stats: %w", err)
		}
		for _, l := range lens {
			s.InFlight += l.Val()
		}
		s.Consumers = len(ids)
	}
	// The ready list may hold a wake marker, which is not a job.
	if s.Ready > 0 {
		if last, err := c.LIndex(ctx, q.k.ready, -1).Result(); err == nil && last == wakeMarker {
			s.Ready--
		}
	}
	q.mu.Lock()
	ws := q.workers
	q.mu.Unlock()
	if len(ws) > 0 {
		ls := ws[0].Stats()
		s.Local = &ls
	}
	return s, nil
}

// DeadJob is a job in the dead letters.
type DeadJob struct {
	ID          string    `json:"id"`
	Payload     []byte    `json:"payload"`
	Reason      string    `json:"reason"` // the last error, or why the job could not run
	Attempts    int       `json:"attempts"`
	MaxAttempts int       `json:"max_attempts"`
	Deliveries  int       `json:"deliveries"` // times recovered from a dead consumer
	EnqueuedAt  time.Time `json:"enqueued_at"`
	DiedAt      time.Time `json:"died_at"`
	// Malformed is set when the element in Redis did not decode; Payload
	// then holds the raw element and the job cannot be requeued.
	Malformed bool `json:"malformed"`
}

// deadRecord is what the dead letters store per job.
type deadRecord struct {
	Reason   string `json:"reason"`
	DiedMs   int64  `json:"died_ms"`
	Attempts int    `json:"attempts"`
	Element  []byte `json:"element"`
}

func (r deadRecord) job(id string) DeadJob {
	d := DeadJob{ID: id, Reason: r.Reason, DiedAt: time.UnixMilli(r.DiedMs), Attempts: r.Attempts}
	e, err := decodeEnvelope(r.Element)
	if err != nil {
		d.Malformed, d.Payload = true, r.Element
		return d
	}
	d.Payload, d.MaxAttempts, d.Deliveries, d.EnqueuedAt = e.payload, e.maxAttempts, e.deliveries, e.enqueuedAt
	return d
}

// Dead lists dead jobs, newest first, skipping offset and returning at most
// limit (1..1000).
func (q *Queue) Dead(ctx context.Context, offset, limit int) ([]DeadJob, error) {
	if offset < 0 || limit < 1 || limit > 1000 {
		return nil, q.errorf("dead: offset must be >= 0 and limit in 1..1000, got %d and %d", offset, limit)
	}
	c := q.p.Client()
	ids, err := c.ZRevRange(ctx, q.k.deadIdx, int64(offset), int64(offset+limit-1)).Result()
	if err != nil || len(ids) == 0 {
		if err != nil {
			err = q.errorf("dead: %w", err)
		}
		return nil, err
	}
	vals, err := c.HMGet(ctx, q.k.deadData, ids...).Result()
	if err != nil {
		return nil, q.errorf("dead: %w", err)
	}
	out := make([]DeadJob, 0, len(ids))
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // trimmed between the two reads
		}
		var r deadRecord
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			out = append(out, DeadJob{ID: ids[i], Malformed: true, Payload: []byte(s), Reason: "unreadable dead record: " + err.Error()})
			continue
		}
		out = append(out, r.job(ids[i]))
	}
	return out, nil
}

// Requeue moves dead jobs back to the ready list with a fresh set of
// attempts. It returns how many moved; IDs that are not dead, or whose
// element is malformed, are reported in the error (ErrNotFound).
func (q *Queue) Requeue(ctx context.Context, ids ...string) (int, error) {
	c := q.p.Client()
	moved := 0
	var errs []error
	for _, id := range ids {
		s, err := c.HGet(ctx, q.k.deadData, id).Result()
		if errors.Is(err, redis.Nil) {
			errs = append(errs, fmt.Errorf("%w: %s", ErrNotFound, id))
			continue
		}
		if err != nil {
			return moved, q.errorf("requeue %s: %w", id, err)
		}
		var r deadRecord
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			errs = append(errs, fmt.Errorf("requeue %s: unreadable dead record: %w", id, err))
			continue
		}
		e, err := decodeEnvelope(r.Element)
		if err != nil {
			errs = append(errs, fmt.Errorf("requeue %s: %w", id, err))
			continue
		}
		// A fresh start; the idempotency key was released when the job died
		// and is not taken again.
		e.attempt, e.deliveries, e.unique = 0, 0, false
		n, err := requeueDeadScript.Run(ctx, c, []string{q.k.deadIdx, q.k.deadData, q.k.ready}, id, e.encode()).Int()
		if err != nil {
			return moved, q.errorf("requeue %s: %w", id, err)
		}
		if n == 0 {
			errs = append(errs, fmt.Errorf("%w: %s", ErrNotFound, id))
			continue
		}
		moved++
	}
	if len(errs) > 0 {
		return moved, q.errorf("requeue: %w", errors.Join(errs...))
	}
	return moved, nil
}

// Purge deletes every dead job and returns how many there were.
func (q *Queue) Purge(ctx context.Context) (int, error) {
	pipe := q.p.Client().TxPipeline()
	n := pipe.ZCard(ctx, q.k.deadIdx)
	pipe.Del(ctx, q.k.deadIdx, q.k.deadData)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, q.errorf("purge: %w", err)
	}
	return int(n.Val()), nil
}

// deadArgs builds the KEYS and ARGV of deadScript for one job.
func (q *Queue) deadArgs(procKey string, old []byte, id, reason string, attempts int, unique bool, element []byte) ([]string, []any) {
	now := q.cfg.Now()
	rec, _ := json.Marshal(deadRecord{Reason: truncate(reason, 8<<10), DiedMs: now.UnixMilli(), Attempts: attempts, Element: element})
	ks := []string{procKey, q.k.deadIdx, q.k.deadData}
	if unique {
		ks = append(ks, q.k.unique(id))
	}
	var oldArg any = ""
	if old != nil {
		oldArg = old
	}
	return ks, []any{oldArg, id, rec, now.UnixMilli(), q.cfg.DeadLetterMax, now.Add(-q.cfg.DeadLetterMaxAge).UnixMilli()}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "... (truncated)"
}

// deadIDFor names a dead entry. A decodable job keeps its ID; a malformed
// element gets one derived from the time.
func deadIDFor(now time.Time, e *envelope) string {
	if e != nil {
		return e.id
	}
	return "malformed-" + strconv.FormatInt(now.UnixNano(), 36) + "-" + strconv.FormatUint(rand.Uint64()%1e9, 36)
}
