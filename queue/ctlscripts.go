package queue

import "github.com/redis/go-redis/v9"

// Scripts of job control by ID (control.go, result.go). Like the others they
// receive every key in KEYS and parse no envelope: the locate script
// compares a fixed prefix ("bq1|<id>|"), and the decisions that need the
// job's fields are made in Go, which then acts on the exact element.

// Bounds of one locate call. Jobs have no per-ID index: a job is found by
// looking at the elements of the lists that may hold it, so one call looks
// at no more than lookupElems elements of the processing lists and the
// ready list together (and about maxLuaBytes of them), and asks ZSCAN to
// examine about lookupScan members of the delayed set. Within the bounds
// the answer is exact; past them, a job not found is reported as
// ErrLookupIncomplete, never as ErrJobNotFound.
const (
	lookupElems = 10_000
	lookupScan  = 10_000
)

// findJobScript finds the job whose elements start with ARGV[1], at one
// instant: in a processing list, the ready list, the delayed set or the
// dead letters, in that order (the level ready lists before level 0's,
// levels.go; the fair set of partitioned jobs, parts.go, after the ready
// list).
// KEYS: ready, delayed, dead data, dead refs, consumers, fair, the level
// ready lists (keys.readyLevels), then the
// processing list of each consumer named in ARGV[5..].
// ARGV: prefix "bq1|<id>|", ZSCAN pattern, dead ID, "<element budget>
// <scan budget>", consumer IDs.
// Returns {where, element or record, extra, complete}: where 0 nowhere, 1
// ready, 2 delayed (extra: due ms), 3 running (extra: index of the consumer
// in ARGV[5..], from 1), 4 dead (extra: payload ref or ”), 5 in a
// partition (the fair set; extra: its tag); -2 when the
// consumers set is not the one given (read it again). complete is 0 when
// a bound stopped a scan before it found the job.
var findJobScript = redis.NewScript(budgetLua + levelLua + `
local members = redis.call('SMEMBERS', KEYS[5])
if #members ~= #ARGV - 4 then return {-2} end
local want = {}
for i = 5, #ARGV do want[ARGV[i]] = true end
for _, m in ipairs(members) do
  if not want[m] then return {-2} end
end
local prefix = ARGV[1]
local plen = #prefix
local maxElems, maxScan = string.match(ARGV[4], '(%d+) (%d+)')
maxElems, maxScan = tonumber(maxElems), tonumber(maxScan)
local seen, bytes = 0, 0
local complete = 1
-- scan looks at the elements from index i to j (inclusive) of a list, in
-- chunks; it returns the element found, or nil (setting complete to 0 when
-- a bound stopped it).
local function scan(key, i, j)
  while i <= j do
    if seen >= maxElems or bytes >= budget then complete = 0; return nil end
    local last = math.min(j, i + 99, i + maxElems - seen - 1)
    local chunk = redis.call('LRANGE', key, i, last)
    for _, v in ipairs(chunk) do
      seen = seen + 1
      bytes = bytes + #v
      if string.sub(v, 1, plen) == prefix then return v end
    end
    if #chunk < last - i + 1 then return nil end
    i = last + 1
  end
  return nil
end
local procs = 7 + maxLevel
for k = procs, #KEYS do
  local v = scan(KEYS[k], 0, redis.call('LLEN', KEYS[k]) - 1)
  if v then return {3, v, k - procs + 1, 1} end
end
for k = 7, procs - 1 do
  local v = scan(KEYS[k], 0, redis.call('LLEN', KEYS[k]) - 1)
  if v then return {1, v, 0, 1} end
end
local n = redis.call('LLEN', KEYS[1])
local left = maxElems - seen
if n <= left then
  local v = scan(KEYS[1], 0, n - 1)
  if v then return {1, v, 0, 1} end
else
  -- The newest (head) and the oldest (tail) jobs; the middle is not seen.
  local half = math.floor(left / 2)
  local v = scan(KEYS[1], n - half, n - 1) or scan(KEYS[1], 0, half - 1)
  if v then return {1, v, 0, 1} end
  complete = 0
end
local function zscan(key, where)
  local cursor, examined = '0', 0
  repeat
    local r = redis.call('ZSCAN', key, cursor, 'MATCH', ARGV[2], 'COUNT', 1000)
    cursor = r[1]
    examined = examined + 1000
    if #r[2] > 0 then return {where, r[2][1], math.floor(tonumber(r[2][2])), 1} end
  until cursor == '0' or examined >= maxScan
  if cursor ~= '0' then complete = 0 end
  return nil
end
local found = zscan(KEYS[6], 5) or zscan(KEYS[2], 2)
if found then return found end
local rec = redis.call('HGET', KEYS[3], ARGV[3])
if rec then return {4, rec, redis.call('HGET', KEYS[4], ARGV[3]) or '', complete} end
return {0, '', 0, complete}
`)

// cancelWaitingScript takes a waiting job off the ready list or the delayed
// set, only if its element is still there (a fetcher or the scheduler may
// have moved it since it was located: then it returns 0 and the caller
// locates it again). As the Inspector's Delete does, it deletes the
// payload kept apart, the last error, and frees the idempotency key. It records the cancel
// and wakes the producers waiting for the job (Queue.Wait), and those
// waiting for the room it made (roomMadeLua).
// KEYS: ready, delayed or fair, payloads, cancel marker, result waiters, last
// error[, unique key][, the partition keys: with "1" and "2"], waiters,
// partition waiters. ARGV: element, "1" for the delayed set, "2" for pjobs
// (parts.go: both count in plen), payload ref or ”, marker value, marker
// TTL ms, done channel, job ID, room channel.
var cancelWaitingScript = redis.NewScript(partLua + partRoomLua + roomMadeLua + uniqueOwnLua + `
local n, P
local base = 7
if ARGV[2] == '2' then
  base = 14
  P = partKeysAt(#KEYS-8)
  n = partDel(P, ARGV[1])
elseif ARGV[2] == '1' then
  base = 14
  P = partKeysAt(#KEYS-8)
  n = partDelayedDel(KEYS[1], P, ARGV[1])
else
  n = redis.call('LREM', KEYS[1], 1, ARGV[1])
end
if n == 0 then return 0 end
roomMade(ARGV[1], KEYS[#KEYS-1], KEYS[#KEYS], P, ARGV[8])
if ARGV[3] ~= '' then redis.call('HDEL', KEYS[2], ARGV[3]) end
redis.call('DEL', KEYS[5])
if #KEYS > base and uniqueMine(KEYS[6], ARGV[1]) then redis.call('DEL', KEYS[6]) end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('DEL', KEYS[4])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return 1
`)

// cancelRunningScript records the cancel of a running job and sends it on
// the control channel of the consumer that holds it, only if the job is
// still in that consumer's processing list.
// KEYS: processing list, cancel marker, the run's cancel (keys.runCancel).
// ARGV: element, marker value, marker TTL ms, control channel, message.
// Returns 0 if the element is gone, else 1 + the number of subscribers that
// received the message (on Redis Cluster, those on this node only).
var cancelRunningScript = redis.NewScript(`
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return 1 + redis.call('PUBLISH', ARGV[4], ARGV[5])
`)

// notifyScript wakes the producers waiting for a job (Queue.Wait), if any:
// they registered in the waiters key, so a job nobody waits for costs no
// message.
// KEYS: result waiters. ARGV: done channel, job ID.
var notifyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
return redis.call('PUBLISH', ARGV[1], ARGV[2])
`)

// waitRegisterScript registers a producer waiting for a job: the key lives
// at least ARGV[1] ms. KEYS: result waiters.
var waitRegisterScript = redis.NewScript(`
redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
`)

// ctlScripts are loaded with the others after a NOSCRIPT (see loadScripts).
var ctlScripts = []*redis.Script{findJobScript, cancelWaitingScript, cancelRunningScript, notifyScript, waitRegisterScript}
