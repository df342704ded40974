package queue

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/pool"
)

// wakeTTL bounds how long a wake marker suppresses the next one, in case the
// process that took it died before its scheduler acted on it.
const wakeTTL = 10 * time.Second

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

	loaded atomic.Bool // the scripts run inside a MULTI are in Redis's script cache (ensureScripts)

	refused atomic.Uint64           // enqueues this process saw refused as full (MaxLen)
	startMu sync.Mutex              // serializes Start
	room    atomic.Pointer[waiters] // set by Start: producers waiting for room
	recheck time.Duration           // roomRecheck; tests lengthen it

	seen atomic.Int64 // unix ms this process last noted the queue in the namespace's registry (registry.go)

	lookupBound int // tests: the bounds of findJobScript instead of lookupElems and lookupScan
}

// New returns the queue called name, stored in the Redis behind p. It does
// not talk to Redis. The name is part of every key; it must not contain
// spaces, '{' or '}'. An invalid name or config fails with an error
// wrapping ErrInvalidConfig.
func New(p *pool.Pool, name string, cfg Config) (*Queue, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: New: nil pool", ErrInvalidConfig)
	}
	e := check.New(ErrInvalidConfig)
	e.Add(check.Name("name", name))
	cfg, err := cfg.withDefaults()
	if err := errors.Join(e.Err(), err); err != nil {
		return nil, err
	}
	return &Queue{p: p, name: name, cfg: cfg, k: newKeys(cfg.Namespace, name), recheck: roomRecheck}, nil
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// Namespace returns the queue's namespace (Config.Namespace, filled in):
// two queues of one name in two namespaces are two queues, which metrics
// and logs keep apart by it.
func (q *Queue) Namespace() string { return q.cfg.Namespace }

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
	id       string
	elem     []byte
	due      time.Time // zero: now
	unique   bool
	ref      string       // the payload goes to the payloads hash under ref
	payload  []byte       // with a ref
	durable  durability   // the Durable option
	wait     bool         // the WaitForRoom option
	debounce debounceMode // Debounce, ReplacePayload
	part     string       // the Partition option (parts.go)
	pweight  int          // the PartitionWeight option, 0 when not given (the partition keeps its weight)
	level    int          // Priority
}

// newRef names a payload kept apart: 64 random bits, fresh for each
// enqueue, so a reused job ID never shares one.
func newRef() string {
	return strconv.FormatUint(rand.Uint64(), 36)
}

func (q *Queue) prepare(payload []byte, opts []EnqueueOption) (prepared, error) {
	var o enqueueOpts
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return prepared{}, invalidOption(err)
		}
	}
	if err := checkPartition(&o); err != nil {
		return prepared{}, invalidOption(err)
	}
	if len(payload) > q.cfg.MaxPayload {
		return prepared{}, fmt.Errorf("%w: %d bytes, the limit is %d (Config.MaxPayload)", ErrPayloadTooLarge, len(payload), q.cfg.MaxPayload)
	}
	now := q.cfg.Now()
	var due time.Time
	switch {
	case !o.at.IsZero() && o.at.After(now):
		due = o.at
	case o.delay > 0:
		due = now.Add(o.delay)
	}
	if !due.IsZero() {
		// Due times have millisecond resolution in Redis; round up so a
		// job never starts before the time it was given.
		due = due.Add(time.Millisecond - 1).Truncate(time.Millisecond)
		if !due.Before(maxDue) {
			return prepared{}, invalidOption(fmt.Errorf("queue: Delay(%s): the job would be due after the year 9999", o.delay))
		}
	}
	if err := q.applyUnique(&o, payload, due, now); err != nil {
		return prepared{}, invalidOption(err)
	}
	pr := prepared{id: o.id, unique: o.id != "", durable: o.durable, wait: o.wait, due: due, debounce: o.debounce, part: o.part, pweight: o.pweight, level: o.level}
	if pr.id == "" {
		pr.id = newID(now)
	}
	maxAttempts := o.maxAttempts
	if maxAttempts == 0 {
		maxAttempts = q.cfg.MaxAttempts
	}
	e := envelope{id: pr.id, maxAttempts: maxAttempts, enqueuedAt: now, timeout: o.timeout, unique: pr.unique, payload: payload,
		deadline: o.deadline, window: o.window, typ: o.typ, part: o.part, level: o.level}
	if len(o.headers) > 0 {
		var err error
		if e.headers, err = encodeHeaders(o.headers); err != nil {
			return prepared{}, invalidOption(err)
		}
	}
	// A Durable job keeps its payload inline whatever its size: its write
	// and the WAIT after it must be one pipeline on one connection, which
	// the MULTI that writes a payload apart is not. A debounced one too:
	// its idempotency key holds its element, to find it again.
	if len(payload) > inlineMax && o.durable.replicas == 0 && o.debounce == noDebounce {
		e.ref, e.payload = newRef(), nil
		pr.ref, pr.payload = e.ref, payload
	}
	pr.elem = e.encode()
	return pr, nil
}

// uniqueTTL is the PX of a job's idempotency key: UniqueTTL after its due
// time. It is computed in milliseconds, not as a Duration, which would
// saturate 292 years ahead and overflow when UniqueTTL is added; due times
// are before the year 10000, so it always fits.
func (q *Queue) uniqueTTL(due time.Time) int64 {
	ttl := max(q.cfg.UniqueTTL.Milliseconds(), 1)
	if !due.IsZero() {
		ttl += max(due.UnixMilli()-q.cfg.Now().UnixMilli(), 0)
	}
	return ttl
}

// Enqueue adds a job and returns its ID. A plain job costs one LPUSH; a
// delayed job, one with an ID or one with a payload over 4 KiB (stored apart
// from the element), one script call. The payload is copied.
//
// Errors: ErrPayloadTooLarge (nothing written), ErrDuplicate when the ID
// option names a job that still exists (nothing written; the ID is
// returned), option errors, and the pool's errors (pool.ErrLaneExhausted,
// pool.ErrUnavailable) or Redis's.
func (q *Queue) Enqueue(ctx context.Context, payload []byte, opts ...EnqueueOption) (string, error) {
	pr, err := q.prepare(payload, q.withHook(ctx, payload, opts))
	if err != nil {
		return "", q.errorf("enqueue: %w", err)
	}
	if pr.durable.replicas > 0 {
		id, err := q.enqueueDurable(ctx, pr)
		if err == nil {
			q.noteSeen(ctx)
		}
		return id, err
	}
	var added bool
	switch {
	case pr.debounce != noDebounce: // partitioned or not
		added, err = q.enqueueDebounced(ctx, pr)
	case pr.part != "":
		var res []bool
		if res, err = q.enqueueParts(ctx, []prepared{pr}, pr.wait); err == nil {
			added = res[0]
		}
	case q.bounded():
		added, err = q.enqueueOneBounded(ctx, pr)
	default:
		added, err = q.enqueueOne(ctx, q.p.Client(), pr)
	}
	if err != nil {
		return "", q.errorf("enqueue: %w", err)
	}
	if !added {
		return pr.id, q.errorf("enqueue %s: %w", pr.id, ErrDuplicate)
	}
	q.noteSeen(ctx) // the Inspector's registry: once per process and hour (registry.go)
	return pr.id, nil
}

// enqueueOneBounded is Enqueue on a bounded queue. added is false for a
// duplicate.
func (q *Queue) enqueueOneBounded(ctx context.Context, pr prepared) (added bool, err error) {
	res, err := q.waitingEnqueue(ctx, []prepared{pr}, pr.wait)
	if err != nil {
		return false, err
	}
	return res[0], nil
}

// enqueueOne is Enqueue on an unbounded queue: a job kept apart, a plain
// LPUSH, or a script call for a job with an ID or a due time. added is
// false for a duplicate.
func (q *Queue) enqueueOne(ctx context.Context, c redis.UniversalClient, pr prepared) (added bool, err error) {
	switch {
	case pr.ref != "":
		return q.enqueueApart(ctx, c, pr)
	case pr.due.IsZero() && !pr.unique:
		// LPUSH and the doorbell's ring in one script (3 commands, atomic):
		// see pushScript.
		return true, pushScript.Run(ctx, c, []string{q.k.readyAt(pr.level), q.k.bell}, pr.elem).Err()
	case pr.due.IsZero():
		n, err := enqueueUniqueScript.Run(ctx, c, q.uniqueKeys(pr), pr.elem, q.uniqueTTL(pr.due)).Int()
		return n != 0, err
	default:
		ks, args := q.scheduleArgs(pr)
		n, err := scheduleScript.Run(ctx, c, ks, args...).Int()
		if err != nil || n == 0 {
			return false, err
		}
		q.notifyDelayed(pr.due)
		return true, nil
	}
}

// uniqueKeys are the keys of enqueueUniqueScript.
func (q *Queue) uniqueKeys(pr prepared) []string {
	return append([]string{q.k.readyAt(pr.level), q.k.unique(pr.id), q.k.bell}, q.k.endKeys(pr.id)...)
}

// scheduleArgs are the keys and arguments of scheduleScript for a delayed
// job.
func (q *Queue) scheduleArgs(pr prepared) ([]string, []any) {
	ks := []string{q.k.delayed, q.k.ready, q.k.wake, q.k.bell}
	args := []any{pr.due.UnixMilli(), pr.elem, wakeMarker, wakeTTL.Milliseconds()}
	if pr.unique {
		ks = append(append(ks, q.k.unique(pr.id)), q.k.endKeys(pr.id)...)
		args = append(args, q.uniqueTTL(pr.due))
	}
	return ks, args
}

// enqueueApart writes a job whose payload is kept apart: the payload and the
// element in one MULTI (an HSET and a script call).
func (q *Queue) enqueueApart(ctx context.Context, c redis.UniversalClient, pr prepared) (bool, error) {
	// A job ready now goes to its level's list; a delayed one's ready list
	// is level 0's, where a wake marker goes (promoteLua routes the job).
	ready := q.k.ready
	if pr.due.IsZero() {
		ready = q.k.readyAt(pr.level)
	}
	ks, args := q.appendJob([]string{ready, q.k.delayed, q.k.wake, q.k.payloads, q.k.bell},
		[]any{wakeMarker, wakeTTL.Milliseconds(), q.uniqueTTL(pr.due)}, pr)
	res, err := q.runApart(ctx, c, enqueueManyScript, []prepared{pr}, ks, args...).Int64Slice()
	if err != nil {
		return false, err
	}
	if len(res) != 1 {
		return false, fmt.Errorf("enqueue script answered %v", res)
	}
	if res[0] == 1 && !pr.due.IsZero() {
		q.notifyDelayed(pr.due)
	}
	return res[0] == 1, nil
}

// appendJob appends pr to the KEYS and ARGV of an enqueue script, as they
// all read a job: its idempotency key (if any) and its end keys (keys.endKeys)
// to KEYS, and to ARGV its due time (unix ms, 0: now), element, the
// idempotency key's position in KEYS (0: none) and payload ref.
func (q *Queue) appendJob(ks []string, args []any, pr prepared) ([]string, []any) {
	u := 0
	if pr.unique {
		ks = append(ks, q.k.unique(pr.id))
		u = len(ks)
		ks = append(ks, q.k.endKeys(pr.id)...)
	}
	var dueMs int64
	if !pr.due.IsZero() {
		dueMs = pr.due.UnixMilli()
	}
	return ks, append(args, dueMs, pr.elem, u, pr.ref)
}

// runApart runs enqueueManyScript in a MULTI after an HSET of the payloads
// kept apart, so that they are written with a plain command (through Lua a
// payload costs ten times the server time). The script must be in Redis's
// cache: a NOSCRIPT inside the MULTI would leave the payloads behind, and
// Script.Run's EVAL fallback would send them twice. So it is loaded first
// (once per queue, and again after a NOSCRIPT: a restarted Redis).
func (q *Queue) runApart(ctx context.Context, c redis.UniversalClient, s *redis.Script, prs []prepared, ks []string, args ...any) *redis.Cmd {
	q.ensureScripts(ctx, c)
	run := func() *redis.Cmd {
		pipe := c.TxPipeline()
		for _, pr := range prs {
			if pr.ref != "" {
				pipe.HSet(ctx, q.k.payloads, pr.ref, pr.payload)
			}
		}
		cmd := s.EvalSha(ctx, pipe, ks, args...)
		_, _ = pipe.Exec(ctx)
		return cmd
	}
	var refs []string
	for _, pr := range prs {
		if pr.ref != "" {
			refs = append(refs, pr.ref)
		}
	}
	cmd := run()
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		// Take back the payloads the MULTI wrote without their jobs now,
		// before trying again: should the next try fail, they would stay
		// forever (their refs are this call's own, no job holds them).
		_ = c.HDel(ctx, q.k.payloads, refs...).Err()
		q.loaded.Store(false)
		q.ensureScripts(ctx, c)
		cmd = run()
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			_ = c.HDel(ctx, q.k.payloads, refs...).Err()
		}
	}
	return cmd
}

// EnqueueBatch adds many jobs in one atomic command (one LPUSH; for a
// delayed batch, or one with payloads over 4 KiB, one MULTI of plain
// commands): all of them are written or none. Every option applies to every job; an ID option is
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
	o, err := q.batchOptions(opts)
	if err != nil {
		return nil, err
	}
	b, err := q.prepareBatch(ctx, payloads, opts)
	if err != nil {
		return nil, err
	}
	if err := q.storeBatch(ctx, b, o.wait); err != nil {
		return nil, q.errorf("enqueue batch: %w", err)
	}
	q.noteSeen(ctx)
	return b.ids, nil
}

// batchRefuses is the refusal of options that apply to Enqueue only.
func batchRefuses(probe enqueueOpts) error {
	switch {
	case probe.id != "":
		return errors.New("the ID option cannot apply to a batch; enqueue jobs with IDs one by one")
	case probe.durable.replicas > 0:
		return errors.New("the Durable option applies to Enqueue only")
	case probe.idFromPayload:
		return errors.New("the IDFromPayload option applies to Enqueue only")
	case probe.window > 0:
		return errors.New("the UniqueFor option applies to Enqueue only (it needs an ID)")
	case probe.debounce != noDebounce:
		return errors.New("the Debounce and ReplacePayload options apply to Enqueue only")
	}
	return nil
}

// batchOptions applies opts once, to refuse those that cannot apply to a
// batch.
func (q *Queue) batchOptions(opts []EnqueueOption) (enqueueOpts, error) {
	var probe enqueueOpts
	for _, opt := range opts {
		if opt != nil {
			if err := opt(&probe); err != nil {
				return probe, q.errorf("enqueue batch: %w", invalidOption(err))
			}
		}
	}
	if err := batchRefuses(probe); err != nil {
		return probe, q.errorf("enqueue batch: %w", invalidOption(err))
	}
	return probe, nil
}

// batch is an EnqueueBatch's jobs, prepared.
type batch struct {
	ids   []string
	elems []any
	prs   []prepared
	due   time.Time // the same for every job
	level int       // the same for every job (Priority)
	apart bool      // some payloads are kept apart
}

// prepareBatch prepares every job, within Config.MaxBatchBytes.
func (q *Queue) prepareBatch(ctx context.Context, payloads [][]byte, opts []EnqueueOption) (batch, error) {
	b := batch{ids: make([]string, len(payloads)), elems: make([]any, len(payloads)), prs: make([]prepared, len(payloads))}
	total := 0
	for i, pl := range payloads {
		pr, err := q.prepare(pl, q.withHook(ctx, pl, opts))
		if err != nil {
			return batch{}, q.errorf("enqueue batch: job %d: %w", i, err)
		}
		total += len(pr.elem) + len(pr.payload)
		if total > q.cfg.MaxBatchBytes {
			return batch{}, q.errorf("enqueue batch: %w: more than %d bytes (Config.MaxBatchBytes)", ErrBatchTooLarge, q.cfg.MaxBatchBytes)
		}
		if i > 0 && pr.level != b.level {
			// Every option applies to every job of a batch, but should a
			// hook ever set the level: a batch goes to one ready list.
			return batch{}, q.errorf("enqueue batch: job %d: %w: Priority(%d), job 0 has Priority(%d): a batch has one level", i, ErrInvalidArgument, pr.level, b.level)
		}
		b.ids[i], b.elems[i], b.due, b.prs[i], b.level = pr.id, pr.elem, pr.due, pr, pr.level
		b.apart = b.apart || pr.ref != ""
	}
	return b, nil
}

// storeBatch writes a prepared batch: through the bounded path (waiting for
// room with wait), with one LPUSH, or with writeBatch.
func (q *Queue) storeBatch(ctx context.Context, b batch, wait bool) error {
	if b.prs[0].part != "" { // the option applies to every job
		_, err := q.enqueueParts(ctx, b.prs, wait)
		return err
	}
	if q.bounded() {
		_, err := q.waitingEnqueue(ctx, b.prs, wait)
		return err
	}
	c := q.p.Client()
	if b.due.IsZero() && !b.apart {
		// LPUSH and the doorbell's ring in one MULTI: atomic, and the
		// elements stay out of Lua.
		pipe := c.TxPipeline()
		push := pipe.LPush(ctx, q.k.readyAt(b.level), b.elems...)
		pipe.ZAdd(ctx, q.k.bell, redis.Z{Score: 0, Member: bellMember})
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		return push.Err()
	}
	if err := q.writeBatch(ctx, c, b); err != nil {
		return err
	}
	if !b.due.IsZero() {
		q.notifyDelayed(b.due)
	}
	return nil
}

// writeBatch writes a batch that is delayed or holds payloads kept apart in
// one MULTI of plain commands: an HSET of the payloads, an LPUSH or a ZADD
// of the elements, and for a delayed batch the wake script, which carries no
// job (through Lua the jobs would cost ten times the server time). A batch
// has no ID option, so nothing is conditional. A NOSCRIPT re-runs the MULTI
// once the scripts are loaded: every command in it is idempotent.
func (q *Queue) writeBatch(ctx context.Context, c redis.UniversalClient, b batch) error {
	prs, elems, due, ready := b.prs, b.elems, b.due, q.k.readyAt(b.level)
	q.ensureScripts(ctx, c)
	var refs []string
	var pays []any
	for _, pr := range prs {
		if pr.ref != "" {
			refs, pays = append(refs, pr.ref), append(pays, pr.ref, pr.payload)
		}
	}
	m, err := q.batchMulti(ctx, c, pays, elems, due, ready)
	if m.wake != nil && redis.HasErrorPrefix(m.wake.Err(), "NOSCRIPT") {
		q.loaded.Store(false)
		q.ensureScripts(ctx, c)
		m, err = q.batchMulti(ctx, c, pays, elems, due, ready)
	}
	if err != nil && m.hset != nil {
		q.undoBatch(ctx, c, m, refs, elems, due, ready)
	}
	return err
}

// batchWrite is the commands of one batchMulti.
type batchWrite struct {
	hset  *redis.IntCmd // nil with no payload kept apart
	write *redis.IntCmd // the LPUSH or the ZADD
	wake  *redis.Cmd    // a delayed batch's wake script
}

// batchMulti is writeBatch's MULTI; ready is the batch's level's list.
func (q *Queue) batchMulti(ctx context.Context, c redis.UniversalClient, pays, elems []any, due time.Time, ready string) (batchWrite, error) {
	var m batchWrite
	pipe := c.TxPipeline()
	if len(pays) > 0 {
		m.hset = pipe.HSet(ctx, q.k.payloads, pays...)
	}
	if due.IsZero() {
		m.write = pipe.LPush(ctx, ready, elems...)
		pipe.ZAdd(ctx, q.k.bell, redis.Z{Score: 0, Member: bellMember})
		_, err := pipe.Exec(ctx)
		return m, err
	}
	dueMs := due.UnixMilli()
	zs := make([]redis.Z, len(elems))
	for i, e := range elems {
		zs[i] = redis.Z{Score: float64(dueMs), Member: e}
	}
	m.write = pipe.ZAdd(ctx, q.k.delayed, zs...)
	m.wake = wakeScript.EvalSha(ctx, pipe, []string{q.k.delayed, q.k.ready, q.k.wake, q.k.bell}, dueMs, wakeMarker, wakeTTL.Milliseconds())
	_, err := pipe.Exec(ctx)
	return m, err
}

// undoBatch takes back half a failed batchMulti. A MULTI runs its other
// commands when one fails at run time (a queue key holding a foreign
// type): take back the payloads written without their jobs, or the jobs
// written without their payloads, so that a failed batch leaves nothing
// behind.
func (q *Queue) undoBatch(ctx context.Context, c redis.UniversalClient, m batchWrite, refs []string, elems []any, due time.Time, ready string) {
	var reply redis.Error
	switch {
	case m.hset.Err() == nil && errors.As(m.write.Err(), &reply):
		_ = c.HDel(ctx, q.k.payloads, refs...).Err()
	case m.write.Err() == nil && errors.As(m.hset.Err(), &reply):
		pipe := c.Pipeline()
		for _, e := range elems {
			if due.IsZero() {
				pipe.LRem(ctx, ready, 1, e)
			} else {
				pipe.ZRem(ctx, q.k.delayed, e)
			}
		}
		_, _ = pipe.Exec(ctx)
	}
}

// ensureScripts loads the scripts that enqueues run inside a MULTI, where a
// NOSCRIPT cannot fall back to EVAL: once per queue, and again after a
// NOSCRIPT (a restarted Redis).
func (q *Queue) ensureScripts(ctx context.Context, c redis.Scripter) {
	if q.loaded.Load() {
		return
	}
	if enqueueManyScript.Load(ctx, c).Err() == nil && wakeScript.Load(ctx, c).Err() == nil &&
		boundedScript.Load(ctx, c).Err() == nil && partEnqueueScript.Load(ctx, c).Err() == nil {
		q.loaded.Store(true)
	}
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
	Ready     int64 `json:"ready"`     // jobs, not wake markers (looked for among the last 1,000); partitioned ones included
	Delayed   int64 `json:"delayed"`   // delayed and waiting to retry
	InFlight  int64 `json:"in_flight"` // fetched and not yet acked, by any consumer
	Dead      int64 `json:"dead"`
	Consumers int   `json:"consumers"` // consumers with a processing list
	// MaxLen is Config.MaxLen (0: unbounded); Full reports Ready+Delayed
	// at or over it; Refused counts the enqueues refused as full, by any
	// process, since the drain counters were created, and RefusedLocal
	// those this process saw since New.
	MaxLen       int64        `json:"max_len"`
	Full         bool         `json:"full"`
	Refused      int64        `json:"refused"`
	RefusedLocal uint64       `json:"refused_local"`
	Local        *WorkerStats `json:"local,omitempty"`
	// OldestReady is the age of the job fetched next (the oldest ready
	// one) from its EnqueuedAt, at the time of the call; 0 when the ready
	// list is empty or its last elements hold no job (see latency.go).
	// With priority levels, the largest age among the jobs each level
	// would hand out next.
	// With partitions, the oldest of the ready list's next job, the next
	// job of the partition served next and those of the partitions held
	// by their limits (the first 100 held), and of each of these
	// partitions the first job of every level below its next job's.
	OldestReady time.Duration `json:"oldest_ready_ns"`
	// Paused reports the queue paused fleet-wide (Queue.Pause): its ready
	// jobs wait, and OldestReady grows, until Resume.
	Paused bool `json:"paused"`
	// Partitions is the number of partitions with jobs waiting, due or
	// delayed (the Partition option), and Partitioned their jobs that are
	// due (counted in Ready; the delayed ones are in Delayed).
	Partitions  int64 `json:"partitions"`
	Partitioned int64 `json:"partitioned"`
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
	// The ready list may hold wake markers, which are not jobs. They are
	// pushed at the tail, and only recovered jobs go behind them: look at
	// the tail end only, so a long backlog costs no scan.
	markers := pipe.LPosCount(ctx, q.k.ready, wakeMarker, 0, redis.LPosArgs{Rank: -1, MaxLen: markerScan})
	refused := q.refusedCmd(ctx, pipe)
	oldest := pipe.LRange(ctx, q.k.ready, -oldestScan, -1)
	paused := pipe.Exists(ctx, q.k.paused)
	parts, parted := pipe.HLen(ctx, q.k.partLen()), pipe.ZCard(ctx, q.k.fair())
	levels := readLevels(ctx, pipe, q.k, true)
	partNext := partHeadsScript.Eval(ctx, pipe, q.k.partKeys()) // the partitions' next jobs (parts.go)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return s, q.errorf("stats: %w", err)
	}
	s.Partitions, s.Partitioned = parts.Val(), parted.Val()
	s.Paused = paused.Val() == 1
	s.OldestReady = oldestReady(oldest.Val(), q.cfg.Now())
	if i := behindMarkers(markers.Val(), ready.Val()); len(oldest.Val()) == oldestScan && i >= 0 && ready.Val()-1-i >= oldestScan {
		// latency.go: a run of markers longer than the scan hides the job.
		elem, err := c.LIndex(ctx, q.k.ready, i).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return s, q.errorf("stats: %w", err)
		}
		s.OldestReady = oldestReady([]string{elem}, q.cfg.Now())
	}
	if heads, err := partNext.StringSlice(); err == nil {
		// Each head on its own: oldestReady reads the last job of a list.
		for _, h := range heads {
			s.OldestReady = max(s.OldestReady, oldestReady([]string{h}, q.cfg.Now()))
		}
	}
	s.Ready, s.Delayed, s.Dead = ready.Val(), delayed.Val(), dead.Val()
	s.Ready = max(s.Ready-int64(len(markers.Val())), 0) + s.Partitioned + levels.jobs()
	s.OldestReady = max(s.OldestReady, levels.oldest(q.cfg.Now()))
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
	q.boundedStats(&s, refused)
	q.mu.Lock()
	ws := q.workers
	q.mu.Unlock()
	if len(ws) > 0 {
		ls := ws[0].Stats()
		s.Local = &ls
	}
	return s, nil
}

// markerScan is how far from the tail Stats looks for wake markers.
const markerScan = 1000
