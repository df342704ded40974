// Package lease is the Lua of a fleet-wide counting semaphore whose slots
// are leases that expire: ratelimit.Semaphore runs it, and any package that
// limits concurrency in Redis (the queue's per-group limits, issue 17) can
// include it in a script of its own, since queue may not import ratelimit.
//
// A semaphore key is one sorted set: each member is a holder's lease token,
// scored by the instant (µs) its lease expires. Acquiring drops the leases
// that have expired and admits the token if fewer than the limit remain; a
// holder renews its lease before it expires; releasing removes the token.
// Tokens are unique per acquisition, so a late release (after the lease
// expired and the slot went to another holder) removes nothing of anyone
// else's. The set's own TTL is the lease TTL, renewed by every write (and
// never shortened: callers with a shorter lease TTL, as in a rolling
// deploy that changes it, share the set with longer leases), so a key
// whose holders all died vanishes by itself.
//
// # Using it from another script
//
// Lua is a chunk of local functions, no statement at its top level:
// prepend it to a script's body and call them with keys the script got in
// KEYS (Redis Cluster: the set must share the hash tag of the script's
// other keys). Numbers are µs, and every argument is a Lua number except
// tokens and keys:
//
//	lease_now(arg)                            -> now: tonumber(arg), or Redis TIME when arg is not a number
//	lease_acquire(set, now, ttl, limit, tok)  -> admitted (1 or 0), holders after, µs until the earliest lease ends (0 when admitted)
//	lease_release(set, tok)                   -> 1 if tok held a slot, else 0
//	lease_renew(set, now, ttl, limit, tok)    -> 1 renewed, 2 re-admitted (its lease had gone and there was room), 0 lost
//	lease_holders(set, now)                   -> live holders (drops the expired ones)
//
// A script that uses only some of them works: unused local functions cost
// a few µs of compilation, once per script.
package lease

// Lua is the library: see the package doc. Its local functions are
// prefixed lease_ so that they do not shadow the including script's.
//
// lease_keep only extends the set's TTL (PTTL first, rather than PEXPIRE
// GT, which needs Redis 7). Scores and PEXPIRE arguments go through
// string.format('%d'), as the limiter's script does: an instant in µs has
// 16 digits, and how a Lua number passed to redis.call is formatted
// (significant digits, exponent) is the server's choice.
const Lua = `
local function lease_fmt(x) return string.format('%d', x) end
local function lease_now(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return t[1] * 1000000 + t[2]
end
local function lease_keep(set, ttl)
  local ms = math.floor((ttl + 999) / 1000)
  if redis.call('PTTL', set) < ms then
    redis.call('PEXPIRE', set, lease_fmt(ms))
  end
end
local function lease_holders(set, now)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', lease_fmt(now))
  return redis.call('ZCARD', set)
end
local function lease_acquire(set, now, ttl, limit, tok)
  local n = lease_holders(set, now)
  if n < limit then
    redis.call('ZADD', set, lease_fmt(now + ttl), tok)
    lease_keep(set, ttl)
    return 1, n + 1, 0
  end
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  return 0, n, tonumber(first[2]) - now
end
local function lease_release(set, tok)
  return redis.call('ZREM', set, tok)
end
local function lease_renew(set, now, ttl, limit, tok)
  local st = 1
  if not redis.call('ZSCORE', set, tok) then
    -- Gone: expired and dropped by an acquirer, or Redis lost it (a restart
    -- without persistence, a failover). The holder is alive: it takes its
    -- slot back if there is room, and is told it lost it if not.
    if lease_holders(set, now) >= limit then return 0 end
    st = 2
  end
  redis.call('ZADD', set, lease_fmt(now + ttl), tok)
  lease_keep(set, ttl)
  return st
end
`
