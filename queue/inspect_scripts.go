package queue

import "github.com/redis/go-redis/v9"

// The Inspector's scripts. Each reads one page atomically (a consistent
// view of one key), at most the page's limit and about callBudget bytes
// (at least one element, so a page always makes progress), reading in
// chunks of at most 32 elements sized by the largest seen, the first
// chunk one element, as promoteLua does: elements of a size (Durable and
// debounced jobs keep payloads of up to Config.MaxPayload inline) never
// pull 32 times that size into Lua to return callBudget. (Elements much
// larger than every one before them in the page can still overshoot, by
// at most one chunk.) Whether more follow is counted (ZCARD, LLEN), not
// read. They write nothing but deleteJobScript.

// cmpLua defines cmp(a, b): -1, 0 or 1 as a sorts before, equal to or after
// b byte by byte, the order Redis keeps the members of equal score in. (Lua's
// own string comparison follows the server's locale.)
const cmpLua = `
local function cmp(a, b)
  local n = math.min(#a, #b)
  local i = 1
  while i <= n do
    local j = math.min(i + 63, n)
    local x, y = string.sub(a, i, j), string.sub(b, i, j)
    if x ~= y then
      for k = 1, j - i + 1 do
        local p, q = string.byte(x, k), string.byte(y, k)
        if p ~= q then if p < q then return -1 end return 1 end
      end
    end
    i = j + 1
  end
  if #a == #b then return 0 end
  if #a < #b then return -1 end
  return 1
end
`

// seekLua defines seek(key, score, member, rev, prefix): the rank (in ZRANGE
// order, or ZREVRANGE order with rev) of the first member that comes after
// the cursor (score, member), whether or not the cursor's member is still
// in the set: a cursor stays valid while members come and go, and a page
// never repeats or skips a member that stays. With prefix, member is a
// prefix of the cursor's member (a delayed job's element up to its ID), and
// every member starting with it counts as the cursor's. Cost: two ZCOUNTs
// and a binary search among the members of the cursor's score (O(log^2 n)).
const seekLua = cmpLua + `
local function seek(key, score, member, rev, prefix)
  local lo, hi
  if rev then
    lo = redis.call('ZCOUNT', key, '(' .. score, '+inf')
    hi = redis.call('ZCOUNT', key, score, '+inf')
  else
    lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
    hi = redis.call('ZCOUNT', key, '-inf', score)
  end
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local v
    if rev then v = redis.call('ZREVRANGE', key, mid, mid)[1] else v = redis.call('ZRANGE', key, mid, mid)[1] end
    if prefix then v = string.sub(v, 1, #member) end
    local c = cmp(v, member)
    if (rev and c < 0) or (not rev and c > 0) then hi = mid else lo = mid + 1 end
  end
  return lo
end
`

// zsetPageScript reads a page of a sorted set after a cursor: the delayed
// set (ascending by due time), or the dead letters (newest first, with
// their records).
// KEYS: sorted set[, dead data, dead refs, payloads].
// ARGV: cursor score (” for the first page), cursor member, limit, "1"
// for descending, "1" for a prefix cursor.
// Returns 1 when more members follow the page (else 0), then per member:
// member, score; and with the dead keys also its record, the ref of its
// payload kept apart (or false) and that payload's size.
var zsetPageScript = redis.NewScript(budgetLua + seekLua + `
local rev, limit = ARGV[4] == '1', tonumber(ARGV[3])
local start = 0
if ARGV[1] ~= '' then start = seek(KEYS[1], ARGV[1], ARGV[2], rev, ARGV[5] == '1') end
local out, got, bytes, largest = {}, 0, 0, 0
while got < limit and (got == 0 or bytes < callBudget) do
  local n = 1
  if largest > 0 then n = math.max(1, math.min(limit - got, 32, math.floor((callBudget - bytes) / largest))) end
  local part
  if rev then
    part = redis.call('ZREVRANGE', KEYS[1], start + got, start + got + n - 1, 'WITHSCORES')
  else
    part = redis.call('ZRANGE', KEYS[1], start + got, start + got + n - 1, 'WITHSCORES')
  end
  if #part == 0 then break end
  for i = 1, #part, 2 do
    local m = part[i]
    local size = #m
    out[#out+1] = m
    out[#out+1] = part[i+1]
    if #KEYS > 1 then
      local rec = redis.call('HGET', KEYS[2], m)
      local ref = redis.call('HGET', KEYS[3], m)
      local psize = 0
      if ref then psize = redis.call('HSTRLEN', KEYS[4], ref) end
      if rec then size = size + #rec end
      out[#out+1] = rec
      out[#out+1] = ref
      out[#out+1] = psize
    end
    bytes = bytes + size
    if size > largest then largest = size end
    got = got + 1
    if bytes >= callBudget then break end
  end
  if #part < 2 * n then break end
end
local more = 0
if redis.call('ZCARD', KEYS[1]) > start + got then more = 1 end
table.insert(out, 1, more)
return out
`)

// listPageScript reads a page of a list: ARGV[3] == "1" counts offsets from
// the tail (the ready list, whose tail is taken first) and returns the
// elements tail first; otherwise from the head (a processing list).
// KEYS: list. ARGV: offset, limit, "1" from the tail. Returns 1 when more
// elements follow the page (else 0), then the elements.
var listPageScript = redis.NewScript(budgetLua + `
local off, limit, tail = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local out, bytes, largest = {}, 0, 0
while #out < limit and (#out == 0 or bytes < callBudget) do
  local n = 1
  if largest > 0 then n = math.max(1, math.min(limit - #out, 32, math.floor((callBudget - bytes) / largest))) end
  local from = off + #out
  local part
  if tail then
    part = redis.call('LRANGE', KEYS[1], -(from + n), -(from + 1))
  else
    part = redis.call('LRANGE', KEYS[1], from, from + n - 1)
  end
  if #part == 0 then break end
  local first, last, step = 1, #part, 1
  if tail then first, last, step = #part, 1, -1 end
  for i = first, last, step do
    out[#out+1] = part[i]
    bytes = bytes + #part[i]
    if #part[i] > largest then largest = #part[i] end
    if bytes >= callBudget then break end
  end
  if #part < n or bytes >= callBudget then break end
end
local more = 0
if redis.call('LLEN', KEYS[1]) > off + #out then more = 1 end
table.insert(out, 1, more)
return out
`)

// locateScript finds, for Delete, the member of a delayed set at a cursor:
// the first member of score ARGV[1] starting with ARGV[2], or false.
// KEYS: delayed set.
var locateScript = redis.NewScript(seekLua + `
local lo = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1])
local hi = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local v = redis.call('ZRANGE', KEYS[1], mid, mid)[1]
  if cmp(string.sub(v, 1, #ARGV[2]), ARGV[2]) >= 0 then hi = mid else lo = mid + 1 end
end
local v = redis.call('ZRANGE', KEYS[1], lo, lo, 'WITHSCORES')
if #v == 0 or tonumber(v[2]) ~= tonumber(ARGV[1]) or string.sub(v[1], 1, #ARGV[2]) ~= ARGV[2] then return false end
return v[1]
`)

// deleteJobScript deletes a waiting job, only if it is still there: takes
// the element off the ready list or the delayed set, wakes the producers
// waiting for the room this makes (roomMadeLua), and then deletes its
// payload kept apart, its last error and its idempotency key.
// KEYS: ready list, delayed set or fair set, payloads, last error[, unique
// key][, the partition keys: with "zset" and "part"], waiters, partition
// waiters.
// ARGV: "zset" (the delayed set), "list" or "part" (pjobs,
// parts.go: both count in plen), element, payload ref or ”, room channel.
// Returns 1, or 0 when the element is gone.
var deleteJobScript = redis.NewScript(partLua + partRoomLua + roomMadeLua + uniqueOwnLua + `
local n, P
local base = 5
if ARGV[1] == 'part' then
  base = 12
  P = partKeysAt(#KEYS-8)
  n = partDel(P, ARGV[2])
elseif ARGV[1] == 'zset' then
  base = 12
  P = partKeysAt(#KEYS-8)
  n = partDelayedDel(KEYS[1], P, ARGV[2])
else n = redis.call('LREM', KEYS[1], 1, ARGV[2]) end
if n == 0 then return 0 end
roomMade(ARGV[2], KEYS[#KEYS-1], KEYS[#KEYS], P, ARGV[4])
if ARGV[3] ~= '' then redis.call('HDEL', KEYS[2], ARGV[3]) end
redis.call('DEL', KEYS[3])
if #KEYS > base and uniqueMine(KEYS[4], ARGV[2]) then redis.call('DEL', KEYS[4]) end
return 1
`)

// deleteDeadScript deletes one dead letter with its payload kept apart,
// only if it is still there, dead since the listing's time (not a later
// death of the same dead ID). KEYS: dead index, dead data, payloads, dead
// refs. ARGV: dead ID, died at (its score). Returns 1, or 0 when it is
// gone.
var deleteDeadScript = redis.NewScript(budgetLua + dropDeadLua + `
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
return dropDead(KEYS[1], KEYS[2], KEYS[3], KEYS[4], {ARGV[1]})
`)
