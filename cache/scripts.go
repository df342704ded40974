package cache

import "github.com/redis/go-redis/v9"

// The load lock's scripts. Both touch only KEYS (the value and its lock,
// which share the cache's hash tag, so they run on Redis Cluster); the
// channel is an argument because PUBLISH takes no key.

// Results of lockScript.
const (
	lockHeld  int64 = 0 // {0, lock pttl}: another instance is loading
	lockValue int64 = 1 // {1, value, value pttl}: the value is there
	lockTaken int64 = 2 // {2}: this instance holds the lock now
)

// lockScript reads the value and, if it is missing, takes the load lock, in
// one atomic step: a lock is never taken for a value that is already there.
//
// KEYS[1] value, KEYS[2] lock; ARGV[1] token, ARGV[2] lock ttl in ms.
const lockScript = `
local v = redis.call('GET', KEYS[1])
if v then
	return {1, v, redis.call('PTTL', KEYS[1])}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return {2}
end
return {0, redis.call('PTTL', KEYS[2])}
`

// fillScript writes a loaded value (unless ARGV[1] is empty: the load
// failed) and releases the lock, if this instance still holds the lock: a
// Set or Delete since the lock was taken deleted it, and the loaded value
// may predate what they did. Either way it publishes the note that wakes
// the waiting instances and drops their local copies. It returns 1 if it
// wrote the value.
//
// KEYS[1] value, KEYS[2] lock; ARGV[1] value, ARGV[2] ttl in ms, ARGV[3]
// token, ARGV[4] channel, ARGV[5] message (empty: publish nothing).
const fillScript = `
local wrote = 0
if redis.call('GET', KEYS[2]) == ARGV[3] then
	redis.call('DEL', KEYS[2])
	if ARGV[1] ~= '' then
		redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
		wrote = 1
	end
end
if ARGV[5] ~= '' then
	redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return wrote
`

// dropIfScript deletes a value if it still holds ARGV[1] (one the codec
// could not decode): a value written since is left alone.
//
// KEYS[1] value; ARGV[1] the bytes to delete.
const dropIfScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`

type scripts struct {
	lock   *redis.Script
	fill   *redis.Script
	dropIf *redis.Script
}

func newScripts() scripts {
	return scripts{lock: redis.NewScript(lockScript), fill: redis.NewScript(fillScript), dropIf: redis.NewScript(dropIfScript)}
}
