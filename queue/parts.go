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

// Partitions (tenants). A job enqueued with the Partition option waits in
// the queue's partitioned jobs set instead of its ready list, and the take
// script serves the partitions in turn, one job per partition per turn, so
// that one partition's backlog cannot delay the jobs of the others.
//
// The model is start-time fair queueing over an index of the partitions
// that may run, on seven keys of fixed names (no key per partition, so
// scripts never build key names, and 10,000 partitions cost what one
// does):
//
//   - pjobs, a sorted set of the partitioned jobs due, each partition's a
//     contiguous range of scores: idx * 2^31 + seq, where idx is the
//     partition's index (below) and seq its jobs' order: each priority
//     level has its band of seq (below), in which the first job takes
//     the middle, later ones at the back +1, a job put back at the front
//     -1; the members are the plain elements, so whatever removes a job
//     by its element (Cancel, Delete, the Inspector) still does. A
//     partition's next job is one ZRANGEBYSCORE ... LIMIT 0 1.
//   - plen, a hash: partition -> its jobs in pjobs and in the delayed set
//     (HLEN is the number of partitions with work: MaxPartitions);
//   - ptag, a hash: partition -> its finish tag (the tag of its last job
//     served + 1/weight), for the partitions out of psched (one in psched
//     has it as its score), plus the queue's virtual clock (the tag of the
//     job served last) and the tag the unpartitioned ready list was served
//     at last;
//   - psched, a sorted set of the partitions with jobs in pjobs that may
//     run, scored by the tag of their next job;
//   - phold, a sorted set of the partitions with jobs in pjobs that may
//     not run now (at their concurrency limit: score 2^53, partAtLimit); the release
//     of one of their slots moves them back to psched;
//   - pidx, a hash: partition -> its index, plus the next index never
//     used (and the flags partWeightsField and partWideField); pfree, a
//     list of the indices given back. A partition holds an
//     index while it exists, so indices stay below the number of
//     partitions that exist at once (MaxPartitions <= 10^6, well below the
//     2^22 that keep the scores exact doubles).
//
// With no partition left, pidx, pfree and ptag go (the indices and the
// clocks start over): a drained queue keeps no key of its partitions.
//
// A partition that gets a job while in neither sorted set enters psched at
// max(clock, its finish tag): a partition with a backlog of 100,000 is
// served once per turn like any other, and one that gets its first job now
// is served within one turn of every partition with work. The take serves
// the lowest tag of psched (the unpartitioned ready list takes part as one
// more partition, tagged when it is served), and moves a partition its
// limits refuse to phold: a partition at its limit costs one move, then
// nothing, however long its backlog (a scan of the jobs in tag order
// stalled behind such a backlog once the clock had passed it). A
// partition with no job left is forgotten (its fields go and its index is
// given back), so every key holds only partitions with work. psched and
// phold together hold exactly the partitions with jobs in pjobs.
//
// Levels within a partition. A partitioned job with Priority(l), l > 0,
// takes its seq in level l's band of its partition's range: level l > 0
// from (MaxLevel-l) * 2^28, 2^28 positions; level 0 from MaxLevel * 2^28
// to the end of the range (5 * 2^28 positions, holding 2^30, where the
// layout before levels put a partition's first job, so jobs it left stay
// in order at level 0). Higher levels lie lower, so the partition's next
// job (the take's ZRANGEBYSCORE over its whole range, unchanged) is its
// highest level's first, then that level's others in enqueue order, then
// the next level's; a put-back goes to the front of its level's band.
// The level orders jobs within their partition only: the partitions take
// turns as without levels (a partition's turn is not brought forward by
// its job's level, nor is the unpartitioned level-0 list's), and a
// partitioned job never runs before the queue's unpartitioned level lists
// above 0, which the take serves before any partition. Strict levels
// across partitions would let a tenant that marks its jobs urgent starve
// the others, which is what partitions prevent. The level comes from the
// element (flag "p<l>", partLevel), so retries, recoveries, requeued dead
// letters and a schedule's occurrences keep it.
//
// When a level's seq runs out at one end of its band (after about 2^27
// jobs, half the band, at one end without that level of the partition
// ever running dry), the next job renumbers that level's jobs around the
// middle of the band (O(its jobs)); a band holds at most its width of
// jobs (2^28 at a level above 0), and an enqueue beyond that fails
// rather than mixing the levels: whole, before it writes anything
// (partEnqueueScript counts the bands of a partition whose jobs may fill
// one; TestPartitionPriorityFullBandBatch); a promotion, put-back or
// requeue beyond fails its script (partRenumber).
//
// Encodings. Redis keeps a sorted set or hash of up to 128 entries of up
// to 64 bytes as a listpack, where every lookup and insert scans the
// entries: at 100 partitions psched's ZADD of the tags and the lookups in
// pidx and plen were a third of a take's instructions. A take over more
// partitions than its window turns psched into a skiplist and pidx, plen
// and ptag into hashtables (partWide in partTakeLua: a member or field
// over 64 bytes, added and removed in the same call); the hashes once
// while pidx exists (the flag partWideField), psched whenever it holds
// more than a window (it goes when empty and comes back a listpack). The
// members, fields and scores are those of the builds before: a build that
// does not widen reads and writes the same keys (the flag is a field with
// a space, which no partition has), so both can consume one queue.
//
// Jobs left in the fair set of a build before this layout ({ns:q}:fair,
// scored by tag) are not read.

// Field names of ptag (and pidx: partNextField) that are not partitions
// (a partition has no space).
const (
	partClockField = " clock"
	partReadyField = " ready"
	partNextField  = " next"
	// partWeightsField in pidx: some partition has a weight (set with the
	// first, gone with pidx when no partition is left), so a take reads
	// weights only then.
	partWeightsField = " weights"
	// partWideField in pidx: the take turned pidx, plen and ptag into
	// hashtables (partWiden), for as long as pidx exists.
	partWideField = " wide"
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

// The keys of the partitions (see above); fair is pjobs, the partitioned
// jobs due.
func (k keys) fair() string      { return k.tag + ":pjobs" }
func (k keys) partLen() string   { return k.tag + ":plen" }
func (k keys) partTag() string   { return k.tag + ":ptag" }
func (k keys) partSched() string { return k.tag + ":psched" }
func (k keys) partHold() string  { return k.tag + ":phold" }
func (k keys) partIdx() string   { return k.tag + ":pidx" }
func (k keys) partFree() string  { return k.tag + ":pfree" }

// partKeyCount is how many keys partKeys gives (partKeysAt reads them).
const partKeyCount = 7

// partKeys are the partition keys, in the order the scripts take them
// (partLua's partKeysAt).
func (k keys) partKeys() []string {
	return []string{k.fair(), k.partLen(), k.partTag(), k.partSched(), k.partHold(), k.partIdx(), k.partFree()}
}

// Partition puts the job in partition key: the queue serves its partitions
// round-robin, one job of each in turn, so a backlog in one partition does
// not delay the jobs of the others (unpartitioned jobs take their turn as
// one more partition). Within a partition jobs run by level (Priority),
// highest first, and within a level in enqueue order. The job stays in
// its partition, at its level, when it is retried, recovered from a dead
// consumer or requeued from the dead letters.
//
// With Priority(l), l > 0, the level orders the job within its partition
// only: it runs before the partition's jobs of lower levels, but the
// partitions still take turns as they do without levels, and the queue's
// unpartitioned jobs of levels above 0 still run before every partitioned
// job. A level that ran a partition's job before the other partitions'
// would let a tenant that marks all its jobs urgent starve the others,
// which is what partitions are for; to favour a tenant, give its
// partition a weight (PartitionWeight).
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
// partition with the JobPartition schedule option (and to a level in it
// with JobPriority).
func Partition(key string) EnqueueOption {
	return func(o *enqueueOpts) error {
		if err := validPartition(key); err != nil {
			return fmt.Errorf("queue: Partition: %w", err)
		}
		o.part = key
		return nil
	}
}

// Bounds of PartitionWeight.
const maxPartitionWeight = 1000

// PartitionWeight gives the job's partition weight w (1 to 1000, default
// 1): the partition is served w jobs per turn of a partition of weight 1
// (its tag advances by 1/w per job served). The weight is stored with the
// partition while it exists (while it has jobs waiting, due or delayed):
// an enqueue with the option sets it (the last one wins), an enqueue
// without it keeps the partition's weight as it is, and a partition that
// starts (or ran dry and comes back) has weight 1 unless its enqueue says
// otherwise. Retries, recovered jobs, requeued dead letters, a schedule's
// occurrences (JobPartition) and debounced jobs without the option keep
// the partition's weight too. It needs the Partition option.
func PartitionWeight(w int) EnqueueOption {
	return func(o *enqueueOpts) error {
		if w < 1 || w > maxPartitionWeight {
			return fmt.Errorf("queue: PartitionWeight must be in 1..%d, got %d: %w", maxPartitionWeight, w, ErrInvalidArgument)
		}
		o.pweight = w
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
// Schedule (see Partition). With JobPriority the occurrences run at that
// level within the partition (see Partition: the level orders jobs within
// their partition only).
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

// checkPartition refuses PartitionWeight without Partition (a level with
// Partition is the job's level within its partition).
func checkPartition(o *enqueueOpts) error {
	if o.part == "" && o.pweight > 0 {
		return fmt.Errorf("queue: the PartitionWeight option needs the Partition option: %w", ErrInvalidArgument)
	}
	return nil
}

// partLua is what the scripts know of partitions. partOf(v) is the
// partition of element v, or nil: the one envelope field a script reads,
// placed first after the flags for that (envelope.go). partKeysAt(i) names
// the partition keys given from KEYS[i] (keys.partKeys), P below.
// partAdd(P, key, v, front, counted) adds v to partition key, in the band
// of its level (partLevel(v)): at the back of its level (a new job) or,
// with front, before the other jobs of its level and with the partition's
// turn at the clock (a job put back after it was taken: each one put back
// goes before those of its level put back earlier); with counted, v was
// counted in plen already (a delayed job: promotion moves it). It answers
// 1 if v was added (0: it was there already). partDel(P, v) and
// partDelayedDel(delayed, P, v) take v out of pjobs or the delayed set
// (answering 0 if it was not there), and forget its partition when it was
// the last job. partRelease(P, key) moves a partition held at its limit
// back to psched (a slot of it was given back).
//
// plen counts a partition's jobs in pjobs AND in the delayed set (delayed
// at enqueue, or a retry), so that the bounds hold for jobs that come due:
// promotion never refuses, and a count taken only once a job is due let
// Delay(time.Millisecond) walk past MaxPartitionLen and MaxPartitions.
//
// Scores and tags are written with string.format: Lua's own conversion of
// a number keeps 14 digits, and a score idx * 2^31 + seq has up to 16.
// Integers go as '%d' (partInt), and so does every number a hot path
// passes to redis.call: Redis formats a Lua number argument as '%.17g',
// and float formats cost ten times more than integer ones (measured with
// callgrind: they were a tenth of a take's instructions).
var partLua = partLuaFor(partSpan, partBand)

// A partition's range of scores in pjobs (partSpan), and the band of each
// level above 0 in it (partBand): see "Levels within a partition" above.
// Level 0's band, from MaxLevel*partBand to the end of the range, holds
// partMid, the seq of the first job of a partition in the layout before
// levels, so the jobs that layout left stay in order at level 0.
const (
	partSpan = 1 << 31
	partMid  = 1 << 30
	partBand = 1 << 28
)

// The bands of the levels above 0 end at least partBand below partMid,
// leaving level 0 room for put-backs below the old middle (a constant that
// would be negative stops the build: MaxLevel grew).
const _ uint = partMid - MaxLevel*partBand - partBand

// partLuaFor is partLua for a range of span scores per partition and
// bands of band scores per level above 0 (a test uses tiny ones to run
// the bands out).
func partLuaFor(span, band int) string {
	return strings.NewReplacer("@span@", strconv.Itoa(span), "@band@", strconv.Itoa(band),
		"@maxlevel@", strconv.Itoa(MaxLevel)).Replace(partLuaTmpl)
}

const partLuaTmpl = `
local partSpan, partBand, partMaxLevel = @span@, @band@, @maxlevel@
-- partAtLimit: the phold score of a partition at its concurrency limit
-- (above any instant in ms; a number, as not every Lua reads 'inf' back).
local partAtLimit = '9007199254740992'
-- What this call of the script learned (a batch adds many jobs to one
-- partition): partition -> index, index -> {first, last} seq used, and
-- the partitions partSchedule saw scheduled.
local partIdxOf, partEdges, partSeen = {}, {}, {}
-- partNone: partForget forgot the last partition (with plen gone, ptag
-- went too: takePart writes no clock then).
local partNone = false
local function partOf(v)
  local flags, key = string.match(v, '^bq1|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([a-z0-9]*)|([^|]*)|')
  -- Only a valid key (validPartition): a malformed element that names
  -- another (empty, or ptag's own fields, which have a space) is no
  -- partition's, and goes where a worker dead-letters it.
  if flags and string.find(flags, 'g', 1, true) and #key > 0 and #key <= 128
    and not string.find(key, '[^!-~]') and not string.find(key, '[{}]') then return key end
  return nil
end
-- partLevel(v): the priority level of element v, its flag "p<l>" (as
-- levelLua's levelOf), else 0.
local function partLevel(v)
  local flags = string.match(v, '^bq1|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([a-z0-9]*)|')
  local l = flags and tonumber(string.match(flags, 'p(%d)') or '0') or 0
  if l > partMaxLevel then return 0 end
  return l
end
-- partBandOf(l): the first and last seq of level l's band in a
-- partition's range (parts.go: higher levels lower, so a partition's
-- first job is its highest level's first).
local function partBandOf(l)
  if l <= 0 then return partMaxLevel * partBand, partSpan - 1 end
  local lo = (partMaxLevel - l) * partBand
  return lo, lo + partBand - 1
end
local function partKeysAt(i)
  return {jobs = KEYS[i], len = KEYS[i+1], tag = KEYS[i+2], sched = KEYS[i+3], hold = KEYS[i+4],
    idx = KEYS[i+5], free = KEYS[i+6]}
end
-- partInt formats an integer (below 2^53) as a long: exact, and a fraction
-- of the cost of a float format. partNum formats a tag: an integral one
-- (every tag while no partition has a weight) as partInt does, the same
-- digits as '%.17g' gives.
local function partInt(x) return string.format('%d', x) end
local function partNum(x)
  if x == math.floor(x) and x > -9007199254740992 and x < 9007199254740992 then return string.format('%d', x) end
  return string.format('%.17g', x)
end
-- partJobs: up to cnt of the jobs of the partition of index idx, from its
-- off-th, in order.
local function partJobs(P, idx, off, cnt)
  local lo = idx * partSpan
  return redis.call('ZRANGEBYSCORE', P.jobs, partInt(lo), partInt(lo + partSpan - 1), 'LIMIT', partInt(off), partInt(cnt))
end
local function partForget(P, key)
  local idx = redis.call('HGET', P.idx, key)
  partIdxOf[key], partSeen[key] = nil, nil
  if idx then partEdges[tonumber(idx)] = nil end
  redis.call('HDEL', P.len, key)
  redis.call('HDEL', P.tag, key)
  redis.call('ZREM', P.sched, key)
  redis.call('ZREM', P.hold, key)
  redis.call('HDEL', P.idx, key .. ' w')
  if idx then redis.call('HDEL', P.idx, key) end
  if redis.call('HLEN', P.len) == 0 then
    -- No partition left: the indices and the clocks start over (every key
    -- of the partitions goes: a drained queue leaves none). Also when the
    -- last was one with delayed jobs only, which never had an index.
    redis.call('DEL', P.idx, P.free, P.tag)
    partNone = true
  elseif idx then
    redis.call('RPUSH', P.free, idx)
  end
end
local function partDec(P, key, by)
  if redis.call('HINCRBY', P.len, key, partInt(-(by or 1))) <= 0 then
    partForget(P, key)
    return true
  end
  return false
end
local function partIdx(P, key)
  if partIdxOf[key] then return partIdxOf[key] end
  local i = redis.call('HGET', P.idx, key)
  if not i then
    i = redis.call('LPOP', P.free)
    if not i then i = redis.call('HINCRBY', P.idx, '` + partNextField + `', 1) - 1 end
    redis.call('HSET', P.idx, key, i)
  end
  partIdxOf[key] = tonumber(i)
  return partIdxOf[key]
end
-- partBandJobs: the jobs of level l's band of the partition of index idx,
-- in order.
local function partBandJobs(P, idx, l)
  local lo, hi = partBandOf(l)
  return redis.call('ZRANGEBYSCORE', P.jobs, partInt(idx * partSpan + lo), partInt(idx * partSpan + hi))
end
-- partRenumber scores the jobs of level l of the partition around the
-- middle of their band, in their order, leaving at least one seq free at
-- the front (with front) or the back (its seq ran out at that end).
local function partRenumber(P, key, idx, l, front)
  if partEdges[idx] then partEdges[idx][l] = nil end
  local lo, hi = partBandOf(l)
  local all = partBandJobs(P, idx, l)
  if #all >= hi - lo + 1 then
    error('queue: level ' .. l .. ' of partition ' .. key .. ' is full: ' .. #all .. ' jobs, the room of its band')
  end
  local s = lo + math.floor((hi - lo + 1) / 2) - math.floor(#all / 2)
  if front then s = math.max(s, lo + 1) else s = math.min(s, hi - #all) end
  s = idx * partSpan + s
  for i = 1, #all, 500 do
    local args = {}
    for j = i, math.min(i + 499, #all) do
      args[#args+1] = partInt(s + j - 1)
      args[#args+1] = all[j]
    end
    redis.call('ZADD', P.jobs, unpack(args))
  end
end
-- partSeq: the score for a new job of level l at the back (or front) of
-- its level in partition key of index idx; partEdges remembers it for the
-- next job of this call.
local function partSeq(P, key, idx, l, front)
  local blo, bhi = partBandOf(l)
  local lo, hi = idx * partSpan + blo, idx * partSpan + bhi
  if not partEdges[idx] then partEdges[idx] = {} end
  for _ = 1, 2 do
    local edge = partEdges[idx][l]
    if edge == nil then
      local first = redis.call('ZRANGEBYSCORE', P.jobs, partInt(lo), partInt(hi), 'WITHSCORES', 'LIMIT', 0, 1)
      local last = redis.call('ZREVRANGEBYSCORE', P.jobs, partInt(hi), partInt(lo), 'WITHSCORES', 'LIMIT', 0, 1)
      if #first == 0 then
        local mid = lo + math.floor((bhi - blo + 1) / 2)
        edge = {mid + 1, mid - 1} -- the next job takes the middle
      else
        edge = {tonumber(first[2]), tonumber(last[2])}
      end
      partEdges[idx][l] = edge
    end
    if front and edge[1] > lo then
      edge[1] = edge[1] - 1
      if edge[2] < edge[1] then edge[2] = edge[1] end
      return edge[1]
    end
    if not front and edge[2] < hi then
      edge[2] = edge[2] + 1
      if edge[1] > edge[2] then edge[1] = edge[2] end
      return edge[2]
    end
    partRenumber(P, key, idx, l, front)
  end
  error('partition renumbering failed')
end
-- partSchedule puts partition key in psched (when in neither set) at
-- max(clock, its finish tag), or with front at the clock.
local function partSchedule(P, key, front)
  if partSeen[key] and not front then return end
  if redis.call('ZSCORE', P.hold, key) then return end
  local cur = redis.call('ZSCORE', P.sched, key)
  partSeen[key] = true
  if cur and not front then return end
  local st = redis.call('HMGET', P.tag, '` + partClockField + `', key)
  local clock = tonumber(st[1] or '0')
  local t = math.max(clock, tonumber(st[2] or '0'))
  if front then t = clock end
  if cur and tonumber(cur) <= t then return end
  redis.call('ZADD', P.sched, partNum(t), key)
end
local function partAdd(P, key, v, front, counted)
  local idx = partIdx(P, key)
  if redis.call('ZADD', P.jobs, 'NX', partInt(partSeq(P, key, idx, partLevel(v), front)), v) == 0 then
    if counted then partDec(P, key) end
    return 0
  end
  if not counted then redis.call('HINCRBY', P.len, key, '1') end
  partSchedule(P, key, front)
  return 1
end
-- partGone: partition key has no job in pjobs left (it may still exist,
-- with delayed jobs): it leaves psched and phold.
local function partGone(P, key)
  local idx = redis.call('HGET', P.idx, key)
  if not idx or #partJobs(P, tonumber(idx), 0, 1) == 0 then
    partSeen[key] = nil
    -- Its tag in psched is its finish tag (ptag has it only for the
    -- partitions out of psched).
    local t = redis.call('ZSCORE', P.sched, key)
    if t then redis.call('HSET', P.tag, key, t) end
    redis.call('ZREM', P.sched, key)
    redis.call('ZREM', P.hold, key)
  end
end
local function partDel(P, v)
  if redis.call('ZREM', P.jobs, v) == 0 then return 0 end
  local key = partOf(v)
  if key and not partDec(P, key) then partGone(P, key) end
  return 1
end
local function partDelayedDel(delayed, P, v)
  if redis.call('ZREM', delayed, v) == 0 then return 0 end
  local key = partOf(v)
  if key then partDec(P, key) end
  return 1
end
-- partSetWeight sets the weight of partition key to w (PartitionWeight),
-- kept in pidx while the partition exists; w '0' (no option given) keeps
-- its current weight (1 for a new partition).
local function partSetWeight(P, key, w)
  if w == '0' then return end
  if w == '1' then
    redis.call('HDEL', P.idx, key .. ' w')
  else
    redis.call('HSET', P.idx, key .. ' w', w, '` + partWeightsField + `', 1)
  end
end
-- partUnholdAll moves partitions of phold back to psched, 100 at most.
local function partUnholdAll(P)
  local held = redis.call('ZRANGE', P.hold, 0, 99)
  for _, key in ipairs(held) do
    redis.call('ZREM', P.hold, key)
    partSchedule(P, key, false)
  end
end
local function partRelease(P, key)
  local h = redis.call('ZSCORE', P.hold, key)
  if not h or tonumber(h) < tonumber(partAtLimit) then return false end
  redis.call('ZREM', P.hold, key)
  partSchedule(P, key, false)
  return true
end
`

// partTakeLua is the take script's fragment for partitions (see takeLua):
// takePart(out, n, bytes, budget) takes up to n more jobs into KEYS[2],
// from the partitions (keys from KEYS[5]) and the ready list in turn, and
// returns the new byte count and whether it stopped for want of jobs.
//
// psched is read in windows of n+1 partitions (one ZRANGE) and written
// at the end (one ZADD of the next tags of the partitions served that
// have jobs left, one ZREM of those that leave it, one ZADD to phold).
// A partition's jobs are read from its range when it is served: its next
// job and the one after (whether one follows), and, when it is served
// again in the same call, twice as many as the last read (up to the slots
// left plus one, at most 64), so a partition served k times costs about
// log2(k) ZRANGEBYSCOREs, and k partitions served once each k. Each window
// costs one HMGET of its partitions' indices and weights (and partWindow's
// reads); the jobs leave pjobs with one ZREM and enter the processing
// list with one LPUSH, the counts of the partitions served are read with
// one HMGET and written with one HSET (one left with no job is
// forgotten), and the tags with one HSET, all at the end (a call from Lua
// costs the conversion of its arguments and reply besides its own work).
// partTaken[key] counts the jobs of each partition taken so far in this
// call, partKeyOf[v] the partition of each job v taken (partWake and the
// limits read it instead of parsing the element again).
//
// partMay is the admission hook: a partition for which it answers false
// gives no job now and moves to phold (scored by partHoldAt), so the take
// never looks at it again until a release (partRelease) or its instant
// (partUnhold, at the start of a take) moves it back; partTook(key) is
// told of each job taken, partWindow(keys) of the partitions of each
// window read (the limits read their counts of these in one HMGET). A
// take without the hooks (no per-partition
// limit: none may be held) moves back what phold holds, 100 per take:
// partitions a limit held before the consumers lost their limit. The
// concurrency and rate limits per partition replace them
// (limitPartMayLua).
const partTakeLua = `
local partTaken, partKeyOf = {}, {}
-- partWide is a member and field longer than the 64 bytes up to which
-- Redis keeps a sorted set or hash of up to 128 entries as a listpack
-- (zset- and hash-max-listpack-value): there every lookup and insert scans
-- the entries, and with 100 partitions those scans were a third of a
-- take's instructions (callgrind: psched's ZADD of the tags, the HMGETs of
-- pidx and plen). Written and removed in one call, it turns the key into a
-- skiplist or hashtable, which Redis keeps as long as the key exists. The
-- take adds it to psched whenever psched holds more than a window (psched
-- goes when empty and comes back a listpack), and to the hashes once
-- (partWiden, flagged in pidx, which lives as long as plen does). A
-- server with larger listpack limits keeps its listpacks: nothing else
-- changes. No partition has a space.
local partWide = ' wide' .. string.rep('.', 64)
local function partWiden(P)
  redis.call('HSET', P.idx, partWide, '', '` + partWideField + `', '1')
  redis.call('HDEL', P.idx, partWide)
  redis.call('HSET', P.len, partWide, '')
  redis.call('HDEL', P.len, partWide)
  redis.call('HSET', P.tag, partWide, '')
  redis.call('HDEL', P.tag, partWide)
end
` + partHooksDefault + `
local function takePart(out, n, bytes, budget)
  local ready, proc = KEYS[1], KEYS[2]
  local P = partKeysAt(5)
  partUnhold(P)
  local st = redis.call('HMGET', P.tag, '` + partClockField + `', '` + partReadyField + `')
  local clock, rtag = tonumber(st[1] or '0'), tonumber(st[2] or '0')
  local readyLeft = redis.call('LLEN', ready) > 0
  -- psched is read in windows, lowest tags first, and written once at the
  -- end, so the offsets of its entries hold meanwhile. pend holds the
  -- partitions served here that have jobs left, at their next tag: they
  -- compete with the window's. gone: the partitions that leave psched
  -- (held, or no job left).
  local win, wi, off, wsize, more = {}, 1, 0, n + 1, true
  -- wide: psched holds more than a window (see partWide); widen: and the
  -- hashes are not wide yet.
  local wide, widen = false, false
  local pend, gone, holds = {}, {}, {}
  local idxOf, step = {}, {}
  local function peek()
    if wi > #win and more then
      win, wi = redis.call('ZRANGE', P.sched, partInt(off), partInt(off + wsize - 1), 'WITHSCORES'), 1
      off = off + wsize
      if #win < 2 * wsize then more = false end
      -- The window's indices in one HMGET (with the flags that some
      -- partition has a weight and that the hashes are wide), and their
      -- weights in one more if so.
      if #win > 0 then
        local ks = {}
        for i = 1, #win, 2 do ks[#ks+1] = win[i] end
        local ix = redis.call('HMGET', P.idx, '` + partWeightsField + `', '` + partWideField + `', unpack(ks))
        if #win == 2 * wsize then
          wide = true
          widen = widen or not ix[2]
        end
        local ws = {}
        if ix[1] then
          local wf = {}
          for i, key in ipairs(ks) do wf[i] = key .. ' w' end
          ws = redis.call('HMGET', P.idx, unpack(wf))
        end
        for i, key in ipairs(ks) do
          idxOf[key], step[key] = tonumber(ix[i+2] or '-1'), 1 / tonumber(ws[i] or '1')
        end
        partWindow(ks)
      end
    end
    local key, s, fromPend = nil, nil, false
    if wi <= #win then key, s = win[wi], tonumber(win[wi+1]) end
    for k, t in pairs(pend) do
      if s == nil or t < s or (t == s and k < key) then key, s, fromPend = k, t, true end
    end
    return key, s, fromPend
  end
  local taken, order, fin, dry = {}, {}, {}, false
  local got = 0
  -- read[key]: the jobs of partition key read from its range (from the
  -- offset of its next one then), i: the next to take, full: the read
  -- gave as many as asked (more may follow).
  local read = {}
  local function nextJob(key)
    local r = read[key]
    if r == nil or (r.i >= #r.js and r.full) then
      local want = 2
      if r then want = math.min(math.max(2, 2 * #r.js), n - got + 1, 64) end
      local js = partJobs(P, idxOf[key], partTaken[key], want)
      r = {js = js, i = 1, full = #js == want}
      read[key] = r
    end
    local v = r.js[r.i]
    if v == nil then return nil, false end
    r.i = r.i + 1
    return v, r.i <= #r.js
  end
  while got < n and bytes < budget do
    local ck, cs, fromPend = peek()
    local rt = math.max(rtag, clock) + 1
    local v = nil
    if readyLeft and (ck == nil or rt <= cs) then
      v = redis.call('LMOVE', ready, proc, 'RIGHT', 'LEFT')
      if v then rtag, clock = rt, rt else readyLeft = false end
    elseif ck ~= nil then
      if fromPend then pend[ck] = nil else wi = wi + 2 end
      if not partMay(ck) then
        gone[ck] = true
        holds[#holds+1] = partHoldAt(ck)
        holds[#holds+1] = ck
      else
        if not partTaken[ck] then
          order[#order+1] = ck
          partTaken[ck] = 0
        end
        local more = false
        if idxOf[ck] >= 0 then v, more = nextJob(ck) end
        if v == nil then
          gone[ck] = true -- nothing of it waits (psched is exact: not seen)
        else
          partTook(ck)
          taken[#taken+1] = v
          partKeyOf[v] = ck
          partTaken[ck] = partTaken[ck] + 1
          if cs > clock then clock = cs end
          fin[ck] = cs + step[ck]
          if more then pend[ck] = fin[ck] else gone[ck] = true end
        end
      end
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
  local add, rem = {}, {}
  for k, t in pairs(pend) do
    add[#add+1] = partNum(t)
    add[#add+1] = k
  end
  for k in pairs(gone) do
    rem[#rem+1] = k
    partSeen[k] = nil
  end
  if wide then
    -- psched exists (nothing left it yet): the wide member goes in with
    -- the tags and out with the partitions that leave.
    add[#add+1] = '0'
    add[#add+1] = partWide
    rem[#rem+1] = partWide
  end
  for i = 1, #add, 1000 do redis.call('ZADD', P.sched, unpack(add, i, math.min(i + 999, #add))) end
  for i = 1, #rem, 1000 do redis.call('ZREM', P.sched, unpack(rem, i, math.min(i + 999, #rem))) end
  for i = 1, #holds, 1000 do redis.call('ZADD', P.hold, unpack(holds, i, math.min(i + 999, #holds))) end
  for i = 1, #taken, 1000 do
    local part = {unpack(taken, i, math.min(i + 999, #taken))}
    redis.call('ZREM', P.jobs, unpack(part))
    redis.call('LPUSH', proc, unpack(part))
  end
  -- plen: the counts of the partitions served, less their jobs taken, in
  -- one HMGET and one HSET; a partition left with none is forgotten.
  local served, counts, dead, isDead = {}, {}, {}, {}
  for _, key in ipairs(order) do
    if fin[key] then served[#served+1] = key end
  end
  for i = 1, #served, 1000 do
    local part = {unpack(served, i, math.min(i + 999, #served))}
    local lens = redis.call('HMGET', P.len, unpack(part))
    for j, key in ipairs(part) do
      local left = tonumber(lens[j] or '0') - partTaken[key]
      if left > 0 then
        counts[#counts+1] = key
        counts[#counts+1] = partInt(left)
      else
        dead[#dead+1] = key
        isDead[key] = true
      end
    end
  end
  for i = 1, #counts, 1000 do redis.call('HSET', P.len, unpack(counts, i, math.min(i + 999, #counts))) end
  for _, key in ipairs(dead) do partForget(P, key) end
  -- ptag: the finish tags of the partitions that leave psched (a
  -- partition in psched has its tag there).
  local tags = {}
  for _, key in ipairs(served) do
    if gone[key] and not isDead[key] then
      tags[#tags+1] = key
      tags[#tags+1] = partNum(fin[key])
    end
  end
  if not partNone then
    tags[#tags+1] = '` + partClockField + `'
    tags[#tags+1] = partNum(clock)
    tags[#tags+1] = '` + partReadyField + `'
    tags[#tags+1] = partNum(rtag)
  end
  for i = 1, #tags, 1000 do redis.call('HSET', P.tag, unpack(tags, i, math.min(i + 999, #tags))) end
  if widen and #counts > 0 then partWiden(P) end
  return bytes, dry
end
`

// partHooksDefault are partTakeLua's own hooks, which limitPartMayLua
// replaces: every partition may run, and none stays held.
const partHooksDefault = `local function partMay(key) return true end
local function partHoldAt(key) return partAtLimit end
local function partTook(key) end
local function partWindow(keys) end
local function partUnhold(P) partUnholdAll(P) end`

// partHeadsScript returns the next job of the partition served next
// (psched's lowest tag) and of the first 100 partitions held (phold: those
// at their limit all have one score, so the first is the first by name,
// not the one whose job waits longest), for Stats.OldestReady; when that
// job is of a level above 0, the first job of each lower level of its
// partition too (an older job of a lower level waits behind it: levels
// within a partition), as Stats reads each unpartitioned level's next
// job. A partition whose next job is of level 0 costs what it did before
// levels. Read only.
// KEYS: the partition keys.
var partHeadsScript = redis.NewScript(partLua + `
local P = partKeysAt(1)
local out = {}
for _, r in ipairs({{P.sched, 0}, {P.hold, 99}}) do
  for _, key in ipairs(redis.call('ZRANGE', r[1], 0, r[2])) do
    local idx = redis.call('HGET', P.idx, key)
    if idx then
      idx = tonumber(idx)
      local js = partJobs(P, idx, 0, 1)
      if #js > 0 then
        out[#out+1] = js[1]
        for l = partLevel(js[1]) - 1, 0, -1 do
          local lo, hi = partBandOf(l)
          local f = redis.call('ZRANGEBYSCORE', P.jobs, partInt(idx * partSpan + lo), partInt(idx * partSpan + hi), 'LIMIT', 0, 1)
          if #f > 0 then out[#out+1] = f[1] end
        end
      end
    end
  end
end
return out
`)

// partEnqueueScript enqueues partitioned jobs: all of them, or none when
// they do not fit (duplicate IDs take no room and are answered 0). Jobs due
// now go to the fair set, delayed ones to the delayed set (their partition
// is in their element; promotion puts them in it); both count in their
// partition at once (partLua).
// KEYS: the partition keys (keys.partKeys, KEYS[1..7]), bell, delayed,
// ready, wake, payloads, drain, waiters, partition waiters (parts_wait.go),
// the level ready lists (counted for MaxLen, levels.go), then the unique
// keys in use, each followed by its 4 end keys (appendJob).
// ARGV: max partitions, max partition length (0: none), queue limit (0:
// none), marker, wake TTL ms, unique TTL ms, waiters TTL ms (0: the caller
// does not wait), then for each job six values:
// due ms (0 = now), envelope, index of its unique key in KEYS (0 = none),
// payload ref (” = inline), partition, weight (the partition's, kept in
// pidx as "<partition> w" while not 1: the last job's of the call that
// gives one wins; "0": none given, the partition keeps its weight).
// Returns one 1 (added) or 0 (duplicate ID) per job; refused: {-1, length,
// dn, dt, t} (the queue is full, see boundedScript), {-2, partitions} (too
// many partitions) or {-3, length, partition} (the partition is full).
var partEnqueueScript = redis.NewScript(partEnqueueLua)

// partEnqueueLua is partEnqueueScript's source (a test swaps its partLua
// for one with tiny bands).
var partEnqueueLua = typeLua + wakeLua + boundedLua + partLua + partRoomLua + uniqueOwnLua + `
local function dropRefs(only)
  for i = 8, #ARGV, 6 do
    if ARGV[i+3] ~= '' and (only == nil or only[i]) then redis.pcall('HDEL', KEYS[12], ARGV[i+3]) end
  end
end
local P = partKeysAt(1)
local bad = wrongtype(KEYS[1], 'zset') or wrongtype(KEYS[2], 'hash') or wrongtype(KEYS[3], 'hash') or
  wrongtype(KEYS[9], 'zset') or wrongtype(KEYS[10], 'list') or wrongtype(KEYS[12], 'hash')
if bad then
  dropRefs(nil)
  return redis.error_reply(bad)
end
local dup, jobs, adds, cur, order, fresh, weight = {}, 0, {}, {}, {}, 0, {}
for i = 8, #ARGV, 6 do
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
    if ARGV[i+5] ~= '0' then weight[key] = ARGV[i+5] end
  end
end
local limit = tonumber(ARGV[3])
if limit > 0 and jobs > 0 then
  local len = count(KEYS[10], KEYS[9], ARGV[4], KEYS[1], 16)
  if len + jobs > limit then
    dropRefs(nil)
    return refuse(len, KEYS[13], KEYS[14], ARGV[3], ARGV[7])
  end
end
if fresh > 0 then
  local parts = redis.call('HLEN', KEYS[2])
  if parts + fresh > tonumber(ARGV[1]) then
    dropRefs(nil)
    partMarkWait(KEYS[15], '` + roomNewPart + `', ARGV[1], ARGV[7])
    return {-2, parts}
  end
end
local maxLen = tonumber(ARGV[2])
if maxLen > 0 then
  for _, key in ipairs(order) do
    if cur[key] + adds[key] > maxLen then
      dropRefs(nil)
      partMarkWait(KEYS[15], key, ARGV[2], ARGV[7])
      return {-3, cur[key], key}
    end
  end
end
-- A level's band holds at most its width of jobs (partRenumber's error):
-- refuse a call that would overflow one before it writes, not midway.
-- plen bounds each band of its partition, so only a partition that may
-- reach the narrowest band's width is counted (no command otherwise).
for _, key in ipairs(order) do
  if cur[key] + adds[key] > partBand then
    local idx, per = redis.call('HGET', P.idx, key), {}
    for i = 8, #ARGV, 6 do
      if not dup[i] and ARGV[i+4] == key and tonumber(ARGV[i]) == 0 then
        local l = partLevel(ARGV[i+1])
        per[l] = (per[l] or 0) + 1
      end
    end
    for l, n in pairs(per) do
      local lo, hi = partBandOf(l)
      local have = 0
      if idx then
        have = redis.call('ZCOUNT', P.jobs, partInt(tonumber(idx) * partSpan + lo), partInt(tonumber(idx) * partSpan + hi))
      end
      if have + n > hi - lo + 1 then
        dropRefs(nil)
        return redis.error_reply('queue: level ' .. l .. ' of partition ' .. key .. ' is full: ' .. have .. ' jobs and ' .. n .. ' more, the room of its band is ' .. (hi - lo + 1))
      end
    end
  end
end
dropRefs(dup)
for _, key in ipairs(order) do
  if weight[key] then partSetWeight(P, key, weight[key]) end
end
local out, earliest, rung = {}, nil, false
for i = 8, #ARGV, 6 do
  if dup[i] then
    out[#out+1] = 0
  else
    local due, u = tonumber(ARGV[i]), tonumber(ARGV[i+2])
    if u > 0 then redis.call('SET', KEYS[u], uniqueStamp(ARGV[i+1]) or '1', 'PX', ARGV[6]); redis.call('DEL', KEYS[u+1], KEYS[u+2], KEYS[u+3], KEYS[u+4]) end
    if due == 0 then
      partAdd(P, ARGV[i+4], ARGV[i+1], false)
      rung = true
    else
      redis.call('ZADD', KEYS[9], due, ARGV[i+1])
      redis.call('HINCRBY', KEYS[2], ARGV[i+4], '1') -- counted from now (partLua)
      if earliest == nil or due < earliest then earliest = due end
    end
    out[#out+1] = 1
  end
end
if rung then redis.call('ZADD', KEYS[8], 0, '1') end
if earliest ~= nil then wake(KEYS[9], KEYS[10], KEYS[11], earliest, ARGV[4], ARGV[5], KEYS[8]) end
return out
`

// partKeys are the keys the scripts that route jobs back to their
// partition take after their own.
func (q *Queue) partKeys() []string { return q.k.partKeys() }

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
	ks = q.k.withLevels(append(q.k.partKeys(), q.k.bell, q.k.delayed, q.k.ready, q.k.wake, q.k.payloads,
		q.k.drainKey(), q.k.waitersKey(), q.k.partWaiters())...)
	args = make([]any, 0, 7+6*len(prs))
	args = append(args, b.maxParts, b.maxPartLen, b.maxLen, wakeMarker, wakeTTL.Milliseconds(), q.uniqueTTL(prs[0].due), waitTTL(b.wait))
	for _, pr := range prs {
		ks, args = q.appendJob(ks, args, pr)
		args = append(args, pr.part, pr.pweight)
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

// fairJobs adds to page the jobs waiting in partitions, partition by
// partition (by index; within one, in the order it runs them), after
// cursor cur (Inspector.Jobs, StateReady). Their handles
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
