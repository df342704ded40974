package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Partitions (tenants). A job enqueued with the Partition option waits in
// the queue's fair set instead of its ready list, and the take script
// serves the partitions round-robin, one job per partition per turn, so
// that one partition's backlog cannot delay the jobs of the others.
//
// The model is start-time fair queueing on three keys of fixed names (no
// key per partition, so scripts never build key names, and 10,000
// partitions cost what one does):
//
//   - fair, a sorted set of the partitioned jobs ready to run, scored by
//     their tag;
//   - partlen, a hash: partition -> its jobs in the fair set and in the
//     delayed set (HLEN is the number of partitions with work:
//     MaxPartitions);
//   - parttag, a hash: partition -> the tag of its last job, plus the
//     queue's virtual clock (the tag of the job served last) and the tag
//     the unpartitioned ready list was served at last.
//
// A job's tag is max(clock, its partition's last tag) + 1: a partition
// with a backlog of 100,000 holds the tags clock+1 .. clock+100,000, and a
// job of another partition enqueued now gets clock+1, so it is served
// within one turn of every partition with work. The unpartitioned ready
// list takes part as one more partition, tagged when it is served. A
// partition with no job left is forgotten (both hash fields go), so the
// hashes hold only partitions with work.

// Field names of parttag that are not partitions (a partition has no
// space).
const (
	partClockField = " clock"
	partReadyField = " ready"
)

// maxPartitionLen is the longest partition key (partLua's partOf repeats
// it: TestPartitionKeyEdges).
const maxPartitionLen = 128

// Default and upper bound of Config.MaxPartitions.
const (
	DefaultMaxPartitions = 10_000
	maxMaxPartitions     = 1_000_000
)

var (
	// ErrTooManyPartitions: an enqueue would start a partition while
	// Config.MaxPartitions partitions already have jobs waiting. It
	// matches ErrQueueFull too. Nothing was enqueued.
	ErrTooManyPartitions = errors.New("queue: too many partitions")
	// ErrPartitionFull: an enqueue would take a partition over
	// Config.MaxPartitionLen jobs waiting. It matches ErrQueueFull too.
	// Nothing was enqueued.
	ErrPartitionFull = errors.New("queue: partition full")
)

// partKeys are the keys of the fair set (see above).
func (k keys) fair() string    { return k.tag + ":fair" }
func (k keys) partLen() string { return k.tag + ":partlen" }
func (k keys) partTag() string { return k.tag + ":parttag" }

// Partition puts the job in partition key: the queue serves its partitions
// round-robin, one job of each in turn, so a backlog in one partition does
// not delay the jobs of the others (unpartitioned jobs take their turn as
// one more partition). Within a partition jobs run in enqueue order. The
// job stays in its partition when it is retried, recovered from a dead
// consumer or requeued from the dead letters.
//
// A partition exists while it has jobs waiting, due or delayed (retries
// included): Config.MaxPartitions bounds how many exist at once
// (ErrTooManyPartitions) and Config.MaxPartitionLen the jobs waiting in
// one (ErrPartitionFull); a delayed job counts from its enqueue. Keys are
// 1 to 128 bytes of printable ASCII without spaces, '|', '{' or '}'.
//
// With WaitForRoom, an enqueue refused by either bound (or by
// Config.MaxLen) waits for room: the take of a job of a full partition
// wakes the producers waiting for it, and the take of a partition's last
// job those waiting for a new partition (see WaitForRoom). With Durable
// the job is replicated as any other. With Debounce or ReplacePayload the
// delayed job counts in its partition and goes there when it fires; a
// replacement takes its job's place (it is never refused for room) and
// must name the same partition: one naming another partition, or none,
// fails with an error wrapping ErrInvalidArgument, as does one without
// Partition for a job in a partition. A schedule's occurrences go to a
// partition with the JobPartition schedule option. The option cannot be
// combined with a Priority level above 0 (an error wrapping
// ErrInvalidArgument).
func Partition(key string) EnqueueOption {
	return func(o *enqueueOpts) error {
		if err := validPartition(key); err != nil {
			return fmt.Errorf("queue: Partition: %w", err)
		}
		o.part = key
		return nil
	}
}

// JobPartition is the Partition option of every occurrence of a schedule:
// they run in partition key. Like a retry, an occurrence is never refused
// for room: it enters its partition even when the partition holds
// Config.MaxPartitionLen jobs, or is one more than Config.MaxPartitions (as
// it enters a queue at Config.MaxLen), since a refused occurrence would
// stall its schedule; a schedule has one pending occurrence, so the bounds
// are exceeded by at most the number of schedules. The key is checked at
// Schedule (see Partition); it cannot be combined with JobPriority.
// Workers of versions before JobPartition enqueue the next occurrences of
// such a schedule in no partition: upgrade workers first.
func JobPartition(key string) ScheduleOption {
	return func(s *scheduleDef) error {
		if err := validPartition(key); err != nil {
			return fmt.Errorf("JobPartition: %w", err)
		}
		s.Partition = key
		return nil
	}
}

func validPartition(key string) error {
	if key == "" {
		return errors.New("partition key is empty")
	}
	if len(key) > maxPartitionLen {
		return fmt.Errorf("partition key is %d bytes, the limit is %d", len(key), maxPartitionLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c >= 0x7f || c == '|' || c == '{' || c == '}' {
			return fmt.Errorf("partition key %q has byte %q at %d: use printable ASCII without spaces, '|', '{' or '}'", preview([]byte(key)), c, i)
		}
	}
	return nil
}

// checkPartition refuses the options a partitioned job cannot have.
func checkPartition(o *enqueueOpts) error {
	switch {
	case o.part == "":
		return nil
	case o.level > 0:
		// Partitioned jobs wait in the fair set, which has no levels: a
		// level would be silently ignored (levels.go).
		return fmt.Errorf("queue: the Partition option cannot be combined with Priority(%d): %w: partitioned jobs run at level 0, in turn with the queue's unpartitioned level-0 jobs", o.level, ErrInvalidArgument)
	}
	return nil
}

// partLua is what the scripts know of partitions. partOf(v) is the
// partition of element v, or nil: the one envelope field a script reads,
// placed first after the flags for that (envelope.go). partAdd adds v to
// partition key in the fair set: at the back (a new job) or, with front, to
// be served next (a job put back after it was taken: each one put back goes
// before those put back earlier); with counted, v was counted in partlen
// already (a delayed job: promotion moves it). It answers 1 if v was added
// (0: it was there already). partDel and partDelayedDel take v out of the
// fair set or the delayed set (answering 0 if it was not there), and
// forget its partition when it was the last job.
//
// partlen counts a partition's jobs in the fair set AND in the delayed set
// (delayed at enqueue, or a retry), so that the bounds hold for jobs that
// come due: promotion never refuses, and a count taken only once a job is
// due let Delay(time.Millisecond) walk past MaxPartitionLen and
// MaxPartitions.
const partLua = `
local function partOf(v)
  local flags, key = string.match(v, '^bq1|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([a-z0-9]*)|([^|]*)|')
  -- Only a valid key (validPartition): a malformed element that names
  -- another (empty, or parttag's own fields, which have a space) is no
  -- partition's, and goes where a worker dead-letters it.
  if flags and string.find(flags, 'g', 1, true) and #key > 0 and #key <= 128
    and not string.find(key, '[^!-~]') and not string.find(key, '[{}]') then return key end
  return nil
end
local function partDec(plen, ptag, key)
  if redis.call('HINCRBY', plen, key, -1) <= 0 then
    redis.call('HDEL', plen, key)
    redis.call('HDEL', ptag, key)
  end
end
local function partAdd(fair, plen, ptag, key, v, front, counted)
  local clock = tonumber(redis.call('HGET', ptag, '` + partClockField + `') or '0')
  local last = redis.call('HGET', ptag, key)
  local tag
  if front then
    -- Below every job waiting (tags are >= clock), and below the jobs put
    -- back before it: put back newest first, oldest last (as on the ready
    -- list), a partition's jobs run again in their order. Equal tags would
    -- order them by their bytes, that is by random or callers' IDs.
    local low = redis.call('ZRANGE', fair, 0, 0, 'WITHSCORES')
    tag = clock
    if #low > 0 then tag = math.min(clock, tonumber(low[2]) - 1) end
    if not last then redis.call('HSET', ptag, key, clock) end
  else
    tag = math.max(clock, tonumber(last or '0')) + 1
    redis.call('HSET', ptag, key, tag)
  end
  if redis.call('ZADD', fair, tag, v) == 0 then
    if counted then partDec(plen, ptag, key) end
    return 0
  end
  if not counted then redis.call('HINCRBY', plen, key, 1) end
  return 1
end
local function partDel(fair, plen, ptag, v)
  if redis.call('ZREM', fair, v) == 0 then return 0 end
  local key = partOf(v)
  if key then partDec(plen, ptag, key) end
  return 1
end
local function partDelayedDel(delayed, plen, ptag, v)
  if redis.call('ZREM', delayed, v) == 0 then return 0 end
  local key = partOf(v)
  if key then partDec(plen, ptag, key) end
  return 1
end
`

// partTakeLua is the take script's fragment for partitions (see takeLua):
// takePart(out, n, bytes, budget) takes up to n more jobs into KEYS[2],
// from the partitions and the ready list in turn, and returns the new
// byte count and whether it stopped for want of jobs.
//
// The partitions' candidates are read in windows of the fair set, lowest
// tag first, and taken at the end with one ZREM, one LPUSH and one HINCRBY
// per partition, so a take of n jobs costs a few commands, not a few per
// job. partTaken[key] counts the jobs of each partition taken so far in
// this call.
//
// partMay is the admission hook: a partition for which it answers false
// gives no job now, and the take looks at most partScan candidates past
// the n it needs for one of another partition. (The concurrency and rate
// limits per partition go there.)
const partTakeLua = `
local partScan = 64
local partTaken = {}
local function partMay(key) return true end
local function takePart(out, n, bytes, budget)
  local ready, proc, fair, plen, ptag = KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7]
  local st = redis.call('HMGET', ptag, '` + partClockField + `', '` + partReadyField + `')
  local clock, rtag = tonumber(st[1] or '0'), tonumber(st[2] or '0')
  local readyLeft = redis.call('LLEN', ready) > 0
  local win, off, cands, ci, scanMax = math.min(n, 64), 0, {}, 1, n + partScan
  local cm, cs, ck -- the next candidate of the partitions, nil: none
  local function nextCand()
    while true do
      if ci > #cands then
        if off >= scanMax then return nil end
        cands, ci = redis.call('ZRANGE', fair, off, off + win - 1, 'WITHSCORES'), 1
        off = off + win
        if #cands == 0 then off = scanMax; return nil end
      end
      local m, s = cands[ci], tonumber(cands[ci+1])
      ci = ci + 2
      local key = partOf(m)
      if key == nil or partMay(key) then return m, s, key end
    end
  end
  cm, cs, ck = nextCand()
  local taken, keys, dry = {}, {}, false
  local got = 0
  while got < n and bytes < budget do
    local rt = math.max(rtag, clock) + 1
    local v = nil
    if readyLeft and (cm == nil or rt <= cs) then
      v = redis.call('LMOVE', ready, proc, 'RIGHT', 'LEFT')
      if v then rtag, clock = rt, rt else readyLeft = false end
    elseif cm ~= nil then
      v = cm
      taken[#taken+1] = cm
      if cs > clock then clock = cs end
      if ck ~= nil then
        if partTaken[ck] == nil then keys[#keys+1] = ck; partTaken[ck] = 0 end
        partTaken[ck] = partTaken[ck] + 1
      end
      cm, cs, ck = nextCand()
    else
      dry = true
      break
    end
    if v then
      got = got + 1
      out[#out+1] = v
      bytes = bytes + #v
    end
  end
  for i = 1, #taken, 1000 do
    local part = {unpack(taken, i, math.min(i + 999, #taken))}
    redis.call('ZREM', fair, unpack(part))
    redis.call('LPUSH', proc, unpack(part))
  end
  if #taken > 0 then
    for _, key in ipairs(keys) do
      if redis.call('HINCRBY', plen, key, -partTaken[key]) <= 0 then
        redis.call('HDEL', plen, key)
        redis.call('HDEL', ptag, key)
      end
    end
  end
  redis.call('HSET', ptag, '` + partClockField + `', clock, '` + partReadyField + `', rtag)
  return bytes, dry
end
`

// partEnqueueScript enqueues partitioned jobs: all of them, or none when
// they do not fit (duplicate IDs take no room and are answered 0). Jobs due
// now go to the fair set, delayed ones to the delayed set (their partition
// is in their element; promotion puts them in it); both count in their
// partition at once (partLua).
// KEYS: fair, partlen, parttag, bell, delayed, ready, wake, payloads,
// drain, waiters, partition waiters (parts_wait.go), the level ready lists
// (counted for MaxLen, levels.go), then the unique keys in use, each
// followed by its 4 end keys (appendJob).
// ARGV: max partitions, max partition length (0: none), queue limit (0:
// none), marker, wake TTL ms, unique TTL ms, waiters TTL ms (0: the caller
// does not wait), then for each job five values: due ms (0 = now),
// envelope, index of its unique key in KEYS (0 = none), payload ref (” =
// inline), partition.
// Returns one 1 (added) or 0 (duplicate ID) per job; refused: {-1, length,
// dn, dt, t} (the queue is full, see boundedScript), {-2, partitions} (too
// many partitions) or {-3, length, partition} (the partition is full); a
// refusal of a waiting caller marks it in the waiters key (-1) or the
// partition waiters (-2, -3).
var partEnqueueScript = redis.NewScript(typeLua + wakeLua + boundedLua + partLua + partRoomLua + `
local function dropRefs(only)
  for i = 8, #ARGV, 5 do
    if ARGV[i+3] ~= '' and (only == nil or only[i]) then redis.pcall('HDEL', KEYS[8], ARGV[i+3]) end
  end
end
local bad = wrongtype(KEYS[1], 'zset') or wrongtype(KEYS[2], 'hash') or wrongtype(KEYS[3], 'hash') or
  wrongtype(KEYS[5], 'zset') or wrongtype(KEYS[6], 'list') or wrongtype(KEYS[8], 'hash')
if bad then
  dropRefs(nil)
  return redis.error_reply(bad)
end
local dup, jobs, adds, cur, order, fresh = {}, 0, {}, {}, {}, 0
for i = 8, #ARGV, 5 do
  local u = tonumber(ARGV[i+2])
  if u > 0 and redis.call('EXISTS', KEYS[u]) == 1 then
    dup[i] = true
  else
    jobs = jobs + 1
    local key = ARGV[i+4]
    if adds[key] == nil then
      adds[key] = 0
      cur[key] = tonumber(redis.call('HGET', KEYS[2], key) or '0')
      if cur[key] == 0 then fresh = fresh + 1 end
      order[#order+1] = key
    end
    adds[key] = adds[key] + 1
  end
end
local limit = tonumber(ARGV[3])
if limit > 0 and jobs > 0 then
  local len = count(KEYS[6], KEYS[5], ARGV[4], KEYS[1], 12)
  if len + jobs > limit then
    dropRefs(nil)
    return refuse(len, KEYS[9], KEYS[10], ARGV[3], ARGV[7])
  end
end
if fresh > 0 then
  local parts = redis.call('HLEN', KEYS[2])
  if parts + fresh > tonumber(ARGV[1]) then
    dropRefs(nil)
    partMarkWait(KEYS[11], '` + roomNewPart + `', ARGV[1], ARGV[7])
    return {-2, parts}
  end
end
local maxLen = tonumber(ARGV[2])
if maxLen > 0 then
  for _, key in ipairs(order) do
    if cur[key] + adds[key] > maxLen then
      dropRefs(nil)
      partMarkWait(KEYS[11], key, ARGV[2], ARGV[7])
      return {-3, cur[key], key}
    end
  end
end
dropRefs(dup)
local out, earliest, rung = {}, nil, false
for i = 8, #ARGV, 5 do
  if dup[i] then
    out[#out+1] = 0
  else
    local due, u = tonumber(ARGV[i]), tonumber(ARGV[i+2])
    if u > 0 then redis.call('SET', KEYS[u], '1', 'PX', ARGV[6]); redis.call('DEL', KEYS[u+1], KEYS[u+2], KEYS[u+3], KEYS[u+4]) end
    if due == 0 then
      partAdd(KEYS[1], KEYS[2], KEYS[3], ARGV[i+4], ARGV[i+1], false)
      rung = true
    else
      redis.call('ZADD', KEYS[5], due, ARGV[i+1])
      redis.call('HINCRBY', KEYS[2], ARGV[i+4], 1) -- counted from now (partLua)
      if earliest == nil or due < earliest then earliest = due end
    end
    out[#out+1] = 1
  end
end
if rung then redis.call('ZADD', KEYS[4], 0, '1') end
if earliest ~= nil then wake(KEYS[5], KEYS[6], KEYS[7], earliest, ARGV[4], ARGV[5], KEYS[4]) end
return out
`)

// partKeys are the keys the scripts that route jobs back to their
// partition take after their own.
func (q *Queue) partKeys() []string { return []string{q.k.fair(), q.k.partLen(), q.k.partTag()} }

// enqueueParts writes partitioned jobs (all in one script call, their
// payloads kept apart written by an HSET in the same MULTI) and reports
// which were added (false: a duplicate ID). With wait, a refused enqueue
// waits for room (WaitForRoom: wait.go, parts_wait.go).
func (q *Queue) enqueueParts(ctx context.Context, prs []prepared, wait bool) ([]bool, error) {
	return q.waitForRoom(ctx, prs, wait, func(mark bool) ([]bool, error) {
		return q.enqueuePartsUnder(ctx, prs, q.partBounds(mark))
	})
}

// partBounds are the bounds partEnqueueScript checks a producer's jobs
// against: the queue's, or none (noPartBounds: a schedule's occurrence,
// cron.go). wait marks the producers as waiting when refused (wait.go).
type partBounds struct {
	maxParts, maxPartLen, maxLen int64
	wait                         bool
}

func (q *Queue) partBounds(wait bool) partBounds {
	return partBounds{int64(q.cfg.MaxPartitions), int64(q.cfg.MaxPartitionLen), int64(q.cfg.MaxLen), wait}
}

// noPartBounds: a partition count no queue reaches, no length limits.
var noPartBounds = partBounds{maxParts: 1 << 53}

func (q *Queue) enqueuePartsUnder(ctx context.Context, prs []prepared, b partBounds) ([]bool, error) {
	ks, args, apart := q.partArgs(prs, b)
	var cmd *redis.Cmd
	if apart {
		cmd = q.runApart(ctx, q.p.Client(), partEnqueueScript, prs, ks, args...)
	} else {
		cmd = partEnqueueScript.Run(ctx, q.p.Client(), ks, args...)
	}
	return q.partReply(cmd, prs)
}

// partArgs builds the KEYS and ARGV of partEnqueueScript, and reports
// whether a payload is kept apart (to be written by an HSET first).
func (q *Queue) partArgs(prs []prepared, b partBounds) (ks []string, args []any, apart bool) {
	ks = q.k.withLevels(q.k.fair(), q.k.partLen(), q.k.partTag(), q.k.bell, q.k.delayed, q.k.ready, q.k.wake, q.k.payloads,
		q.k.drainKey(), q.k.waitersKey(), q.k.partWaiters())
	args = make([]any, 0, 7+5*len(prs))
	args = append(args, b.maxParts, b.maxPartLen, b.maxLen, wakeMarker, wakeTTL.Milliseconds(), q.uniqueTTL(prs[0].due), waitTTL(b.wait))
	for _, pr := range prs {
		ks, args = q.appendJob(ks, args, pr)
		args = append(args, pr.part)
		apart = apart || pr.ref != ""
	}
	return ks, args, apart
}

// partReply reads partEnqueueScript's reply for prs, and tells this
// process's schedulers about the delayed jobs it added.
func (q *Queue) partReply(cmd *redis.Cmd, prs []prepared) ([]bool, error) {
	res, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	if len(res) > 0 {
		if code, _ := res[0].(int64); code < 0 {
			return nil, q.partRefusal(res, prs)
		}
	}
	if len(res) != len(prs) {
		return nil, fmt.Errorf("enqueue script answered %v", res)
	}
	added := make([]bool, len(res))
	var earliest time.Time
	for i, r := range res {
		added[i] = r == int64(1)
		if due := prs[i].due; added[i] && !due.IsZero() && (earliest.IsZero() || due.Before(earliest)) {
			earliest = due
		}
	}
	if !earliest.IsZero() {
		q.notifyDelayed(earliest)
	}
	return added, nil
}

// partRefusal is the error for a refusal of partEnqueueScript of prs.
func (q *Queue) partRefusal(res []any, prs []prepared) error {
	n := func(i int) int64 {
		if i < len(res) {
			v, _ := res[i].(int64)
			return v
		}
		return 0
	}
	q.refused.Add(1)
	part := prs[0].part
	switch n(0) {
	case -1:
		return q.fullError(n(1), int64(len(prs)), n(2), n(3), n(4))
	case -2:
		return &partRefusedError{on: roomNewPart, fits: true, err: fmt.Errorf("%w (%w): partition %q would be one more than the %d partitions with jobs waiting (Config.MaxPartitions)",
			ErrTooManyPartitions, ErrQueueFull, part, q.cfg.MaxPartitions)}
	default:
		if len(res) > 2 {
			if s, ok := res[2].(string); ok {
				part = s
			}
		}
		jobs := 0
		for _, pr := range prs {
			if pr.part == part {
				jobs++
			}
		}
		return &partRefusedError{on: part, fits: int64(jobs) <= q.cfg.MaxPartitionLen, err: fmt.Errorf("%w (%w): partition %q holds %d jobs waiting, the limit is %d (Config.MaxPartitionLen)",
			ErrPartitionFull, ErrQueueFull, part, n(1), q.cfg.MaxPartitionLen)}
	}
}

// fairJobs adds to page the jobs waiting in partitions, in the order they
// are served, after cursor cur (Inspector.Jobs, StateReady). Their handles
// name them by tag and ID, like delayed jobs.
func (in *Inspector) fairJobs(ctx context.Context, k keys, queue string, page JobPage, cur cursor, limit int) (JobPage, error) {
	vals, more, err := in.zsetPage(ctx, []string{k.fair()}, cur, limit, false, true)
	if err != nil {
		return JobPage{}, err
	}
	var last, lastScore string
	for i := 0; i+1 < len(vals); i += 2 {
		e, _ := vals[i].(string)
		score, _ := vals[i+1].(string)
		last, lastScore = e, score
		j := listed(queue, StateReady, e)
		j.Handle = encodeHandle(StateReady, "g", score, memberPrefix(e))
		page.Jobs = append(page.Jobs, j)
	}
	if more && last != "" {
		page.Next = encodeCursor(StateReady, "p", lastScore, memberPrefix(last))
	}
	return page, nil
}
