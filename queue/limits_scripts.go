package queue

import (
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

// limitTakeLua is takeLua for a limited queue: it takes jobs while
// limit_room allows, adds a slot (prefix .. element) per job to the held
// set when there is a concurrency limit, and advances the rate key once
// for all of them. A wake marker is no job: it is taken even at the limit
// and holds no slot. It rings the doorbell again only when it leaves jobs
// that another consumer could take now: never when the limit stopped it
// (the release of a slot rings; a rate-limited consumer sleeps to the
// instant it returns). Its reply is {wait, elements...}: wait is "0", or
// the µs until the rate allows the next job when the rate stopped it.
// KEYS: ready, processing list, bell, paused flag, held, rate.
// ARGV: n, slot prefix, concurrency (0: none), now µs ("": Redis TIME),
// scale, step (0: no rate), burst.
var limitTakeLua = budgetLua + gcra.Lua + limitLua + `
local marker = '` + wakeMarker + `'
if redis.call('EXISTS', KEYS[4]) == 1 then
  if redis.call('LINDEX', KEYS[1], -1) == marker then
    return {'0', redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')}
  end
  return {'0'}
end
local n, prefix, conc = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local scale, step, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = 0
if step > 0 then now = gcra_now(ARGV[4]) end
local room, why, d, us, num, den = limit_room(KEYS[5], KEYS[6], conc, now, scale, step, burst)
local out, bytes, jobs, stop, slots = {'0'}, 0, 0, nil, {}
while #out - 1 < n do
  if bytes >= budget then stop = 'budget'; break end
  if jobs >= room then
    -- At the limit: only a wake marker may still go.
    local tail = redis.call('LINDEX', KEYS[1], -1)
    if not tail then stop = 'empty'; break end
    if tail ~= marker then stop = why; break end
  end
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then stop = 'empty'; break end
  out[#out+1] = v
  bytes = bytes + #v
  if v ~= marker then
    jobs = jobs + 1
    slots[#slots+1] = 0
    slots[#slots+1] = prefix .. v
  end
end
if conc > 0 and jobs > 0 then redis.call('ZADD', KEYS[5], unpack(slots)) end
limit_take_done(KEYS[6], now, us, num, den, jobs, step, scale)
if stop == 'rate' then
  out[1] = string.format('%d', limit_wait(d, jobs, step, burst, scale))
elseif stop ~= 'empty' and stop ~= 'conc' and jobs < room and redis.call('LLEN', KEYS[1]) > 0 then
  redis.call('ZADD', KEYS[3], 0, '1')
end
return out
`

var (
	limitTakeScript        = redis.NewScript(limitTakeLua)
	limitTakeAtLimitScript = redis.NewScript(allowOOM + limitTakeLua)
)

// limitReleaseLua gives slots back: it removes from the held set the
// members in ARGV (the first form) or every member in the lex range
// [ARGV[3], ARGV[4]) (ARGV[1] == 'range': all the slots of one consumer
// incarnation). When it freed a slot of a full set (the count was at least
// ARGV[2], the limit, before; 0: whatever the count) and the ready list
// holds jobs, it rings the doorbell, so one consumer waiting at the limit
// takes the next (a take that leaves room and jobs rings on for the
// others). A release below the limit rings nothing: nobody waits for it,
// and a ring per job would cost a wake-up and a take per job.
// KEYS: held, ready, bell. ARGV: 'one', limit, members... | 'range', limit,
// min, max. Returns how many slots it freed.
const limitReleaseLua = `
local n = 0
if ARGV[1] == 'range' then
  n = redis.call('ZREMRANGEBYLEX', KEYS[1], ARGV[3], ARGV[4])
else
  n = redis.call('ZREM', KEYS[1], unpack(ARGV, 3))
end
local conc = tonumber(ARGV[2])
if n > 0 and (conc == 0 or redis.call('ZCARD', KEYS[1]) + n >= conc) and redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('ZADD', KEYS[3], 0, '1')
end
return n
`

// At maxmemory its ring (ZADD) is refused after the ZREM ran: the release
// fails and is sent again (as a resend), which then frees nothing and
// rings nothing; consumers at maxmemory wait at most BlockTimeout anyway.
var limitReleaseScript = redis.NewScript(limitReleaseLua)

// limitScripts are loaded with the others (allScripts).
var limitScripts = []*redis.Script{limitTakeScript, limitReleaseScript}
