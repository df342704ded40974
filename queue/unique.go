package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Uniqueness windows, IDs derived from the payload, debounce and deadlines:
// options of Enqueue that build on the ID option's idempotency key
// ({tag}:id:<ID>, see ID).

// debounceMode is what an enqueue with Debounce or ReplacePayload does to
// a delayed job holding the same ID.
type debounceMode uint8

const (
	noDebounce      debounceMode = iota
	debounceDue                  // replace the payload and the due time (Debounce)
	debounceKeepDue              // replace the payload, keep the due time (ReplacePayload)
)

// maxWindow bounds UniqueFor: a key's PX must stay a valid Redis expiry and
// the envelope field a positive number of milliseconds.
const maxWindow = 100 * 365 * 24 * time.Hour

// UniqueFor keeps the job's ID taken for d after the job succeeds: another
// enqueue with the ID within d of the success adds nothing and returns
// ErrDuplicate (asynq's Unique, BullMQ's throttle). It needs ID or
// IDFromPayload. A job that goes to the dead letters frees its ID at once,
// as without UniqueFor, so that it can be enqueued again. d is at least 1ms
// and at most 100 years; the window has millisecond resolution (rounded up).
// Workers of versions before UniqueFor dead-letter such jobs as malformed:
// upgrade workers first (docs/queue.md, "Upgrading").
func UniqueFor(d time.Duration) EnqueueOption {
	return func(o *enqueueOpts) error {
		if d < time.Millisecond || d > maxWindow {
			return fmt.Errorf("queue: UniqueFor(%s): must be between 1ms and 100 years", d)
		}
		o.window = d.Round(time.Millisecond)
		if o.window < d {
			o.window += time.Millisecond
		}
		return nil
	}
}

// IDFromPayload gives the job the ID "sha256-" followed by the hex SHA-256
// of its payload, with the ID option's idempotency: the same payload
// enqueued while the first job exists adds nothing and returns
// ErrDuplicate. For a job with a Type, the hash is of the type, a zero
// byte and the payload: the same payload under two types is two jobs. It
// cannot be combined with ID. EnqueueBatch refuses it.
func IDFromPayload() EnqueueOption {
	return func(o *enqueueOpts) error { o.idFromPayload = true; return nil }
}

// payloadIDPrefix starts every ID that IDFromPayload derives.
const payloadIDPrefix = "sha256-"

func payloadID(typ string, payload []byte) string {
	var sum [sha256.Size]byte
	if typ == "" {
		sum = sha256.Sum256(payload) // as before types existed: the same IDs
	} else {
		h := sha256.New()
		h.Write([]byte(typ))
		h.Write([]byte{0})
		h.Write(payload)
		h.Sum(sum[:0])
	}
	return payloadIDPrefix + hex.EncodeToString(sum[:])
}

// Debounce makes an enqueue with an ID replace the job with that ID while
// it is still delayed: the waiting job gets the new payload and the new due
// time (Delay or At, which Debounce needs), so a burst of enqueues runs the
// job once, after the last of them (BullMQ's debounce). A job with the ID
// that is no longer delayed (ready, running, waiting to retry) or that was
// enqueued without Debounce or ReplacePayload is left alone: ErrDuplicate,
// as with ID alone. Enqueue returns the ID and nil when it replaced the job.
//
// A debounced job keeps its payload in its element whatever its size, and
// its idempotency key holds a copy of the element while it is delayed (its
// payload is in Redis twice until it runs). EnqueueBatch, Durable and a
// bounded queue (Config.MaxLen) refuse it. With Partition, the job keeps
// its partition: see Partition.
func Debounce() EnqueueOption {
	return func(o *enqueueOpts) error { o.debounce = debounceDue; return nil }
}

// ReplacePayload is Debounce that keeps the waiting job's due time: only the
// payload (and options such as Timeout) of the delayed job are replaced. A
// first enqueue with the ID is scheduled by its own Delay or At.
func ReplacePayload() EnqueueOption {
	return func(o *enqueueOpts) error { o.debounce = debounceKeepDue; return nil }
}

// Deadline makes the job expire: a job not started by t goes to the dead
// letters with the reason "deadline exceeded" instead of running, and a
// failed run whose retry would start after t goes there at once. t has
// millisecond resolution (rounded down) and must be after the enqueue and
// not before the job's due time (Delay, At). The check is made by the
// worker that takes the job, on its own clock.
func Deadline(t time.Time) EnqueueOption {
	return func(o *enqueueOpts) error {
		if !t.Before(maxDue) {
			return fmt.Errorf("queue: Deadline(%s): must be before the year 10000", t)
		}
		if t.UnixMilli() <= 0 {
			return fmt.Errorf("queue: Deadline(%s): must be after 1970", t)
		}
		o.deadline = t.Truncate(time.Millisecond)
		return nil
	}
}

// applyUnique checks the options of this file against each other and the
// payload, once the job's due time is known, and sets the ID IDFromPayload
// derives.
func (q *Queue) applyUnique(o *enqueueOpts, payload []byte, due, now time.Time) error {
	if o.idFromPayload {
		if o.id != "" {
			return fmt.Errorf("queue: IDFromPayload: the ID option gives the ID %q already; use one of them", o.id)
		}
		o.id = payloadID(o.typ, payload)
	}
	if o.window > 0 && o.id == "" {
		return fmt.Errorf("queue: UniqueFor(%s) needs the ID or IDFromPayload option", o.window)
	}
	if o.debounce != noDebounce {
		name := "Debounce"
		if o.debounce == debounceKeepDue {
			name = "ReplacePayload"
		}
		switch {
		case o.id == "":
			return fmt.Errorf("queue: %s needs the ID or IDFromPayload option", name)
		case due.IsZero():
			return fmt.Errorf("queue: %s needs Delay or At in the future: only a delayed job can be replaced", name)
		case o.durable.replicas > 0:
			return fmt.Errorf("queue: %s cannot be combined with Durable", name)
		case q.bounded():
			return fmt.Errorf("queue: %s is not supported on a bounded queue (Config.MaxLen)", name)
		}
	}
	if !o.deadline.IsZero() {
		if !o.deadline.After(now) {
			return fmt.Errorf("queue: Deadline(%s): it has passed (now %s)", o.deadline, now)
		}
		if !due.IsZero() && due.After(o.deadline) {
			return fmt.Errorf("queue: Deadline(%s): the job would be due after it, at %s", o.deadline, due)
		}
	}
	return nil
}

// uniqueOwnLua is the owner check of an idempotency key ({tag}:id:<ID>).
// The key holds the enqueue stamp (the envelope's enqueued-at ms: IDs hold
// no '|', so it is the fifth field) of the job that took it, or that job's
// whole element while it is a debounced delayed job (debounceScript). An
// outcome (ack, death, cancel, delete) frees or re-arms the key only when
// it is still its job's: a job whose key lapsed (UniqueTTL) while it waited
// or ran must not free the key a newer job with the ID has taken since,
// or a duplicate gets in. A key holding "1" was written by a version
// before this check (or by a path that writes no stamp): anyone's, freed
// as before. An absent key is nobody's: the outcome may re-arm it
// (UniqueFor).
const uniqueOwnLua = `
local function uniqueStamp(elem)
  return string.match(elem, '^bq1|[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|')
end
local function uniqueMine(key, elem)
  local v = redis.call('GET', key)
  if not v or v == '1' then return true end
  local s = uniqueStamp(elem)
  if s == nil then return true end
  if string.sub(v, 1, 4) == 'bq1|' then return uniqueStamp(v) == s end
  return v == s
end
`

// debounceScript enqueues a delayed job with Debounce or ReplacePayload: a
// delayed job whose idempotency key holds its element (an earlier
// debounced enqueue) is replaced; a free ID is taken as by scheduleScript;
// an ID held otherwise is a duplicate. The key holds the new element, with
// UniqueTTL after the new due time.
// A job that takes a free ID deletes what an earlier job of the ID left
// (keys.endKeys); one that replaces a waiting job is that job still. A
// partitioned job counts in its partition from its enqueue (partLua) and
// is refused when it does not fit (partRoom); its replacement takes the
// place it holds, so it is never refused for room, and must name the same
// partition (a job keeps its partition): a replacement naming another one
// (or none, for a job in a partition, or one for a job in none) is
// refused.
// KEYS: delayed, ready, wake, unique key, bell, the 4 end keys, partition
// waiters, then the partition keys (Queue.partKeys).
// ARGV: due ms, envelope, marker, wake TTL ms, UniqueTTL ms, now ms, "1" to
// keep a replaced job's due time, partition ("": none), max partitions, max
// partition length (0: none), waiters TTL ms (0: the caller does not wait),
// the partition's weight (PartitionWeight, as partEnqueueScript keeps it).
// Returns {0} for a duplicate, {1 added or 2 replaced, due ms}, {-4, the
// waiting job's partition} for a replacement naming another one, or a
// refusal of partEnqueueScript ({-2, ...}, {-3, ...}).
var debounceScript = redis.NewScript(typeLua + wakeLua + partLua + partRoomLua + `
local bad = wrongtype(KEYS[1], 'zset') or wrongtype(KEYS[2], 'list')
if bad then return redis.error_reply(bad) end
local P = partKeysAt(11)
local plen = P.len
local due, part = tonumber(ARGV[1]), ARGV[8]
local old = redis.call('GET', KEYS[4])
local code = 1
if old then
  if string.sub(old, 1, 4) ~= 'bq1|' then return {0} end
  local score = redis.call('ZSCORE', KEYS[1], old)
  if not score then return {0} end
  local was = partOf(old) or ''
  if was ~= part then return {-4, was} end
  if ARGV[7] == '1' then due = tonumber(score) end
  -- The replacement takes the job's place, still counted in its
  -- partition: the partition does not run dry in between (partDelayedDel
  -- forgot a partition whose only job this was, with its weight and tag).
  redis.call('ZREM', KEYS[1], old)
  code = 2
else
  if part ~= '' then
    local refused = partRoom(plen, KEYS[10], part, ARGV[9], ARGV[10], ARGV[11])
    if refused then return refused end
  end
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8], KEYS[9])
end
local ttl = tonumber(ARGV[5]) + math.max(due - tonumber(ARGV[6]), 0)
redis.call('SET', KEYS[4], ARGV[2], 'PX', ttl)
if part ~= '' then
  partSetWeight(P, part, ARGV[12])
  if code == 2 then
    redis.call('ZADD', KEYS[1], due, ARGV[2])
  else
    partDelayedAdd(KEYS[1], plen, part, due, ARGV[2])
  end
else
  redis.call('ZADD', KEYS[1], due, ARGV[2])
end
wake(KEYS[1], KEYS[2], KEYS[3], due, ARGV[3], ARGV[4], KEYS[5])
return {code, due}
`)

// enqueueDebounced writes a job with Debounce or ReplacePayload, waiting
// for room in its partition with WaitForRoom. added is false for a
// duplicate.
func (q *Queue) enqueueDebounced(ctx context.Context, pr prepared) (added bool, err error) {
	res, err := q.waitForRoom(ctx, []prepared{pr}, pr.wait && pr.part != "", func(mark bool) ([]bool, error) {
		ok, err := q.debounceOnce(ctx, pr, mark)
		return []bool{ok}, err
	})
	if err != nil {
		return false, err
	}
	return res[0], nil
}

// debounceOnce runs debounceScript once; mark: the caller waits for room.
func (q *Queue) debounceOnce(ctx context.Context, pr prepared, mark bool) (added bool, err error) {
	keep := "0"
	if pr.debounce == debounceKeepDue {
		keep = "1"
	}
	b := q.partBounds(mark)
	res, err := debounceScript.Run(ctx, q.p.Client(),
		append(append([]string{q.k.delayed, q.k.ready, q.k.wake, q.k.unique(pr.id), q.k.bell}, q.k.endKeys(pr.id)...),
			append([]string{q.k.partWaiters()}, q.partKeys()...)...),
		pr.due.UnixMilli(), pr.elem, wakeMarker, wakeTTL.Milliseconds(),
		max(q.cfg.UniqueTTL.Milliseconds(), 1), q.cfg.Now().UnixMilli(), keep,
		pr.part, b.maxParts, b.maxPartLen, waitTTL(mark), pr.pweight).Slice()
	if err != nil {
		return false, err
	}
	code := func(i int) int64 {
		if i < len(res) {
			v, _ := res[i].(int64)
			return v
		}
		return 0
	}
	switch {
	case len(res) == 1 && code(0) == 0:
		return false, nil
	case len(res) == 2 && (code(0) == 1 || code(0) == 2):
		q.notifyDelayed(time.UnixMilli(code(1)))
		return true, nil
	case len(res) == 2 && code(0) == -4:
		was, _ := res[1].(string)
		return false, fmt.Errorf("%w: the delayed job %s is in %s and this enqueue names %s: a job replaced by Debounce or ReplacePayload keeps its partition",
			ErrInvalidArgument, pr.id, partName(was), partName(pr.part))
	case len(res) > 0 && code(0) < 0:
		return false, q.partRefusal(res, []prepared{pr})
	}
	return false, fmt.Errorf("debounce script answered %v", res)
}

// partName names partition p ("": none) in a message.
func partName(p string) string {
	if p == "" {
		return "no partition"
	}
	return fmt.Sprintf("partition %q", p)
}
