package queue

import (
	"errors"
	"strconv"
	"strings"
)

// Waiting for room in a partition (Partition with WaitForRoom, wait.go). A
// partitioned enqueue can be refused for three reasons, and its producer
// waits for the one that refused it last:
//
//   - the queue's MaxLen (a *FullError): as an unpartitioned producer, on
//     the waiters key, woken by the consumers' acker (drainScript);
//   - MaxPartitions (ErrTooManyPartitions): on the field " new" of the
//     partition waiters hash, holding MaxPartitions;
//   - the partition's MaxPartitionLen (ErrPartitionFull): on the
//     partition's field of that hash.
//
// The refusing script marks the field in the same call (partMarkWait), and
// every refusal renews the hash's TTL (three rechecks, as the waiters key),
// so marks of producers gone stop costing anything within seconds. The
// take script, when it took partitioned jobs, reads the marks of their
// partitions (and " new") with one HMGET (partWake) and publishes on the
// room channel "p <jobs taken> <partition>" for a marked partition and "n
// <partitions free>" when partitions are wanted and fewer than
// MaxPartitions have jobs. The room subscriber wakes that many local
// producers waiting for that partition (or for a new one), oldest first. A
// take of unpartitioned jobs costs nothing more; one of partitioned jobs
// one HMGET while no producer waits.
//
// A waiting job taken out otherwise (Cancel, the Inspector's Delete) makes
// room too, and its script wakes the producers waiting for it the same way
// (roomMadeLua). Purge makes none: dead letters count in no bound.

// partWaiters is the hash of the partitions producers wait for room in
// (see above): partition -> "1", " new" -> MaxPartitions.
func (k keys) partWaiters() string { return k.tag + ":partwaiters" }

// What a waiting producer waits for (waiter.on): room in the queue
// (MaxLen), a new partition (MaxPartitions), or else room in the partition
// of that name (a partition has no space).
const (
	roomLen     = ""
	roomNewPart = " new"
)

// partRoomLua defines, for the scripts that refuse partitioned jobs for
// room (parts.go, unique.go) and those that take them:
//
//	partMarkWait(pw, field, value, ttl) marks producers waiting on field of
//	  the partition waiters pw (nothing when ttl is "0": the caller does not
//	  wait); pcalls, so that a Redis at maxmemory still answers the refusal
//	partWake(out, from, pw, plen, chan, known) publishes on chan the room
//	  that the jobs out[from..] (just taken) made for producers marked in
//	  pw; pw or chan nil: the caller passed none, nothing to do; known, if
//	  given, maps jobs to their partition (the take's partKeyOf: a job not
//	  in it is parsed)
//	partRoom(plen, pw, key, maxParts, maxLen, ttl) -> nil when one more job
//	  fits in partition key, else partEnqueueScript's refusal ({-2, ...} or
//	  {-3, ...}), marked for a waiting caller
//	partDelayedAdd(delayed, plen, key, due, v) adds v to the delayed set,
//	  counted in its partition from now (partLua)
//
// They, and partCount(plen) (the number of partitions with jobs) are what
// these scripts know of partlen (parts.go) beyond partLua's functions.
const partRoomLua = `
local function partCount(plen) return redis.call('HLEN', plen) end
local function partDelayedAdd(delayed, plen, key, due, v)
  redis.call('ZADD', delayed, due, v)
  redis.call('HINCRBY', plen, key, 1)
end
local function partMarkWait(pw, field, value, ttl)
  if ttl == '0' then return end
  pcall(redis.call, 'HSET', pw, field, value)
  pcall(redis.call, 'PEXPIRE', pw, ttl)
end
local function partRoom(plen, pw, key, maxParts, maxLen, ttl)
  local cur = tonumber(redis.call('HGET', plen, key) or '0')
  if cur == 0 then
    local parts = partCount(plen)
    if parts + 1 > tonumber(maxParts) then
      partMarkWait(pw, '` + roomNewPart + `', maxParts, ttl)
      return {-2, parts}
    end
  end
  if tonumber(maxLen) > 0 and cur + 1 > tonumber(maxLen) then
    partMarkWait(pw, key, maxLen, ttl)
    return {-3, cur, key}
  end
  return nil
end
local function partWake(out, from, pw, plen, chan, known)
  if pw == nil or chan == nil then return end
  local n, keys = {}, {}
  for i = from, #out do
    local key = known and known[out[i]] or partOf(out[i])
    if key then
      if n[key] == nil then n[key] = 0; keys[#keys+1] = key end
      n[key] = n[key] + 1
    end
  end
  if #keys == 0 then return end
  for i = 1, #keys, 1000 do
    local part = {unpack(keys, i, math.min(i + 999, #keys))}
    local m = redis.call('HMGET', pw, '` + roomNewPart + `', unpack(part))
    if i == 1 and m[1] then
      local room = tonumber(m[1]) - partCount(plen)
      if room > 0 then redis.call('PUBLISH', chan, 'n ' .. room) end
    end
    for j, key in ipairs(part) do
      if m[j+1] then redis.call('PUBLISH', chan, 'p ' .. n[key] .. ' ' .. key) end
    end
  end
end
`

// roomMadeLua defines, for the scripts that take one waiting job out of
// the queue other than by a take (cancelWaitingScript, deleteJobScript):
//
//	roomMade(v, waiters, pw, P, chan) wakes the producers waiting for the
//	  room that taking v out makes: "1" on chan when producers wait for
//	  MaxLen (the waiters key exists; every waiting job counts in MaxLen),
//	  and, with the partition keys P (v was in pjobs or the delayed set,
//	  which count in plen), partWake's messages for v's partition and for
//	  a new one, as the take publishes them. nil P: v was in a ready list,
//	  and in no partition.
//
// Its cost is one EXISTS, plus partWake's HMGET when v was partitioned;
// only the scripts that took a job out call it (a cancel or delete that
// found the job gone reads nothing more). It comes right after the job is
// taken out, before the writes that maxmemory refuses: EXISTS, HMGET and
// PUBLISH run at maxmemory.
const roomMadeLua = `
local function roomMade(v, waiters, pw, P, chan)
  if redis.call('EXISTS', waiters) == 1 then redis.call('PUBLISH', chan, '1') end
  if P then partWake({v}, 1, pw, P.len, chan) end
end
`

// partRefusedError is a refusal of partEnqueueScript for MaxPartitions or
// MaxPartitionLen (a refusal for MaxLen is a *FullError): on is what its
// producer may wait for (roomNewPart or the partition), fits whether the
// jobs could ever fit.
type partRefusedError struct {
	err  error
	on   string
	fits bool
}

func (e *partRefusedError) Error() string { return e.err.Error() }
func (e *partRefusedError) Unwrap() error { return e.err }

// roomFor reports what a producer refused with err for jobs prs waits for
// (roomLen, roomNewPart or a partition); ok is false when err is no
// refusal for room or one that can never fit (more jobs than the limit).
func (q *Queue) roomFor(prs []prepared, err error) (on string, ok bool) {
	var full *FullError
	var pr *partRefusedError
	switch {
	case errors.As(err, &pr):
		return pr.on, pr.fits
	case errors.As(err, &full):
		return roomLen, int64(len(prs)) <= q.cfg.MaxLen
	}
	return "", false
}

// parseRoom reads a message of the room channel: what it makes room for,
// and for how many producers (-1: all of them, also for a message it cannot
// read).
func parseRoom(msg string) (on string, n int) {
	kind, rest, _ := strings.Cut(msg, " ")
	switch kind {
	case "n":
		if n, err := strconv.Atoi(rest); err == nil && n > 0 {
			return roomNewPart, n
		}
	case "p":
		num, part, _ := strings.Cut(rest, " ")
		if n, err := strconv.Atoi(num); err == nil && n > 0 && validPartition(part) == nil {
			return part, n
		}
	default:
		if n, err := strconv.Atoi(msg); err == nil && n > 0 {
			return roomLen, n
		}
	}
	return "", -1
}
