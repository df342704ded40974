package queue

import (
	"strconv"

	"github.com/redis/go-redis/v9"
)

// The scripts never build key names and never parse envelopes: keys come in
// KEYS, decisions that need the job's fields are made in Go. They run
// unchanged on a single Redis and on Redis Cluster.

// typeLua guards a script's writes. A Lua script that fails half-way keeps
// the writes it made before the failing command, so a script that takes a
// job off one key and then writes it to a key holding the wrong type (a
// foreign key in the queue's namespace) would lose the job. Every script
// that moves a job checks its destinations first, and fails before writing
// anything.
const typeLua = `
local function wrongtype(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= want and t ~= 'none' then
    return 'WRONGTYPE queue key ' .. key .. ' holds a ' .. t .. ', not a ' .. want
  end
  return false
end
`

// bellMember is the one member of a queue's doorbell (keys.bell): ringing
// is ZADD bell 0 1, idempotent, so the doorbell never grows.
const bellMember = "1"

// pushScript is the plain Enqueue: LPUSH and the ring of the doorbell, in
// one atomic call, so that no crash of the producer can leave a job
// without its ring (a pipeline of the two would cost one command less per
// job, but a connection cut between them would leave the job waiting for
// the next ring of its queue: see docs/queue.md, "The doorbell").
// KEYS: ready, bell. ARGV: elements.
var pushScript = redis.NewScript(`
local n = redis.call('LPUSH', KEYS[1], unpack(ARGV))
redis.call('ZADD', KEYS[2], 0, '1')
return n
`)

// ringScript rings the doorbell when the ready list holds anything: a
// worker that stops, or a hub that lost a popped ring, hands the ring on.
// KEYS: ready, bell, fair (parts.go), the level ready lists (levels.go,
// keys.readyLevels). Returns 1 when it rang. At maxmemory the ZADD, its
// first write, is refused: handing a ring on uses ringAtLimitScript then
// (see ringIfReady), as no producer can ring at the limit.
var ringScript = redis.NewScript(ringLua)

const ringLua = `
if redis.call('LLEN', KEYS[1]) > 0 or (#KEYS > 2 and redis.call('EXISTS', unpack(KEYS, 3)) > 0) then
  redis.call('ZADD', KEYS[2], 0, '1')
  return 1
end
return 0
`

// enqueueUniqueScript enqueues a job holding an idempotency key, deleting
// what an earlier job of its ID left (keys.endKeys).
// KEYS: ready, unique key, bell, the 4 end keys. ARGV: envelope, unique TTL ms.
var enqueueUniqueScript = redis.NewScript(typeLua + uniqueOwnLua + `
local bad = wrongtype(KEYS[1], 'list')
if bad then return redis.error_reply(bad) end
if not redis.call('SET', KEYS[2], uniqueStamp(ARGV[1]) or '1', 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], 0, '1')
return 1
`)

// wakeLua is the wake-marker logic shared by the scripts that add to the
// delayed set: when the job at due became the earliest one, push a marker to
// the head of the ready list (one at a time, thanks to the flag, and none
// while one still waits there: with no consumer to take them, markers would
// otherwise pile up, one per expired flag, and a bounded queue, which only
// looks at the last element, would count them as jobs).
//
// The marker rings the queue's doorbell like any job: a worker takes it and
// wakes its scheduler (the bell alone would wake a fetcher, not a
// scheduler, and markers already in Redis keep working).
const wakeLua = `
local function wake(delayed, ready, flag, due, marker, ttl, bell)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if tonumber(first[2]) >= tonumber(due) and redis.call('SET', flag, '1', 'NX', 'PX', ttl)
    and redis.call('LINDEX', ready, -1) ~= marker then
    redis.call('RPUSH', ready, marker)
    redis.call('ZADD', bell, 0, '1')
  end
end
`

// scheduleScript adds a job to the delayed set, and pushes a wake marker to
// the head of the ready list when it became the earliest one, so a scheduler
// re-reads the next due time at once, in whichever process. The wake flag
// keeps the markers to one at a time.
// KEYS: delayed, ready, wake, bell[, unique key, the 4 end keys]. ARGV:
// due ms, envelope, marker, wake TTL ms[, unique TTL ms]. Returns 1, or 0
// for a duplicate ID.
var scheduleScript = redis.NewScript(typeLua + wakeLua + uniqueOwnLua + `
local bad = wrongtype(KEYS[1], 'zset') or wrongtype(KEYS[2], 'list')
if bad then return redis.error_reply(bad) end
if #KEYS > 4 then
  if not redis.call('SET', KEYS[5], uniqueStamp(ARGV[2]) or '1', 'NX', 'PX', ARGV[5]) then return 0 end
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8], KEYS[9])
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
wake(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[3], ARGV[4], KEYS[4])
return 1
`)

// wakeScript pushes a wake marker when the delayed jobs a batch just added
// at due (a ZADD in the same MULTI) are the earliest.
// KEYS: delayed, ready, wake, bell. ARGV: due ms, marker, wake TTL ms.
var wakeScript = redis.NewScript(wakeLua + `
wake(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], KEYS[4])
return 1
`)

// enqueueManyScript enqueues jobs atomically: all of them or nothing. Enqueue
// uses it for a job whose payload is over inlineMax: the payload is written
// by an HSET in the same MULTI just before (a payload through Lua would cost
// ten times the server time), and this script deletes it again if it does
// not add the job. (EnqueueBatch uses plain commands: a batch has no IDs.)
// KEYS: ready, delayed, wake, payloads, bell, then the unique keys in use,
// each followed by its job's 4 end keys (appendJob).
// ARGV: marker, wake TTL ms, unique TTL ms, then for each job four values:
// due ms (0 = now), envelope, index of its unique key in KEYS (0 = none),
// payload ref (” = inline).
// Returns one 1 (added) or 0 (duplicate ID) per job.
var enqueueManyScript = redis.NewScript(typeLua + wakeLua + uniqueOwnLua + `
local bad = wrongtype(KEYS[1], 'list') or wrongtype(KEYS[2], 'zset') or wrongtype(KEYS[4], 'hash')
if bad then
  for i = 4, #ARGV, 4 do
    if ARGV[i+3] ~= '' and wrongtype(KEYS[4], 'hash') == false then redis.call('HDEL', KEYS[4], ARGV[i+3]) end
  end
  return redis.error_reply(bad)
end
local out = {}
local earliest = nil
for i = 4, #ARGV, 4 do
  local due, env, u = tonumber(ARGV[i]), ARGV[i+1], tonumber(ARGV[i+2])
  if u > 0 and not redis.call('SET', KEYS[u], uniqueStamp(env) or '1', 'NX', 'PX', ARGV[3]) then
    if ARGV[i+3] ~= '' then redis.call('HDEL', KEYS[4], ARGV[i+3]) end
    out[#out+1] = 0
  else
    if u > 0 then redis.call('DEL', KEYS[u+1], KEYS[u+2], KEYS[u+3], KEYS[u+4]) end
    if due == 0 then
      redis.call('LPUSH', KEYS[1], env)
      redis.call('ZADD', KEYS[5], 0, '1')
    else
      redis.call('ZADD', KEYS[2], due, env)
      if earliest == nil or due < earliest then earliest = due end
    end
    out[#out+1] = 1
  end
end
if earliest ~= nil then
  wake(KEYS[2], KEYS[1], KEYS[3], earliest, ARGV[1], ARGV[2], KEYS[5])
end
return out
`)

// Byte bounds on single calls, so that no call of the library holds Redis
// for more than a few milliseconds or builds a huge reply or Lua string (Lua
// memory is outside maxmemory). Every call still makes progress: at least
// one job, whatever its size. Passing a string through Lua costs about 1 ms
// per MiB of server time, ten times a plain command, so payloads never go
// through Lua: those over inlineMax live in the payloads hash and are
// written and read with plain commands, and elements are small. The Lua
// bound matters for elements written by older versions, which hold their
// payload, and for many small jobs moved at once.
const (
	maxLuaBytes  = 1 << 20 // element bytes one script moves (promote, take, recovery)
	maxCallBytes = 4 << 20 // bytes one call returns or frees (Dead, trimming)
	maxLuaJobs   = 256     // elements one promote call moves
)

// budgetLua makes the bounds known to scripts (key names are never built in
// Lua; constants are fine).
var budgetLua = "local budget, callBudget, maxJobs = " + strconv.Itoa(maxLuaBytes) + ", " +
	strconv.Itoa(maxCallBytes) + ", " + strconv.Itoa(maxLuaJobs) + "\n"

// dropDeadLua defines dropDead(index, data, payloads, refs, ids): it deletes
// the dead letters ids, oldest first, with their payloads kept apart, until
// about callBudget bytes are freed (at least one), and returns how many it
// deleted. The keys are the script's own KEYS, passed in (needs budgetLua).
var dropDeadLua = `
local function dropDead(index, data, payloads, refs, ids)
  local refv = redis.call('HMGET', refs, unpack(ids))
  local n, freed, gone = 0, 0, {}
  for j, v in ipairs(ids) do
    if n > 0 and freed >= callBudget then break end
    freed = freed + redis.call('HSTRLEN', data, v)
    if refv[j] then
      freed = freed + redis.call('HSTRLEN', payloads, refv[j])
      gone[#gone+1] = refv[j]
    end
    n = n + 1
  end
  ids = {unpack(ids, 1, n)}
  redis.call('ZREM', index, unpack(ids))
  redis.call('HDEL', data, unpack(ids))
  redis.call('HDEL', refs, unpack(ids))
  if #gone > 0 then redis.call('HDEL', payloads, unpack(gone)) end
  return n
end
`

// takeScript moves up to ARGV[1] jobs from ready to a processing list without
// blocking: the fetcher's only way to take jobs (it blocks on the doorbell,
// in its consumer's hub, never on the list). It stops early once
// maxLuaBytes have moved. While the queue is paused it takes nothing. When
// it leaves jobs behind it rings the doorbell again, so that another
// consumer (or this one, once it has room) wakes for them: a ring popped by
// a consumer that took only part of the jobs is handed on.
// KEYS: ready, processing list, bell, paused flag, the partition keys
// (parts.go, KEYS[5..11]: KEYS[5] is pjobs), the level ready lists
// (levels.go, keys.readyLevels: KEYS[12..14]), the partition waiters
// (parts_wait.go: always the last key).
// ARGV: n, the room channel (partWake: the take of a partition's jobs
// wakes the producers waiting for room in it; without it, it wakes
// nobody).
//
// A paused take still hands out a wake marker at the take end of the list:
// it is no job, and the scheduler it wakes promotes the delayed jobs that
// came due (promotions go on while paused).
//
// Commands (each counts, Lua's too): a lone job costs LMOVE + EXISTS, an
// empty list LMOVE + EXISTS (the fair set's and the level lists'). The
// script moves first and asks after: ONE EXISTS names the ready list once,
// the fair set of the partitions twice, the paused flag four times and each
// level list eight times (EXISTS counts a key once per mention), so its
// reply says whether ready jobs are left (bit 1), partitioned jobs wait
// (bit 2), the queue is paused (bit 4) and level jobs wait (>= 8). A paused
// queue's job goes back where it was, at the take end, in the same atomic
// call: nobody sees it move. (Checking the flag first, then moving until
// LMOVE finds the list empty, cost EXISTS + LMOVE + an empty LMOVE per
// lone job.) With partitioned or level jobs waiting, the first job goes
// back too (a wake marker is handed out first instead: the scheduler it
// wakes must not wait for a backlog), the levels are served highest first
// (takeLevels), then the partitions and the ready list in turn by takePart.
var takeLua = budgetLua + partLua + partTakeLua + partRoomLua + `
local n = tonumber(ARGV[1])
if n < 1 then return {} end
-- levels (levels.go): the level lists, highest first.
local levels = ` + levelsReverse(12) + `
local function ringIfLeft()
  if redis.call('EXISTS', KEYS[1], KEYS[5], unpack(levels)) > 0 then
    redis.call('ZADD', KEYS[3], 0, '1')
  end
end
-- levels: takeLevels moves level jobs into out, highest level first, and
-- returns the new byte count; c is how many level lists hold jobs.
local function takeLevels(out, bytes, c)
  for _, l in ipairs(levels) do
    if c == 0 or #out >= n or bytes >= budget then break end
    local got = false
    while #out < n and bytes < budget do
      local v = redis.call('LMOVE', l, KEYS[2], 'RIGHT', 'LEFT')
      if not v then break end
      got = true
      out[#out + 1] = v
      bytes = bytes + #v
    end
    if got then c = c - 1 end
  end
  return bytes
end
-- levels and parts: serve the level lists, then the partitions and the
-- ready list in turn; out holds a wake marker or nothing yet, ready says
-- whether the ready list may hold jobs.
local function takeAll(out, bytes, lv, parted, ready)
  if lv > 0 then bytes = takeLevels(out, bytes, lv) end
  if #out >= n or bytes >= budget then ringIfLeft(); return out end
  if parted then
    local from = #out + 1
    local _, dry = takePart(out, n - #out, bytes, budget)
    partWake(out, from, KEYS[#KEYS], KEYS[6], ARGV[2], partKeyOf)
    if not dry then ringIfLeft() end
    return out
  end
  while ready and #out < n and bytes < budget do
    local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
    if not v then return out end
    out[#out + 1] = v
    bytes = bytes + #v
  end
  if ready then ringIfLeft() end
  return out
end
local first = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not first then
  -- The ready list is empty; partitioned or level jobs may wait. ONE
  -- EXISTS: the paused flag once, the fair set twice, each level list four
  -- times.
  local seen = redis.call('EXISTS', KEYS[4], KEYS[5], KEYS[5], ` + levelsTimes(12, 4) + `)
  if seen == 0 or seen % 2 == 1 then return {} end
  return takeAll({}, 0, math.floor(seen / 4), seen % 4 >= 2, false)
end
local seen = redis.call('EXISTS', KEYS[1], KEYS[5], KEYS[5], KEYS[4], KEYS[4], KEYS[4], KEYS[4], ` + levelsTimes(12, 8) + `)
if seen % 8 >= 4 then
  if first == '` + wakeMarker + `' then return {first} end
  redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT')
  return {}
end
if seen >= 2 then
  -- parts or levels wait: the ready list takes its turn with them.
  if first == '` + wakeMarker + `' then
    return takeAll({first}, #first, math.floor(seen / 8), seen % 4 >= 2, seen % 2 == 1)
  end
  redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT')
  return takeAll({}, 0, math.floor(seen / 8), seen % 4 >= 2, true)
end
-- left: jobs remain; exact: no LMOVE since the EXISTS moved a job.
local out, bytes, left, exact = {first}, #first, seen == 1, true
for i = 2, n do
  if not left or bytes >= budget then break end
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then left = false; break end
  out[i] = v
  bytes = bytes + #v
  exact = false
end
if left and (exact or redis.call('LLEN', KEYS[1]) > 0) then redis.call('ZADD', KEYS[3], 0, '1') end
return out
`

var takeScript = redis.NewScript(takeLua)

// promoteScript moves due jobs from the delayed set to the ready list, at
// most ARGV[2], maxLuaJobs and about maxLuaBytes of them, and returns
// {moved, next due ms or -1}. When it stopped at a bound the next due time
// is already past, so the scheduler calls again at once; between calls other
// clients are served. It reads one due element first, then chunks of at
// most 32 sized by the largest seen so far, so that Lua holds little more
// than the bound (an unseen element larger than those seen can only be one
// an earlier version wrote, with its payload inside: at most 32 of them).
// KEYS: delayed, ready, wake, bell, the partition keys (KEYS[5..11]: a
// partitioned job goes to its partition, parts.go), the level ready lists (each other
// job goes to its level's ready list, levelLua; keys.readyLevels).
// ARGV: now ms, limit, "1" to clear the wake flag.
var promoteLua = budgetLua + partLua + levelLua + `
if ARGV[3] == '1' then redis.call('DEL', KEYS[3]) end
local limit = math.min(tonumber(ARGV[2]), maxJobs)
local moved, bytes, largest = 0, 0, 0
while moved < limit and bytes < budget do
  local n = 1
  if largest > 0 then
    n = math.max(1, math.min(limit - moved, 32, math.floor((budget - bytes) / largest)))
  end
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, n)
  if #due == 0 then break end
  for _, v in ipairs(due) do
    bytes = bytes + #v
    if #v > largest then largest = #v end
  end
  -- parts: a partitioned job goes to its partition (KEYS[5..11]), where it
  -- was counted while delayed;
  -- levels: each other job to its level's ready list (KEYS[12..]).
  local byList, lists = {}, {}
  for _, v in ipairs(due) do
    local key = partOf(v)
    if key then
      partAdd(partKeysAt(5), key, v, false, true)
    else
      local r = readyFor(v, KEYS[2], 12)
      if not byList[r] then byList[r] = {}; lists[#lists + 1] = r end
      table.insert(byList[r], v)
    end
  end
  for _, r in ipairs(lists) do redis.call('LPUSH', r, unpack(byList[r])) end
  redis.call('ZREM', KEYS[1], unpack(due))
  moved = moved + #due
  if #due < n then break end
end
if moved > 0 then redis.call('ZADD', KEYS[4], 0, '1') end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {moved, -1} end
return {moved, math.floor(tonumber(nxt[2]))}
`

var promoteScript = redis.NewScript(promoteLua)

// retryScript takes a failed job off a processing list and schedules its
// next attempt, only if it was still there (a job recovered by a sweep in the
// meantime belongs to someone else now).
// KEYS: processing list, delayed, ready, wake, bell[, partlen: a
// partitioned job counts in its partition while it waits (parts.go)].
// ARGV: old envelope, new envelope, due ms, marker, wake TTL ms, "1" when
// this is a resend after a lost reply. Returns 1, 0 if not found, 2 if not
// found because the lost call had already scheduled the next attempt.
var retryScript = redis.NewScript(typeLua + wakeLua + partLua + `
local bad = wrongtype(KEYS[2], 'zset') or wrongtype(KEYS[3], 'list')
if bad then return redis.error_reply(bad) end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  if ARGV[6] == '1' and redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 2 end
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
-- parts: counted while delayed, as a delayed enqueue is (partLua).
local key = #KEYS >= 6 and partOf(ARGV[2])
if key then redis.call('HINCRBY', KEYS[6], key, 1) end
wake(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4], ARGV[5], KEYS[5])
return 1
`)

// deadScript moves a job to the dead letters (taking it off a processing
// list first when ARGV[1] is not empty), and trims the dead letters by age
// and count: at most 100 entries and about maxCallBytes freed per call, at
// least one, so the count bound holds since every call adds one.
//
// A dead letter is never overwritten: when the job's ID is already dead (the
// ID option frees an ID once its job is dead), the new entry is stored as
// <ID>~<died ms> (then ~2, ~3...). A payload kept apart stays where it is,
// in the payloads hash; the dead refs hash maps the dead letter to it, so
// that trimming can delete it without parsing records.
//
// A job taken off a processing list whose run was cancelled while it held
// the job (the run's cancel key, keys.runCancel, exists) is dropped instead,
// as a run that ends with an error after its cancel is (Worker.run): its
// payload kept apart deleted, its idempotency key freed, no dead letter.
// Checked here, atomically with the LREM, because the cancel may come after
// the handler returned (a consumer without Control, a message that came
// late): a cancel after this script no longer finds the job running.
// KEYS: processing list, dead index, dead data, payloads, dead refs[,
// unique key][, the run's cancel key when ARGV[9] is "1"].
// ARGV: old element or ”, dead ID, record (without its element when the
// element is ARGV[1]), now ms, max count, oldest ms kept, payload ref or ”,
// "1" when this is a resend after a lost reply, "1" when the last key is
// the run's cancel key.
// Returns 1, 0 if the element was not there, 2 if not there because the lost
// call had already written this record, 3 if dropped as cancelled (or, on a
// resend, not there while the run's cancel is).
var deadScript = redis.NewScript(typeLua + budgetLua + dropDeadLua + uniqueOwnLua + `
local bad = wrongtype(KEYS[2], 'zset') or wrongtype(KEYS[3], 'hash') or wrongtype(KEYS[5], 'hash')
if bad then return redis.error_reply(bad) end
local function candidate(i)
  if i == 0 then return ARGV[2] end
  if i == 1 then return ARGV[2] .. '~' .. ARGV[4] end
  return ARGV[2] .. '~' .. ARGV[4] .. '~' .. i
end
local nk, cancelled = #KEYS, false
if ARGV[9] == '1' then
  cancelled = redis.call('EXISTS', KEYS[nk]) == 1
  nk = nk - 1
end
local rec = ARGV[3]
if ARGV[1] ~= '' then
  if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
    if ARGV[8] == '1' and cancelled then return 3 end
    if ARGV[8] == '1' then
      local full, i = rec .. ARGV[1], 0
      while true do
        local r = redis.call('HGET', KEYS[3], candidate(i))
        if not r then break end
        if r == full then return 2 end
        i = i + 1
      end
    end
    return 0
  end
  if cancelled then
    if ARGV[7] ~= '' then redis.call('HDEL', KEYS[4], ARGV[7]) end
    if nk > 5 and uniqueMine(KEYS[6], ARGV[1]) then redis.call('DEL', KEYS[6]) end
    return 3
  end
  rec = rec .. ARGV[1]
end
local i = 0
while redis.call('HEXISTS', KEYS[3], candidate(i)) == 1 do i = i + 1 end
local id = candidate(i)
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('HSET', KEYS[3], id, rec)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[5], id, ARGV[7]) end
-- A record added off no list (ARGV[1] '') frees the key unchecked.
if nk > 5 and uniqueMine(KEYS[6], ARGV[1]) then redis.call('DEL', KEYS[6]) end
local drop = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6], 'LIMIT', 0, 100)
local over = redis.call('ZCARD', KEYS[2]) - #drop - tonumber(ARGV[5])
if over > 0 then
  local more = redis.call('ZRANGE', KEYS[2], #drop, #drop + math.min(over, 100) - 1)
  for _, v in ipairs(more) do drop[#drop+1] = v end
end
if #drop == 0 then return 1 end
dropDead(KEYS[2], KEYS[3], KEYS[4], KEYS[5], drop)
return 1
`)

// deadReadScript returns dead letters, newest first: for each, its ID, its
// record and the ref of its payload kept apart (or nil), stopping before the
// one whose record and payload would take the total over maxCallBytes (at
// least one). The caller reads those payloads with a plain HMGET.
// KEYS: dead index, dead data, payloads, dead refs. ARGV: offset, limit.
var deadReadScript = redis.NewScript(budgetLua + `
local off = tonumber(ARGV[1])
local ids = redis.call('ZREVRANGE', KEYS[1], off, off + tonumber(ARGV[2]) - 1)
local out, bytes = {}, 0
for _, id in ipairs(ids) do
  local ref = redis.call('HGET', KEYS[4], id)
  local size = redis.call('HSTRLEN', KEYS[2], id)
  if ref then size = size + redis.call('HSTRLEN', KEYS[3], ref) end
  if #out > 0 and bytes + size > callBudget then break end
  bytes = bytes + size
  out[#out+1] = id
  out[#out+1] = redis.call('HGET', KEYS[2], id)
  out[#out+1] = ref
end
return out
`)

// purgeScript deletes the oldest dead letters with their payloads, at most
// 100 and about maxCallBytes per call (at least one), among those that died
// at or before ARGV[1] (unix ms). Returns how many.
// KEYS: dead index, dead data, payloads, dead refs.
var purgeScript = redis.NewScript(budgetLua + dropDeadLua + `
local drop = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
if #drop == 0 then return 0 end
return dropDead(KEYS[1], KEYS[2], KEYS[3], KEYS[4], drop)
`)

// recoverScript moves elements of a processing list back to the head of the
// ready list, each only if it is still there.
// KEYS: processing list, ready, bell, the partition keys (KEYS[4..10]: a
// partitioned job goes back to the front of its level in its partition, parts.go), the
// level ready lists (each other job goes to the take end of its level's
// ready list, levelLua; keys.readyLevels).
// ARGV: pairs of (element, element to push).
var recoverScript = redis.NewScript(typeLua + partLua + levelLua + `
local bad = wrongtype(KEYS[2], 'list')
if bad then return redis.error_reply(bad) end
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    local key = partOf(ARGV[i+1])
    if key then
      partAdd(partKeysAt(4), key, ARGV[i+1], true)
    else
      redis.call('RPUSH', readyFor(ARGV[i+1], KEYS[2], 11), ARGV[i+1])
    end
    n = n + 1
  end
end
if n > 0 then redis.call('ZADD', KEYS[3], 0, '1') end
return n
`)

// sweepScript moves elements of a dead consumer's processing list back to
// the head of the ready list, each only if it is still there, and only if
// the consumer is still the incarnation the sweep found dead: one that
// restarted with the same ID recorded a new token before it fetched
// anything, and its jobs stay where they are. With the list empty it
// forgets the consumer (consumers set and incarnation). It rings the
// doorbell whenever the ready list holds jobs: a consumer killed after it
// popped a ring and before it took the jobs leaves them without one, and
// its sweep is what bounds their wait (docs/queue.md, "The doorbell").
// KEYS: processing list, ready, incarnations, consumers, bell, the
// partition keys (KEYS[6..12]: a partitioned job goes back to the front
// of its level in its partition, parts.go), the level ready lists (each other job goes to the
// take end of its level's ready list, levelLua; keys.readyLevels).
// ARGV: consumer ID, token (empty: none recorded), then pairs of (element,
// element to push).
// Returns how many moved, or -1 if the consumer restarted.
var sweepScript = redis.NewScript(typeLua + partLua + levelLua + `
local bad = wrongtype(KEYS[2], 'list')
if bad then return redis.error_reply(bad) end
local tok = redis.call('HGET', KEYS[3], ARGV[1])
if (tok or '') ~= ARGV[2] then return -1 end
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    local key = partOf(ARGV[i+1])
    if key then
      partAdd(partKeysAt(6), key, ARGV[i+1], true)
    else
      redis.call('RPUSH', readyFor(ARGV[i+1], KEYS[2], 13), ARGV[i+1])
    end
    n = n + 1
  end
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
if redis.call('EXISTS', KEYS[2], KEYS[6], unpack(KEYS, 13, 12 + maxLevel)) > 0 then
  redis.call('ZADD', KEYS[5], 0, '1')
end
return n
`)

// requeueDeadScript moves a dead job back to the ready list; its payload
// kept apart, if any, stays where it is. Only the dead letter the caller
// read moves: one that replaced it under the same dead ID in the meantime
// (trimmed, then another job with the ID died) has another time of death
// or length, and is left alone.
// KEYS: dead index, dead data, ready, payloads, dead refs, bell[, the
// partition keys (KEYS[7..13]): a partitioned job goes back to its
// partition (parts.go)]. ARGV: dead ID, envelope, payload ref or ”, died at ms,
// record length.
var requeueDeadScript = redis.NewScript(typeLua + partLua + `
local bad = wrongtype(KEYS[1], 'zset') or wrongtype(KEYS[3], 'list') or wrongtype(KEYS[4], 'hash')
if bad then return redis.error_reply(bad) end
local died = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not died or tonumber(died) ~= tonumber(ARGV[4]) or redis.call('HSTRLEN', KEYS[2], ARGV[1]) ~= tonumber(ARGV[5]) then
  return 0
end
if ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[4], ARGV[3]) == 0 then
  return redis.error_reply('the payload of dead job ' .. ARGV[1] .. ' (ref ' .. ARGV[3] .. ') is missing')
end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
local key = #KEYS >= 13 and partOf(ARGV[2])
if key then
  partAdd(partKeysAt(7), key, ARGV[2], false)
else
  redis.call('LPUSH', KEYS[3], ARGV[2])
end
redis.call('ZADD', KEYS[6], 0, '1')
return 1
`)

// ackScript takes a finished job off a processing list, and only if it was
// still there deletes its payload kept apart and frees its idempotency key:
// a job a sweep gave to another consumer may be running again, and needs
// both until that run ends. A job with neither is acked with a plain LREM.
// A job with a UniqueFor window keeps its idempotency key for the window
// instead. Either only while the key is still this job's (uniqueOwnLua).
// KEYS: processing list, payloads[, unique key]. ARGV: element, payload ref
// or ”, window ms (0: none). Returns 1, or 0 if not found.
var ackScript = redis.NewScript(uniqueOwnLua + `
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[2], ARGV[2]) end
if #KEYS > 2 and uniqueMine(KEYS[3], ARGV[1]) then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[3], uniqueStamp(ARGV[1]) or '1', 'PX', ARGV[3])
  else
    redis.call('DEL', KEYS[3])
  end
end
return 1
`)

// trimHeartbeatsScript removes the consumers dead since before ARGV[1]
// (unix ms) from the heartbeat set, and their live incarnation tokens with
// them.
// KEYS: heartbeats, live incarnations[, consumers' queues] (one
// namespace's, one slot).
var trimHeartbeatsScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 1, #ids, 1000 do
  local part = {unpack(ids, i, math.min(i + 999, #ids))}
  redis.call('ZREM', KEYS[1], unpack(part))
  redis.call('HDEL', KEYS[2], unpack(part))
  if #KEYS > 2 then redis.call('HDEL', KEYS[3], unpack(part)) end
end
return #ids
`)

// unlockScript deletes a lock only if this process still holds it.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

var allScripts = append([]*redis.Script{
	enqueueUniqueScript, scheduleScript, enqueueManyScript, takeScript, promoteScript,
	retryScript, deadScript, recoverScript, requeueDeadScript, ackScript, unlockScript, deadReadScript, purgeScript, wakeScript,
	sweepScript, pushScript, ringScript, partEnqueueScript,
}, append(ctlScripts, limitScripts...)...)
