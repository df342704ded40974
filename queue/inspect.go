package queue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/pool"
)

// Inspector reads and operates the queues of one namespace: it lists
// queues, consumers and jobs by state, page by page, and deletes,
// requeues and purges. It is the data source of the admin dashboard and
// the CLI. It needs no worker and starts nothing; every call is a few
// round trips on the pool's request lane whose Redis work is bounded by
// the page's limit, not by the size of the queues (see docs/queue.md,
// "Inspecting queues").
//
// An Inspector has no useful zero value; build it with NewInspector. It
// is safe for concurrent use and holds no resources, so it needs no
// closing.
type Inspector struct {
	p   *pool.Pool
	ns  string
	now func() time.Time
}

// MaxPageLimit is the largest page an Inspector returns.
const MaxPageLimit = 1000

// PreviewBytes is how much of a payload a listing returns unless
// WithPayloads is given.
const PreviewBytes = 1 << 10

// ErrInvalidArgument is matched (errors.Is) by the errors of Inspector
// calls given a bad limit, state, cursor, queue name or handle, of Get and
// Cancel given a malformed ID, and of every enqueue or schedule option
// given an invalid value or a combination it refuses (MaxAttempts(0), a
// Priority out of range, Debounce without ID, a header that is not valid,
// an option EnqueueBatch does not take...); the message names it.
var ErrInvalidArgument = errors.New("queue: invalid argument")

// NewInspector returns an Inspector of the namespace's queues in the Redis
// behind p ("" is DefaultNamespace). It does not talk to Redis.
func NewInspector(p *pool.Pool, namespace string) (*Inspector, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: NewInspector: nil pool", ErrInvalidConfig)
	}
	if namespace == "" {
		namespace = DefaultNamespace
	}
	e := check.New(ErrInvalidConfig)
	checkNamespace(e, "namespace", namespace)
	if err := e.Err(); err != nil {
		return nil, err
	}
	return &Inspector{p: p, ns: namespace, now: time.Now}, nil
}

// Namespace returns the namespace the Inspector reads.
func (in *Inspector) Namespace() string { return in.ns }

func checkLimit(limit int) error {
	if limit < 1 || limit > MaxPageLimit {
		return fmt.Errorf("%w: limit must be in 1..%d, got %d", ErrInvalidArgument, MaxPageLimit, limit)
	}
	return nil
}

func (in *Inspector) keysOf(queue string) (keys, error) {
	if err := check.Name("queue name", queue); err != nil {
		return keys{}, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return newKeys(in.ns, queue), nil
}

// QueueInfo is one queue of a namespace, with its counts at the time of
// the call (as Queue.Stats counts them).
type QueueInfo struct {
	Name      string    `json:"name"`
	LastSeen  time.Time `json:"last_seen"` // last noted by a producer, a worker or a schedule
	Ready     int64     `json:"ready"`
	Delayed   int64     `json:"delayed"`
	InFlight  int64     `json:"in_flight"`
	Dead      int64     `json:"dead"`
	Consumers int       `json:"consumers"` // consumers with a processing list
	Paused    bool      `json:"paused"`    // paused fleet-wide (Queue.Pause)
}

// QueuePage is one page of Queues; Next is the cursor of the next page, ""
// after the last.
type QueuePage struct {
	Queues []QueueInfo `json:"queues"`
	Next   string      `json:"next,omitempty"`
}

// Queues lists the namespace's queues by name, after cursor ("" for the
// first page), at most limit (1..MaxPageLimit), with their counts. A queue
// is listed once a producer of this version enqueued to it, a worker
// started on it or a schedule was registered on it, and until it was not
// seen for 30 days (at most 10,000 names, the least recently seen
// dropped). The cursor is the last name of the page, so pages are stable
// while queues come and go. Three round trips: the names, the counts of
// every queue of the page in one pipeline, and the lengths of their
// consumers' processing lists in another.
func (in *Inspector) Queues(ctx context.Context, cursor string, limit int) (QueuePage, error) {
	if err := checkLimit(limit); err != nil {
		return QueuePage{}, fmt.Errorf("queue: inspector: queues: %w", err)
	}
	c := in.p.Client()
	min := "-"
	if cursor != "" {
		min = "(" + cursor
	}
	names, err := c.ZRangeByLex(ctx, queuesKey(in.ns), &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit) + 1}).Result()
	if err != nil {
		return QueuePage{}, fmt.Errorf("queue: inspector: queues: %w", err)
	}
	var page QueuePage
	if len(names) > limit {
		names = names[:limit]
		page.Next = names[limit-1]
	}
	if len(names) == 0 {
		return page, nil
	}
	type reads struct {
		ready, delayed, dead *redis.IntCmd
		paused, fair         *redis.IntCmd
		markers              *redis.IntSliceCmd
		consumers            *redis.StringSliceCmd
		seen                 *redis.FloatCmd
		levels               levelReads
	}
	rs := make([]reads, len(names))
	pipe := c.Pipeline()
	for i, n := range names {
		k := newKeys(in.ns, n)
		rs[i] = reads{
			ready: pipe.LLen(ctx, k.ready), delayed: pipe.ZCard(ctx, k.delayed), dead: pipe.ZCard(ctx, k.deadIdx),
			markers:   pipe.LPosCount(ctx, k.ready, wakeMarker, 0, redis.LPosArgs{Rank: -1, MaxLen: markerScan}),
			consumers: pipe.SMembers(ctx, k.consumers),
			seen:      pipe.ZScore(ctx, queueSeenKey(in.ns), n),
			paused:    pipe.Exists(ctx, k.paused),
			fair:      pipe.ZCard(ctx, k.fair()),
			levels:    readLevels(ctx, pipe, k, false),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return QueuePage{}, fmt.Errorf("queue: inspector: queues: %w", err)
	}
	page.Queues = make([]QueueInfo, len(names))
	var lens []*redis.IntCmd
	var owner []int
	pipe = c.Pipeline()
	for i, n := range names {
		r := rs[i]
		qi := QueueInfo{Name: n, Ready: max(r.ready.Val()-int64(len(r.markers.Val())), 0) + r.fair.Val() + r.levels.jobs(), Delayed: r.delayed.Val(), Dead: r.dead.Val(), Paused: r.paused.Val() == 1}
		if ms := r.seen.Val(); ms > 0 {
			qi.LastSeen = time.UnixMilli(int64(ms))
		}
		ids := r.consumers.Val()
		qi.Consumers = len(ids)
		k := newKeys(in.ns, n)
		for _, id := range ids {
			lens, owner = append(lens, pipe.LLen(ctx, k.proc(id))), append(owner, i)
		}
		page.Queues[i] = qi
	}
	if len(lens) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return QueuePage{}, fmt.Errorf("queue: inspector: queues: %w", err)
		}
		for j, l := range lens {
			page.Queues[owner[j]].InFlight += l.Val()
		}
	}
	return page, nil
}

// ConsumerInfo is a live consumer of the namespace.
type ConsumerInfo struct {
	ID       string    `json:"id"`
	Deadline time.Time `json:"deadline"` // it counts as dead after this, unless it beats again
	// Queues are the queues its workers consume, with the jobs it holds
	// (fetched, not yet acked) of each.
	Queues   []string         `json:"queues"`
	InFlight map[string]int64 `json:"in_flight"`
}

// maxConsumers bounds the consumers Consumers returns.
const maxConsumers = 1000

// Consumers lists the namespace's live consumers (their heartbeat has not
// expired), by ID, at most 1,000, with the queues each consumes (as it
// recorded them when its workers started, refreshed every 15 minutes) and
// the jobs it holds of each. It reads the record of consumers' queues
// (which holds consumers of this version only, and goes with their
// heartbeat), then in one pipeline their heartbeat deadlines and the
// lengths of their processing lists: two round trips for a small fleet.
// (The heartbeat set itself also holds the queues' due announcements, up
// to one per queue, so it is not what is paged.)
func (in *Inspector) Consumers(ctx context.Context) ([]ConsumerInfo, error) {
	c := in.p.Client()
	recs := map[string]string{}
	var cur uint64
	for {
		kv, next, err := c.HScan(ctx, consumerQueuesKey(in.ns), cur, "", maxConsumers).Result()
		if err != nil {
			return nil, fmt.Errorf("queue: inspector: consumers: %w", err)
		}
		for i := 0; i+1 < len(kv) && len(recs) < maxConsumers; i += 2 {
			recs[kv[i]] = kv[i+1]
		}
		if cur = next; cur == 0 || len(recs) >= maxConsumers {
			break
		}
	}
	if len(recs) == 0 {
		return nil, nil
	}
	type reads struct {
		info     ConsumerInfo
		deadline *redis.FloatCmd
		held     []*redis.IntCmd
	}
	rs := make([]*reads, 0, len(recs))
	pipe := c.Pipeline()
	for id, queues := range recs {
		r := &reads{info: ConsumerInfo{ID: id, Queues: strings.Fields(queues), InFlight: map[string]int64{}}}
		r.deadline = pipe.ZScore(ctx, heartbeatKey(in.ns), id)
		for _, name := range r.info.Queues {
			r.held = append(r.held, pipe.LLen(ctx, newKeys(in.ns, name).proc(id)))
		}
		rs = append(rs, r)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("queue: inspector: consumers: %w", err)
	}
	now := in.now()
	out := make([]ConsumerInfo, 0, len(rs))
	for _, r := range rs {
		ms, err := r.deadline.Result()
		if err != nil || !time.UnixMilli(int64(ms)).After(now) {
			continue // gone, or dead: its record goes with its heartbeat
		}
		r.info.Deadline = time.UnixMilli(int64(ms))
		for i, name := range r.info.Queues {
			r.info.InFlight[name] = r.held[i].Val()
		}
		out = append(out, r.info)
	}
	slices.SortFunc(out, func(a, b ConsumerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// ListedJob is a job as a listing shows it.
type ListedJob struct {
	JobInfo
	// PayloadSize is the payload's size in bytes; Payload holds its first
	// PreviewBytes (Truncated) unless WithPayloads was given. A payload
	// kept apart (over 4 KiB) is not read unless WithPayloads was given
	// (PayloadApart).
	PayloadSize  int  `json:"payload_size"`
	PayloadApart bool `json:"payload_apart,omitempty"`
	Truncated    bool `json:"truncated,omitempty"`
	// Malformed: the element in Redis did not decode; Payload holds a
	// preview of it, and Error says why.
	Malformed bool   `json:"malformed,omitempty"`
	Error     string `json:"error,omitempty"`
	// Handle names the job for Delete (ready, delayed and dead jobs).
	Handle string `json:"handle,omitempty"`

	ref string // its payload kept apart
}

// JobPage is one page of Jobs; Next is the cursor of the next page, ""
// after the last.
type JobPage struct {
	Jobs []ListedJob `json:"jobs"`
	Next string      `json:"next,omitempty"`
}

// ListOption changes a listing.
type ListOption func(*listOpts)

type listOpts struct{ payloads bool }

// WithPayloads returns whole payloads, those kept apart included (one more
// read, of at most about 4 MiB of them; beyond that they stay unread, with
// PayloadApart set).
func WithPayloads() ListOption { return func(o *listOpts) { o.payloads = true } }

// Jobs lists the jobs of queue in state, after cursor ("" for the first
// page), at most limit (1..MaxPageLimit) and about 4 MiB of elements per
// page (at least one job), in the order they will leave the state:
//
//   - StateReady: the level lists highest first, then the ready list,
//     each next to run first, then the partitioned jobs partition by
//     partition (by the partition's index, each one's next to run
//     first: not the order the take serves the partitions in). The cursor
//     is a position from the end the fetchers take from, so it shifts as
//     jobs are fetched or put back: a page may repeat or skip jobs of a
//     busy queue.
//   - StateDelayed: by due time. The cursor is the last job's due time and
//     ID, so pages are stable: jobs added, promoted or retried while
//     paging never make a page repeat or skip a job that stays.
//   - StateRunning: the processing lists of the queue's consumers, by
//     consumer ID, each newest fetch first; JobInfo.Consumer names the
//     consumer. The cursor is a consumer and a position in its list (jobs
//     acked meanwhile shift it).
//   - StateDead: newest first. Stable, like StateDelayed (time of death
//     and dead letter ID).
//
// One script call per page reads the state's key (the running state: one
// per consumer the page reaches, after one read of the consumers), plus
// one pipeline when the page holds payloads kept apart or retries (their
// sizes and last errors). A cursor of another state, or one that does not
// decode, fails with ErrInvalidArgument.
func (in *Inspector) Jobs(ctx context.Context, queue string, state JobState, cursor string, limit int, opts ...ListOption) (JobPage, error) {
	k, err := in.keysOf(queue)
	if err == nil {
		err = checkLimit(limit)
	}
	if err != nil {
		return JobPage{}, fmt.Errorf("queue: inspector: jobs: %w", err)
	}
	var o listOpts
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	cur, err := decodeCursor(state, cursor)
	if err != nil {
		return JobPage{}, fmt.Errorf("queue: inspector: jobs of %q: %w", queue, err)
	}
	var page JobPage
	switch state {
	case StateReady:
		page, err = in.readyJobs(ctx, k, queue, cur, limit)
	case StateDelayed:
		page, err = in.delayedJobs(ctx, k, queue, cur, limit)
	case StateRunning:
		page, err = in.runningJobs(ctx, k, queue, cur, limit)
	case StateDead:
		page, err = in.deadJobs(ctx, k, queue, cur, limit)
	default:
		err = fmt.Errorf("%w: state %q cannot be listed (ready, delayed, running or dead)", ErrInvalidArgument, state)
	}
	if err == nil {
		err = in.fill(ctx, k, page.Jobs, o)
	}
	if err != nil {
		return JobPage{}, fmt.Errorf("queue: inspector: jobs of %q: %w", queue, err)
	}
	return page, nil
}

// cursor is a decoded Jobs cursor: a position (ready, running) or a score
// and member (delayed, dead), and for running the consumer.
type cursor struct {
	set      bool
	level    int // ready: the priority level listed (levels.go)
	off      int64
	score    string
	member   string
	consumer string
	fair     bool // StateReady: in the fair set (score, member), after the ready list
}

// encodeCursor and decodeCursor: "<state>|<fields>", base64url, so a
// cursor is an opaque token safe in a URL.
func encodeCursor(state JobState, fields ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(string(state) + "|" + strings.Join(fields, "|")))
}

func decodeCursor(state JobState, s string) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	bad := func(why string) (cursor, error) {
		return cursor{}, fmt.Errorf("%w: cursor %q: %s", ErrInvalidArgument, preview([]byte(s)), why)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return bad("not a cursor of Jobs")
	}
	st, rest, _ := strings.Cut(string(b), "|")
	if JobState(st) != state {
		return bad(fmt.Sprintf("a cursor of state %q, not %q", st, state))
	}
	c := cursor{set: true}
	switch state {
	case StateReady:
		if f, ok := strings.CutPrefix(rest, "p|"); ok { // parts.go
			c.fair = true
			c.score, c.member, _ = strings.Cut(f, "|")
			if c.score != "" {
				err = checkScore(c.score)
			}
			break
		}
		c.level, rest, err = cutLevel(rest) // levels.go: "p<l>:<off>"
		if err == nil {
			c.off, err = strconv.ParseInt(rest, 10, 64)
		}
	case StateRunning:
		// The offset follows the last '|': a consumer ID may contain '|'.
		i := strings.LastIndexByte(rest, '|')
		if i < 0 {
			return bad("malformed")
		}
		c.consumer = rest[:i]
		c.off, err = strconv.ParseInt(rest[i+1:], 10, 64)
	default:
		c.score, c.member, _ = strings.Cut(rest, "|")
		err = checkScore(c.score)
	}
	if err != nil || c.off < 0 {
		return bad("malformed")
	}
	return c, nil
}

// checkScore accepts the score of a cursor or handle: a finite number
// (Redis refuses NaN in a range, and no due time or time of death is
// infinite).
func checkScore(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
		err = fmt.Errorf("score %q is not finite", s)
	}
	return err
}

// listPage reads a page of a list; more reports whether elements follow.
func (in *Inspector) listPage(ctx context.Context, list string, off int64, limit int, fromTail bool) (elems []string, more bool, err error) {
	tail := "0"
	if fromTail {
		tail = "1"
	}
	vals, err := listPageScript.Run(ctx, in.p.Client(), []string{list}, off, limit, tail).Slice()
	if err != nil || len(vals) == 0 {
		return nil, false, err
	}
	more = vals[0] == int64(1)
	elems = make([]string, 0, len(vals)-1)
	for _, v := range vals[1:] {
		s, _ := v.(string)
		elems = append(elems, s)
	}
	return elems, more, nil
}

// readyJobs lists the ready jobs in the order they are taken: the
// priority levels' lists, highest first, then level 0's (levels.go), then
// the jobs waiting in partitions (parts.go). A page holds the jobs of one
// level: at the end of a level, it may be short.
func (in *Inspector) readyJobs(ctx context.Context, k keys, queue string, cur cursor, limit int) (JobPage, error) {
	if cur.fair {
		return in.fairJobs(ctx, k, queue, JobPage{}, cur, limit)
	}
	if !cur.set {
		var err error
		if cur.level, err = in.topLevel(ctx, k); err != nil {
			return JobPage{}, err
		}
	}
	for {
		elems, more, err := in.listPage(ctx, k.readyAt(cur.level), cur.off, limit, true)
		if err != nil {
			return JobPage{}, err
		}
		if len(elems) == 0 && !more && cur.level > 0 {
			cur.level, cur.off = cur.level-1, 0
			continue
		}
		var page JobPage
		for i, e := range elems {
			if e == wakeMarker {
				continue
			}
			j := listed(queue, StateReady, e)
			j.Handle = readyHandle(e, cur.off+int64(i), cur.level)
			page.Jobs = append(page.Jobs, j)
		}
		switch {
		case more:
			page.Next = encodeCursor(StateReady, levelField(cur.level)+strconv.FormatInt(cur.off+int64(len(elems)), 10))
			return page, nil
		case cur.level > 0:
			page.Next = encodeCursor(StateReady, levelField(cur.level-1)+"0")
			return page, nil
		}
		// Then the jobs waiting in partitions (parts.go).
		if limit > len(elems) {
			return in.fairJobs(ctx, k, queue, page, cursor{}, limit-len(elems))
		}
		n, err := in.p.Client().Exists(ctx, k.fair()).Result()
		if err != nil {
			return JobPage{}, err
		}
		if n > 0 {
			page.Next = encodeCursor(StateReady, "p", "", "")
		}
		return page, nil
	}
}

// zsetPage reads a page of a sorted set after (score, member); per member
// it returns width values (see zsetPageScript).
func (in *Inspector) zsetPage(ctx context.Context, ks []string, cur cursor, limit int, rev, prefix bool) (vals []any, more bool, err error) {
	vals, err = zsetPageScript.Run(ctx, in.p.Client(), ks, cur.score, cur.member, limit, boolArg(rev), boolArg(prefix)).Slice()
	if err != nil || len(vals) == 0 {
		return nil, false, err
	}
	return vals[1:], vals[0] == int64(1), nil
}

func (in *Inspector) delayedJobs(ctx context.Context, k keys, queue string, cur cursor, limit int) (JobPage, error) {
	vals, more, err := in.zsetPage(ctx, []string{k.delayed}, cur, limit, false, true)
	if err != nil {
		return JobPage{}, err
	}
	var page JobPage
	var last, lastScore string
	for i := 0; i+1 < len(vals); i += 2 {
		e, _ := vals[i].(string)
		score, _ := vals[i+1].(string)
		last, lastScore = e, score
		j := listed(queue, StateDelayed, e)
		if ms, err := strconv.ParseFloat(score, 64); err == nil {
			j.Due = time.UnixMilli(int64(ms))
		}
		j.Handle = encodeHandle(StateDelayed, score, memberPrefix(e))
		page.Jobs = append(page.Jobs, j)
	}
	if more && len(page.Jobs) > 0 {
		page.Next = encodeCursor(StateDelayed, lastScore, memberPrefix(last))
	}
	return page, nil
}

// memberPrefix is a delayed job's element up to the '|' after its ID,
// which names it in the delayed set (an ID is there once); an element
// without that shape (malformed) is named by its first 256 bytes.
func memberPrefix(e string) string {
	if rest, ok := strings.CutPrefix(e, envelopeVersion); ok {
		if i := strings.IndexByte(rest, '|'); i >= 0 {
			return e[:len(envelopeVersion)+i+1]
		}
	}
	return e[:min(len(e), 256)]
}

func (in *Inspector) deadJobs(ctx context.Context, k keys, queue string, cur cursor, limit int) (JobPage, error) {
	vals, more, err := in.zsetPage(ctx, []string{k.deadIdx, k.deadData, k.deadRefs, k.payloads}, cur, limit, true, false)
	if err != nil {
		return JobPage{}, err
	}
	var page JobPage
	var lastID, lastScore string
	for i := 0; i+4 < len(vals); i += 5 {
		id, _ := vals[i].(string)
		score, _ := vals[i+1].(string)
		lastID, lastScore = id, score
		rec, ok := vals[i+2].(string)
		if !ok {
			continue // trimmed while the index still named it
		}
		// The handle names this dead letter by its time of death too: the
		// same dead ID may die again later (requeued, or an ID option
		// reused), and a stale handle must not delete that one.
		j := ListedJob{JobInfo: JobInfo{ID: id, Queue: queue, State: StateDead}, Handle: encodeHandle(StateDead, score, id)}
		r, err := parseDeadRecord([]byte(rec))
		if err != nil {
			j.Malformed, j.Error = true, "unreadable dead record: "+err.Error()
			j.setPayload([]byte(rec))
			page.Jobs = append(page.Jobs, j)
			continue
		}
		d, ref := r.job(id)
		j.Attempt, j.MaxAttempts, j.Deliveries, j.EnqueuedAt = d.Attempts, d.MaxAttempts, d.Deliveries, d.EnqueuedAt
		j.DiedAt, j.LastError, j.Type = d.DiedAt, d.Reason, d.Type
		if d.Malformed {
			j.Malformed, j.Error = true, "malformed element"
		}
		if ref != "" {
			j.ref, j.PayloadApart = ref, true
			size, _ := vals[i+4].(int64)
			j.PayloadSize = int(size)
		} else {
			j.setPayload(d.Payload)
		}
		page.Jobs = append(page.Jobs, j)
	}
	if more && lastID != "" {
		page.Next = encodeCursor(StateDead, lastScore, lastID)
	}
	return page, nil
}

// maxPageConsumers bounds the consumers one page of running jobs visits.
const maxPageConsumers = 64

func (in *Inspector) runningJobs(ctx context.Context, k keys, queue string, cur cursor, limit int) (JobPage, error) {
	ids, err := in.p.Client().SMembers(ctx, k.consumers).Result()
	if err != nil {
		return JobPage{}, err
	}
	slices.Sort(ids)
	at, _ := slices.BinarySearch(ids, cur.consumer)
	off := int64(0)
	if at < len(ids) && ids[at] == cur.consumer {
		off = cur.off
	}
	var page JobPage
	for visited := 0; at < len(ids) && visited < maxPageConsumers; visited++ {
		id := ids[at]
		elems, more, err := in.listPage(ctx, k.proc(id), off, limit-len(page.Jobs), false)
		if err != nil {
			return JobPage{}, err
		}
		for _, e := range elems {
			if e == wakeMarker {
				continue
			}
			j := listed(queue, StateRunning, e)
			j.Consumer = id
			page.Jobs = append(page.Jobs, j)
		}
		off += int64(len(elems))
		if more {
			// The page is full, or cut short by the byte bound.
			page.Next = encodeCursor(StateRunning, id, strconv.FormatInt(off, 10))
			return page, nil
		}
		at, off = at+1, 0
		if len(page.Jobs) >= limit {
			break
		}
	}
	if at < len(ids) {
		page.Next = encodeCursor(StateRunning, ids[at], "0")
	}
	return page, nil
}

// listed builds the listing of one element.
func listed(queue string, state JobState, e string) ListedJob {
	j := ListedJob{JobInfo: JobInfo{Queue: queue, State: state}}
	env, err := decodeEnvelope([]byte(e))
	if err != nil {
		j.Malformed, j.Error = true, err.Error()
		j.setPayload([]byte(e))
		return j
	}
	j.ID, j.Attempt, j.MaxAttempts, j.Deliveries, j.EnqueuedAt = env.id, env.attempt, env.maxAttempts, env.deliveries, env.enqueuedAt
	j.Type, j.Partition, j.Priority = env.typ, env.part, env.level
	if env.ref != "" {
		j.ref, j.PayloadApart = env.ref, true
	} else {
		j.setPayload(env.payload)
	}
	return j
}

// setPayload sets the payload and its size (fill cuts it to a preview).
func (j *ListedJob) setPayload(p []byte) {
	j.PayloadSize, j.Payload = len(p), p
}

// fill completes a page in one pipeline: the sizes of payloads kept apart
// (or, with WithPayloads, the payloads), and the last error of jobs that
// failed before (ready, delayed and running ones).
func (in *Inspector) fill(ctx context.Context, k keys, jobs []ListedJob, o listOpts) error {
	c := in.p.Client()
	pipe := c.Pipeline()
	sizes := map[int]*redis.IntCmd{}
	errs := map[int]*redis.StringCmd{}
	for i := range jobs {
		j := &jobs[i]
		if j.ref != "" && j.State != StateDead {
			sizes[i] = pipe.HStrLen(ctx, k.payloads, j.ref)
		}
		if j.Attempt > 0 && j.State != StateDead && j.ID != "" {
			errs[i] = pipe.Get(ctx, k.lastErr(j.ID))
		}
	}
	if len(sizes)+len(errs) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i, cmd := range sizes {
			jobs[i].PayloadSize = int(cmd.Val())
		}
		for i, cmd := range errs {
			jobs[i].LastError = cmd.Val()
		}
	}
	if !o.payloads {
		for i := range jobs {
			if p := jobs[i].Payload; len(p) > PreviewBytes {
				// A copy: the page must not keep the whole element alive.
				jobs[i].Payload, jobs[i].Truncated = append([]byte(nil), p[:PreviewBytes]...), true
			}
		}
		return nil
	}
	var refs []string
	var at []int
	budget := 0
	for i := range jobs {
		if jobs[i].ref == "" {
			continue
		}
		if budget > 0 && budget+jobs[i].PayloadSize > maxCallBytes {
			break
		}
		budget += jobs[i].PayloadSize
		refs, at = append(refs, jobs[i].ref), append(at, i)
	}
	if len(refs) == 0 {
		return nil
	}
	vals, err := c.HMGet(ctx, k.payloads, refs...).Result()
	if err != nil {
		return err
	}
	for n, v := range vals {
		if s, ok := v.(string); ok {
			jobs[at[n]].Payload, jobs[at[n]].PayloadSize, jobs[at[n]].PayloadApart = []byte(s), len(s), false
		}
	}
	return nil
}
