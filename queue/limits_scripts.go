package queue

import (
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/gcra"
)

// The Lua of the fleet-wide limits (limits.go). The take of a limited
// queue is its own script, limitTakeScript, so a queue with no limit runs
// takeScript unchanged and pays nothing; its admission is one function,
// limit_room, which a take that serves several lists (partitions) can call
// per list as its "may this list give a job now?" predicate.

// limitLua defines limit_room and limit_take_done (needs gcra.Lua):
//
//	limit_room(held, rate, conc, now, scale, step, burst)
//	  -> room (how many jobs the limits let start now: 2^31-1 when none),
//	     why ('conc' or 'rate': the limit that set room), and the rate
//	     key's state d, us, num, den (gcra_read's; d is 0 without a rate)
//	limit_take_done(rate, now, us, num, den, jobs, step, scale)
//	  -> writes the rate key's TAT jobs steps later (nothing for no jobs
//	     or no rate)
//	limit_wait(d, jobs, step, burst, scale) -> µs until the rate allows
//	  one more job after jobs were admitted from state d
//
// held is the sorted set of slots (all scores 0, see slotMember); rate
// holds the GCRA state. conc 0 means no concurrency limit (held is not
// read), step 0 no rate limit (rate is not read and now is unused).
const limitLua = `
local function limit_room(held, rate, conc, now, scale, step, burst)
  local room, why = 2147483647, nil
  if conc > 0 then
    local c = math.max(conc - redis.call('ZCARD', held), 0)
    if c < room then room, why = c, 'conc' end
  end
  local d, us, num, den = 0, now, 0, 1
  if step > 0 and room > 0 then
    d, us, num, den = gcra_read(redis.call('GET', rate), now, scale)
    -- This limit never puts the TAT more than burst intervals ahead (the
    -- key is this limit's own, limitRateOf): one further ahead was written
    -- before Redis's clock went back. It counts as full from now, and is
    -- stored so, so a clock that goes back an hour does not stop the
    -- queue for an hour.
    local full = burst * step
    if d > full then
      local fr = math.fmod(full, scale)
      d, us, num, den = full, now + (full - fr) / scale, fr, scale
      gcra_write(rate, now, us, num, den, 0, scale)
    end
    local r = 0
    local x = burst * step - d
    if d < 2 * max and x >= step then r = (x - math.fmod(x, step)) / step end
    if r < room then room, why = r, 'rate' end
  end
  return room, why, d, us, num, den
end
local function limit_take_done(rate, now, us, num, den, jobs, step, scale)
  if step > 0 and jobs > 0 then gcra_write(rate, now, us, num, den, jobs * step, scale) end
end
local function limit_wait(d, jobs, step, burst, scale)
  if d >= 2 * max then return math.max(1, math.floor(step / scale)) end
  local u = d + jobs * step + step - burst * step
  if u <= 0 then return 1 end
  local r = math.fmod(u, scale)
  local w = (u - r) / scale
  if r > 0 then w = w + 1 end
  return w
end
`

// limitPartMayLua replaces the partitions' admission hooks
// (partHooksDefault in partTakeLua). With a per-partition concurrency
// limit (ARGV[8] > 0), a partition gives a job only while fewer than that
// many of its jobs hold a slot (KEYS[14], a hash: partition -> slots held,
// read in one HMGET per window of partitions, partWindow) counting those
// this take already took; one at its limit is held (phold, partAtLimit) until the release
// of one of its slots moves it back (limitReleaseLua). With a rate per
// partition (ARGV[9], the interval between two jobs of a partition in µs,
// > 0; ARGV[10], the burst), a partition gives a job only when its GCRA
// allows it: its state is its TAT in µs, the score of the partition in
// KEYS[15] (a sorted set: an entry whose TAT is past holds nothing and is
// dropped at the next take, so it holds the partitions that started a job
// within their last burst of intervals; the key expires a burst of
// intervals after a take last wrote it, limitPartExpire); one the rate refuses is held
// until the instant it allows the next job (phold, scored by that µs), and
// moved back by the first take from then (partUnhold). Without either
// limit no partition stays held (partitions held by consumers that had
// one).
const limitPartMayLua = `local limitPartConc = tonumber(ARGV[8]) or 0
local limitPartStep, limitPartBurst = tonumber(ARGV[9]) or 0, tonumber(ARGV[10]) or 0
local limitPartHeld, limitPartTAT, limitPartAt = {}, {}, {}
local limitPartNowUS = nil
local function limitPartNow()
  if limitPartNowUS == nil then limitPartNowUS = gcra_now(ARGV[4]) end
  return limitPartNowUS
end
local function partMay(key)
  if limitPartConc > 0 then
    local h = limitPartHeld[key]
    if h == nil then
      h = tonumber(redis.call('HGET', KEYS[14], key) or '0')
      limitPartHeld[key] = h
    end
    if h + (partTaken[key] or 0) >= limitPartConc then
      limitPartAt[key] = partAtLimit
      return false
    end
  end
  if limitPartStep > 0 then
    local now = limitPartNow()
    local tat = limitPartTAT[key]
    if tat == nil then
      -- Never more than a burst of intervals ahead: one further ahead was
      -- written before Redis's clock went back.
      tat = math.min(tonumber(redis.call('ZSCORE', KEYS[15], key) or '0'), now + limitPartBurst * limitPartStep)
      limitPartTAT[key] = tat
    end
    local free = math.max(tat, now) - (limitPartBurst - 1) * limitPartStep
    if free > now then
      limitPartAt[key] = partInt(free)
      return false
    end
  end
  return true
end
local function partWindow(keys)
  if limitPartConc <= 0 then return end
  local hs = redis.call('HMGET', KEYS[14], unpack(keys))
  for i, key in ipairs(keys) do limitPartHeld[key] = tonumber(hs[i] or '0') end
end
local function partHoldAt(key) return limitPartAt[key] or partAtLimit end
local limitPartWrote = false
local function partTook(key)
  if limitPartStep > 0 then
    local tat = math.max(limitPartTAT[key] or 0, limitPartNow()) + limitPartStep
    limitPartTAT[key] = tat
    redis.call('ZADD', KEYS[15], partInt(tat), key)
    limitPartWrote = true
  end
end
-- limitPartExpire: the states expire with the last of them. No TAT is
-- written more than a burst of intervals past now (partMay admits only
-- then), and one that has passed holds nothing: without the expiry, the
-- states of the last partitions served stayed for good once no take came.
-- Not on an injected clock (tests: ARGV[4]), which runs apart from the
-- Redis time an expiry counts in.
local function limitPartExpire()
  if limitPartWrote and ARGV[4] == '' then
    redis.call('PEXPIRE', KEYS[15], partInt(math.floor(limitPartBurst * limitPartStep / 1000) + 1))
  end
end
local function partUnhold(P)
  if limitPartConc <= 0 and limitPartStep <= 0 then
    partUnholdAll(P)
    return
  end
  -- Without a rate, a partition a rate held (a limit of before) is due now:
  -- no clock to read.
  local now = '(' .. partAtLimit
  if limitPartStep > 0 then
    now = partInt(limitPartNow())
    redis.call('ZREMRANGEBYSCORE', KEYS[15], '-inf', now)
  end
  local due = redis.call('ZRANGEBYSCORE', P.hold, '-inf', now, 'LIMIT', 0, 100)
  for _, key in ipairs(due) do
    redis.call('ZREM', P.hold, key)
    partSchedule(P, key, false)
  end
end
-- limitPartWait: the µs until the first partition its rate holds may run,
-- or nil.
local function limitPartWait(P)
  if limitPartStep <= 0 then return nil end
  local first = redis.call('ZRANGEBYSCORE', P.hold, '-inf', '(' .. partAtLimit, 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then return nil end
  return math.max(1, tonumber(first[2]) - limitPartNow())
end`

// The KEYS indices where the level ready lists start: in the limited take
// after ready, processing list, bell, paused flag, the partition keys, held,
// rate, partition slots and partition rate states; in the release after
// held, ready, bell, partition slots and the partition keys.
const (
	limitTakeLevelsAt    = 5 + partKeyCount + 4
	limitReleaseLevelsAt = 5 + partKeyCount
)

// limitTakeLua is takeLua for a limited queue: it takes jobs while
// limit_room allows (and, from the partitions, while the partition's own
// limit allows: limitPartMayLua), adds a slot per job to the held set when
// a concurrency limit counts it (member: prefix, partition or "", NUL,
// element), counts the partitions' slots, and advances the rate key once
// for all of them. A wake marker is no job: it holds no slot, and is taken
// even at the limit from the ready list. It rings the doorbell again only
// when it leaves jobs that another consumer could take now: never when a
// limit stopped it (the release of a slot rings; a rate-limited consumer
// sleeps to the instant it returns). Its reply is {wait, elements...}: wait
// is "0", or the µs until the rate allows the next job when the rate
// stopped it.
//
// A take that the concurrency limit stopped while jobs wait records its
// consumer as waiting for a slot (limitWaitLua), and its reply's wait is
// "c"; the next take of a consumer that waited ("1" in ARGV[11]) records
// it waiting no more, whatever it finds, a paused queue included. A take
// the limit stopped while another consumer waits whose wider limit admits
// a job (its score above the slots held) rings the doorbell again, since
// the ring it used may have been that consumer's, and replies "c<held>";
// it does not when its consumer rang again at that count already (ARGV[12]:
// its ring came back, nobody else is blocked on the bell), so two
// consumers never ring each other in a loop.
// KEYS: ready, processing list, bell, paused flag, the partition keys
// (KEYS[5..11], parts.go), held, rate, partition slots, partition rate
// states, the level ready lists (levels.go, from KEYS[limitTakeLevelsAt]:
// served first, highest first, within the queue's limits), waiting, the
// partition waiters (parts_wait.go: always the last key).
// ARGV: n, slot prefix (consumer ID, NUL, token, NUL), concurrency (0:
// none), now µs ("": Redis TIME), scale, step (0: no rate), burst,
// per-partition concurrency (0: none), per-partition interval µs (0: no
// rate), per-partition burst, "1" when this consumer waited, the count held
// when this consumer last rang again after a refusal ("" for none; may be
// left out), the room channel (partWake: always the last argument).
// When the partitions' rates stopped it (nothing else could be taken),
// its wait is "p" and the µs until the first partition held may run: the
// fetcher then sleeps to that instant or the next ring, whichever comes
// first (a job of another partition may come before).
var limitTakeLua = budgetLua + gcra.Lua + limitLua + partLua + partRoomLua +
	strings.Replace(partTakeLua, partHooksDefault, limitPartMayLua, 1) + `
local waitingKey = ` + strconv.Itoa(limitTakeLevelsAt+MaxLevel) + `
local marker = '` + wakeMarker + `'
-- ONE EXISTS: the paused flag once, the fair set twice, each level list
-- four times (levels.go).
local flagged = redis.call('EXISTS', KEYS[4], KEYS[5], KEYS[5], ` + levelsTimes(limitTakeLevelsAt, 4) + `)
local levels = ` + levelsReverse(limitTakeLevelsAt) + `
local function jobsLeft()
  return redis.call('EXISTS', KEYS[1], KEYS[5], unpack(levels)) > 0
end
if flagged % 2 == 1 then
  -- Paused: a consumer that waited for a slot waits for Resume's ring now.
  if ARGV[11] == '1' then redis.call('ZREM', KEYS[waitingKey], ARGV[2]) end
  if redis.call('LINDEX', KEYS[1], -1) == marker then
    return {'0', redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')}
  end
  return {'0'}
end
local n, prefix, conc = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local scale, step, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = 0
if step > 0 then now = gcra_now(ARGV[4]) end
local room, why, d, us, num, den = limit_room(KEYS[12], KEYS[13], conc, now, scale, step, burst)
local out, bytes, jobs, stop = {'0'}, 0, 0, nil
if flagged >= 4 then
  -- levels: the level lists first, highest first, within the limits.
  for _, l in ipairs(levels) do
    while #out - 1 < n and jobs < room and bytes < budget do
      local v = redis.call('LMOVE', l, KEYS[2], 'RIGHT', 'LEFT')
      if not v then break end
      out[#out+1] = v
      bytes = bytes + #v
      jobs = jobs + 1
    end
  end
end
if flagged % 4 >= 2 then
  -- Partitioned jobs wait: the partitions and the ready list in turn
  -- (takePart), as many as the queue's limits allow.
  local got, want = {}, math.min(n - (#out - 1), room - jobs)
  if want > 0 and bytes < budget then
    local dry
    bytes, dry = takePart(got, want, bytes, budget)
    limitPartExpire()
    partWake(got, 1, KEYS[#KEYS], KEYS[6], ARGV[#ARGV], partKeyOf)
    if dry then
      stop = 'dry'
      local pw = limitPartWait(partKeysAt(5))
      if pw then out[1] = 'p' .. partInt(pw) end
    end
  end
  for _, v in ipairs(got) do
    out[#out+1] = v
    if v ~= marker then jobs = jobs + 1 end
  end
  if stop == nil and #out - 1 < n and jobs >= room then stop = why end
else
  while #out - 1 < n do
    if bytes >= budget then stop = 'budget'; break end
    if jobs >= room then
      -- At the limit: only a wake marker may still go.
      local tail = redis.call('LINDEX', KEYS[1], -1)
      if not tail then
        -- Jobs left in the level lists (the loop above stopped at the
        -- limit) are jobs the limit stops, not an empty queue.
        if flagged >= 4 and redis.call('EXISTS', unpack(levels)) > 0 then stop = why else stop = 'empty' end
        break
      end
      if tail ~= marker then stop = why; break end
    end
    local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
    if not v then stop = 'empty'; break end
    out[#out+1] = v
    bytes = bytes + #v
    if v ~= marker then jobs = jobs + 1 end
  end
end
-- The slots: one ZADD, and the partitions' counts up by the members it
-- adds (one HSET of the counts partMay read, an HINCRBY for any other):
-- a member there already (this incarnation took the same element again:
-- a take whose reply was lost, its element put back as it was by a
-- reconcile whose release then failed) holds its slot once and is given
-- back once, so a partition's count follows the members that exist. With
-- one partition's members alone, the ZADD's reply counts them; else one
-- ZMSCORE before it says which are new.
local pconc = tonumber(ARGV[8])
if jobs > 0 and (conc > 0 or pconc > 0) then
  local slots, parts, order, pm, pk = {}, {}, {}, {}, {}
  for i = 2, #out do
    local v = out[i]
    if v ~= marker then
      -- The member names the partition only when its limit counts it.
      local key = pconc > 0 and (partKeyOf[v] or partOf(v))
      if conc > 0 or key then
        local m = prefix .. (key or '') .. '\0' .. v
        slots[#slots+1] = 0
        slots[#slots+1] = m
        if key then
          if parts[key] == nil then parts[key] = 0; order[#order+1] = key end
          pm[#pm+1], pk[#pm+1] = m, key
        end
      end
    end
  end
  local alone = #order == 1 and #pm * 2 == #slots
  if #order > 0 and not alone then
    for i = 1, #pm, 1000 do
      local sc = redis.call('ZMSCORE', KEYS[12], unpack(pm, i, math.min(i + 999, #pm)))
      for j = 1, #sc do
        if not sc[j] then parts[pk[i+j-1]] = parts[pk[i+j-1]] + 1 end
      end
    end
  end
  local added = 0
  for i = 1, #slots, 2000 do added = added + redis.call('ZADD', KEYS[12], unpack(slots, i, math.min(i + 1999, #slots))) end
  if alone then parts[order[1]] = added end
  local counts = {}
  for _, key in ipairs(order) do
    if parts[key] > 0 and limitPartHeld[key] then
      counts[#counts+1] = key
      counts[#counts+1] = partInt(limitPartHeld[key] + parts[key])
    elseif parts[key] > 0 then
      redis.call('HINCRBY', KEYS[14], key, partInt(parts[key]))
    end
  end
  for i = 1, #counts, 1000 do redis.call('HSET', KEYS[14], unpack(counts, i, math.min(i + 999, #counts))) end
end
limit_take_done(KEYS[13], now, us, num, den, jobs, step, scale)
if stop == 'rate' then
  if jobsLeft() then
    out[1] = string.format('%d', limit_wait(d, jobs, step, burst, scale))
  end
elseif stop == nil or stop == 'budget' then
  if jobs < room and jobsLeft() then
    redis.call('ZADD', KEYS[3], 0, '1')
  end
end
if stop == 'conc' then
  redis.call('ZADD', KEYS[waitingKey], conc, prefix)
  out[1] = 'c'
  -- The ring it took may have been for a consumer whose wider limit
  -- admits a job now (waiting with a score above the count held): ring
  -- again for it, unless this consumer rang again at this count already
  -- (that ring came back to it: nobody else blocks on the bell now).
  local held = redis.call('ZCARD', KEYS[12])
  if tostring(held) ~= (#ARGV >= 13 and ARGV[12] or '') and
     #redis.call('ZRANGEBYSCORE', KEYS[waitingKey], '(' .. held, '+inf', 'LIMIT', 0, 1) > 0 and jobsLeft() then
    redis.call('ZADD', KEYS[3], 0, '1')
    out[1] = 'c' .. held
  end
elseif ARGV[11] == '1' then
  redis.call('ZREM', KEYS[waitingKey], prefix)
end
return out
`

var (
	limitTakeScript        = redis.NewScript(limitTakeLua)
	limitTakeAtLimitScript = redis.NewScript(allowOOM + limitTakeLua)
)

// limitReleaseLua gives slots back, and the partitions' counts with them.
// Three forms name the slots: 'elems' (the slots of this prefix for these
// elements: an outcome's), 'members' (the members themselves), 'range'
// (every member in the lex range [min, max): all the slots of one
// consumer incarnation, which waits for a slot no more either). When jobs
// wait and it freed a slot that someone may now take, it rings the
// doorbell, so one consumer waiting at the limit takes the next (a take
// that leaves room and jobs rings on for the others): a slot of a full set
// or of a full partition by the releasing process's limits (ARGV[2], the
// queue's, and ARGV[3], the partitions'; 0: whatever the count), or one
// that leaves the set below the tightest limit of the consumers waiting
// for a slot (the waiting set, limitWaitLua: processes that disagree on
// the limit each admit by their own, so one with a tighter limit than the
// releaser's waits for a count that the releaser's limit says nothing
// about). A release below all of them rings nothing: nobody waits for it,
// and a ring per job would cost a wake-up and a take per job; it costs one
// read of the waiting set.
// A partition held at its concurrency limit (phold, parts.go) goes back to
// psched at the release of any slot of it, whatever the releaser's own
// limit (a take under a tighter limit may have held it), and rings; the
// take holds it again if it is still at its limit.
// KEYS: held, ready, bell, partition slots, the partition keys (KEYS[5..11],
// parts.go), the level ready lists (levels.go, from
// KEYS[limitReleaseLevelsAt]), waiting.
// ARGV: 'elems', limit, partition limit, prefix, elements... | 'members',
// limit, partition limit, members... | 'range', limit, partition limit,
// min, max. Returns how many slots it freed.
var limitReleaseLua = partLua + `
local waitingKey = ` + strconv.Itoa(limitReleaseLevelsAt+MaxLevel) + `
local conc, pconc = tonumber(ARGV[2]), tonumber(ARGV[3])
local P = partKeysAt(5)
local members = {}
if ARGV[1] == 'range' then
  members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[4], ARGV[5])
  redis.call('ZREM', KEYS[waitingKey], string.sub(ARGV[4], 2))
elseif ARGV[1] == 'elems' then
  for i = 5, #ARGV do
    local key = pconc > 0 and partOf(ARGV[i])
    members[#members+1] = ARGV[4] .. (key or '') .. '\0' .. ARGV[i]
  end
else
  members = {unpack(ARGV, 4)}
end
-- Slots of no partition go in one ZREM; a partition's one at a time, to
-- count down the partition of each one removed.
local n, ring, plain = 0, false, {}
for _, m in ipairs(members) do
  local key = string.match(m, '^[^%z]*%z[^%z]*%z([^%z]+)%z')
  if not key then
    plain[#plain+1] = m
  elseif redis.call('ZREM', KEYS[1], m) == 1 then
    n = n + 1
    local left = redis.call('HINCRBY', KEYS[4], key, '-1')
    if left <= 0 then redis.call('HDEL', KEYS[4], key) end
    if partRelease(P, key) or pconc == 0 or left + 1 >= pconc then ring = true end
  end
end
for i = 1, #plain, 1000 do
  n = n + redis.call('ZREM', KEYS[1], unpack(plain, i, math.min(i + 999, #plain)))
end
if n > 0 and not ring then
  local left = conc > 0 and redis.call('ZCARD', KEYS[1])
  if conc == 0 or left + n >= conc then
    ring = true
  else
    local tightest = redis.call('ZRANGE', KEYS[waitingKey], 0, 0, 'WITHSCORES')
    ring = #tightest > 0 and left < tonumber(tightest[2])
  end
end
if ring and redis.call('EXISTS', KEYS[2], KEYS[5], unpack(KEYS, ` + strconv.Itoa(limitReleaseLevelsAt) + `, waitingKey - 1)) > 0 then
  redis.call('ZADD', KEYS[3], 0, '1')
end
return n
`

// At maxmemory it runs whole: Redis refuses a command that may grow memory
// (HINCRBY, the ring's ZADD) in a script without allow-oom only while the
// script has written nothing yet, and everything that may grow comes after
// a ZREM that removed a slot (a release that removes none writes nothing
// else). Checked on Redis 7.0.15: a ZADD after a ZREM at maxmemory
// succeeds, a ZADD first is refused.
var limitReleaseScript = redis.NewScript(limitReleaseLua)

// limitScripts are loaded with the others (allScripts).
var limitScripts = []*redis.Script{limitTakeScript, limitReleaseScript}
