package queue

import "github.com/redis/go-redis/v9"

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

// enqueueUniqueScript enqueues a job holding an idempotency key.
// KEYS: ready, unique key. ARGV: envelope, unique TTL ms.
var enqueueUniqueScript = redis.NewScript(typeLua + `
local bad = wrongtype(KEYS[1], 'list')
if bad then return redis.error_reply(bad) end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
`)

// wakeLua is the wake-marker logic shared by the scripts that add to the
// delayed set: when the job at due became the earliest one, push a marker to
// the head of the ready list (one at a time, thanks to the flag).
const wakeLua = `
local function wake(delayed, ready, flag, due, marker, ttl)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if tonumber(first[2]) >= tonumber(due) and redis.call('SET', flag, '1', 'NX', 'PX', ttl) then
    redis.call('RPUSH', ready, marker)
  end
end
`

// scheduleScript adds a job to the delayed set, and pushes a wake marker to
// the head of the ready list when it became the earliest one, so a scheduler
// re-reads the next due time at once, in whichever process. The wake flag
// keeps the markers to one at a time.
// KEYS: delayed, ready, wake[, unique key]. ARGV: due ms, envelope, marker,
// wake TTL ms[, unique TTL ms]. Returns 1, or 0 for a duplicate ID.
var scheduleScript = redis.NewScript(typeLua + wakeLua + `
local bad = wrongtype(KEYS[1], 'zset') or wrongtype(KEYS[2], 'list')
if bad then return redis.error_reply(bad) end
if #KEYS > 3 and not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[5]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
wake(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[3], ARGV[4])
return 1
`)

// enqueueManyScript enqueues a batch atomically: all of it or nothing.
// KEYS: ready, delayed, wake, then the unique keys in use.
// ARGV: marker, wake TTL ms, unique TTL ms, then for each job four values:
// due ms (0 = now), envelope, index of its unique key in KEYS (0 = none).
// Returns one 1 (added) or 0 (duplicate ID) per job.
var enqueueManyScript = redis.NewScript(typeLua + wakeLua + `
local bad = wrongtype(KEYS[1], 'list') or wrongtype(KEYS[2], 'zset')
if bad then return redis.error_reply(bad) end
local out = {}
local earliest = nil
for i = 4, #ARGV, 3 do
  local due, env, u = tonumber(ARGV[i]), ARGV[i+1], tonumber(ARGV[i+2])
  if u > 0 and not redis.call('SET', KEYS[u], '1', 'NX', 'PX', ARGV[3]) then
    out[#out+1] = 0
  else
    if due == 0 then
      redis.call('LPUSH', KEYS[1], env)
    else
      redis.call('ZADD', KEYS[2], due, env)
      if earliest == nil or due < earliest then earliest = due end
    end
    out[#out+1] = 1
  end
end
if earliest ~= nil then
  wake(KEYS[2], KEYS[1], KEYS[3], earliest, ARGV[1], ARGV[2])
end
return out
`)

// takeScript moves up to ARGV[1] jobs from ready to a processing list without
// blocking: the fetcher's way to fill free slots when there is a backlog.
// KEYS: ready, processing list.
var takeScript = redis.NewScript(`
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then break end
  out[i] = v
end
return out
`)

// promoteScript moves due jobs from the delayed set to the ready list and
// returns {moved, next due ms or -1}.
// KEYS: delayed, ready, wake. ARGV: now ms, limit, "1" to clear the wake flag.
var promoteScript = redis.NewScript(`
if ARGV[3] == '1' then redis.call('DEL', KEYS[3]) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  redis.call('LPUSH', KEYS[2], unpack(due))
  redis.call('ZREM', KEYS[1], unpack(due))
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {#due, -1} end
return {#due, math.floor(tonumber(nxt[2]))}
`)

// retryScript takes a failed job off a processing list and schedules its
// next attempt, only if it was still there (a job recovered by a sweep in the
// meantime belongs to someone else now).
// KEYS: processing list, delayed, ready, wake. ARGV: old envelope, new
// envelope, due ms, marker, wake TTL ms. Returns 1, or 0 if not found.
var retryScript = redis.NewScript(typeLua + wakeLua + `
local bad = wrongtype(KEYS[2], 'zset') or wrongtype(KEYS[3], 'list')
if bad then return redis.error_reply(bad) end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
wake(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4], ARGV[5])
return 1
`)

// deadScript moves a job to the dead letters (taking it off a processing
// list first when ARGV[1] is not empty), and trims the dead letters by age
// and count, at most 1000 per call.
// KEYS: processing list, dead index, dead data[, unique key].
// ARGV: old element or ”, dead ID, record, now ms, max count, oldest ms kept.
var deadScript = redis.NewScript(typeLua + `
local bad = wrongtype(KEYS[2], 'zset') or wrongtype(KEYS[3], 'hash')
if bad then return redis.error_reply(bad) end
if ARGV[1] ~= '' and redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
if #KEYS > 3 then redis.call('DEL', KEYS[4]) end
local drop = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6], 'LIMIT', 0, 1000)
local over = redis.call('ZCARD', KEYS[2]) - #drop - tonumber(ARGV[5])
if over > 0 then
  local more = redis.call('ZRANGE', KEYS[2], #drop, #drop + math.min(over, 1000) - 1)
  for _, v in ipairs(more) do drop[#drop+1] = v end
end
if #drop > 0 then
  redis.call('ZREM', KEYS[2], unpack(drop))
  redis.call('HDEL', KEYS[3], unpack(drop))
end
return 1
`)

// recoverScript moves elements of a processing list back to the head of the
// ready list, each only if it is still there.
// KEYS: processing list, ready. ARGV: pairs of (element, element to push).
var recoverScript = redis.NewScript(typeLua + `
local bad = wrongtype(KEYS[2], 'list')
if bad then return redis.error_reply(bad) end
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i+1])
    n = n + 1
  end
end
return n
`)

// requeueDeadScript moves a dead job back to the ready list.
// KEYS: dead index, dead data, ready. ARGV: dead ID, envelope.
var requeueDeadScript = redis.NewScript(typeLua + `
local bad = wrongtype(KEYS[1], 'zset') or wrongtype(KEYS[3], 'list')
if bad then return redis.error_reply(bad) end
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
return 1
`)

// ackUniqueScript takes a finished job holding an idempotency key off a
// processing list, and frees the key only if the job was still there: a job
// a sweep gave to another consumer may be running again, and its key must
// keep duplicates out until that run ends.
// KEYS: processing list, unique key. ARGV: element. Returns 1, or 0 if not
// found.
var ackUniqueScript = redis.NewScript(`
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
`)

// unlockScript deletes a lock only if this process still holds it.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

var allScripts = []*redis.Script{
	enqueueUniqueScript, scheduleScript, enqueueManyScript, takeScript, promoteScript,
	retryScript, deadScript, recoverScript, requeueDeadScript, ackUniqueScript, unlockScript,
}
