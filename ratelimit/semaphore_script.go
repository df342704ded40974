package ratelimit

import (
	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/lease"
)

// The Semaphore's scripts: internal/lease's library (shared with any other
// package that limits concurrency in Redis) and a few lines each for the
// waiting mark and the wake-up. KEYS[1] is the key's sorted set of leases,
// KEYS[2] its waiting mark: set (PX three rechecks) by a waiter's denied
// attempt, it tells a release that someone in the fleet waits, so a
// release publishes only then. The channel and the key it names travel in
// ARGV: a channel is not a key.

// semAcquireScript: ARGV now ("" for Redis TIME), ttl µs, limit, token,
// mark PX in ms ("" when the caller will not wait). Reply: {admitted,
// holders, µs until the earliest lease ends}.
var semAcquireScript = redis.NewScript(lease.Lua + `
local ok, n, wait = lease_acquire(KEYS[1], lease_now(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
if ok == 0 and ARGV[5] ~= '' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
end
return {ok, n, wait}
`)

// semReleaseScript: ARGV token, channel, key. Reply: 1 if the token held a
// slot.
var semReleaseScript = redis.NewScript(lease.Lua + `
local removed = lease_release(KEYS[1], ARGV[1])
if removed == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return removed
`)

// semRenewScript removes one key's abandoned leases of one process and
// renews its live ones, in that order: a slot its own dead lease holds is
// room for a live lease that was lost. ARGV now, ttl µs, limit, channel,
// key, the number of tokens to renew, those tokens, then the tokens to
// remove. Reply: one lease_renew status per renewed token.
var semRenewScript = redis.NewScript(lease.Lua + `
local now, ttl, limit = lease_now(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local nr = tonumber(ARGV[6])
local removed = 0
for i = 7 + nr, #ARGV do
  removed = removed + lease_release(KEYS[1], ARGV[i])
end
local out = {}
for i = 1, nr do
  out[i] = lease_renew(KEYS[1], now, ttl, limit, ARGV[6 + i])
end
if removed > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return out
`)
