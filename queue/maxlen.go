package queue

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounded queues (Config.MaxLen). Every enqueue of a bounded queue is one
// script, boundedScript, which counts the queue (LLEN ready + ZCARD delayed)
// and writes only if all its jobs fit: Redis runs one script at a time, so
// concurrent producers, in any process, can never take the queue over the
// limit. A plain job costs one EVALSHA instead of one LPUSH, still one round
// trip (docs/queue.md has the measurement). Payloads kept apart are written
// by an HSET in the same MULTI just before, as for an unbounded queue, and
// the script deletes them again when it refuses the jobs.
//
// The drain rate behind FullError.RetryAfter comes from the consumers: the
// acker of a bounded queue's worker adds one command to each pipeline of
// outcomes it already sends (drainScript, no extra round trip), which counts
// the jobs that left the queue for good (succeeded or dead) in the queue's
// drain hash and, once a second, turns the count into a rate sample. A
// refusing enqueue reads the sample in the same script that refused it.

// drainWindow is the shortest interval a drain-rate sample covers, and
// drainStale the age after which a sample no longer says anything about
// the queue (its consumers stopped acking): RetryAfter is then 0.
const (
	drainWindow = time.Second
	drainStale  = 10 * time.Second
)

// drainKey is the hash of a queue's drain counters: n (jobs that left the
// queue for good, total), t and pn (the time and n of the last sample), dn
// and dt (the jobs and milliseconds the last sample covered; a clock that
// stepped back before t starts a new window), refused
// (enqueues refused as full, total).
func (k keys) drainKey() string { return k.tag + ":drain" }

// waitersKey holds, while producers wait for room, the limit they wait
// under (with a TTL their refusals renew): consumers publish on roomChannel
// when the queue is below it.
func (k keys) waitersKey() string { return k.tag + ":waiters" }

// roomChannel is where consumers say there is room, with how many jobs fit.
func (k keys) roomChannel() string { return k.tag + ":room" }

// boundedScript enqueues jobs into a bounded queue: all of them, or none
// when they do not fit (duplicate IDs take no room and are answered 0).
// KEYS: ready, delayed, wake, payloads, drain, waiters, bell, fair
// (parts.go), the jobs' level's ready list (the jobs of one call share a
// level), the level ready lists (keys.readyLevels), then the unique keys in
// use, each followed by its job's 4 end keys (appendJob).
// ARGV: limit, marker, wake TTL ms, unique TTL ms, waiters TTL ms (0: the
// caller does not wait), then for each job four values: due ms (0 = now),
// envelope, index of its unique key in KEYS (0 = none), payload ref (” =
// inline).
// Returns one 1 (added) or 0 (duplicate ID) per job, or, refused,
// {-1, length, dn, dt, t} (the drain sample, see drainKey).
var boundedScript = redis.NewScript(wakeLua + boundedLua + uniqueOwnLua + `
local function dropRefs(only)
  for i = 6, #ARGV, 4 do
    if ARGV[i+3] ~= '' and (only == nil or only[i]) then redis.pcall('HDEL', KEYS[4], ARGV[i+3]) end
  end
end
local ok, len = pcall(count, KEYS[1], KEYS[2], ARGV[2], KEYS[8], 10)
if not ok then
  dropRefs(nil)
  return redis.error_reply('WRONGTYPE a key of queue ' .. KEYS[1] .. ' holds the wrong type')
end
local jobs, dup = 0, {}
for i = 6, #ARGV, 4 do
  local u = tonumber(ARGV[i+2])
  if u > 0 and redis.call('EXISTS', KEYS[u]) == 1 then dup[i] = true else jobs = jobs + 1 end
end
if jobs > 0 and len + jobs > tonumber(ARGV[1]) then
  dropRefs(nil)
  return refuse(len, KEYS[5], KEYS[6], ARGV[1], ARGV[5])
end
dropRefs(dup)
local out, now, earliest, rung = {}, {}, nil, false
for i = 6, #ARGV, 4 do
  if dup[i] then
    out[#out+1] = 0
  else
    local due, u = tonumber(ARGV[i]), tonumber(ARGV[i+2])
    if u > 0 then
      redis.call('SET', KEYS[u], uniqueStamp(ARGV[i+1]) or '1', 'PX', ARGV[4])
      redis.call('DEL', KEYS[u+1], KEYS[u+2], KEYS[u+3], KEYS[u+4])
    end
    if due == 0 then
      now[#now+1] = ARGV[i+1]
      rung = true
      if #now == 1000 then redis.call('LPUSH', KEYS[9], unpack(now)); now = {} end
    else
      redis.call('ZADD', KEYS[2], due, ARGV[i+1])
      if earliest == nil or due < earliest then earliest = due end
    end
    out[#out+1] = 1
  end
end
if #now > 0 then redis.call('LPUSH', KEYS[9], unpack(now)) end
if rung then redis.call('ZADD', KEYS[7], 0, '1') end
if earliest ~= nil then wake(KEYS[2], KEYS[1], KEYS[3], earliest, ARGV[2], ARGV[3], KEYS[7]) end
return out
`)

// boundedLua counts a bounded queue, its wake marker aside: markers go to
// the ready list's tail, one at a time, so LINDEX -1 finds it (O(1); an
// LPOS over the last 16 elements cost 1.8us more per enqueue, 40 %). A
// marker behind a recovered job counts as a job: the queue may then take
// one job fewer, never one more. count(ready, delayed, marker, fair, base)
// adds the jobs of the fair set (parts.go) and of the level ready lists in
// KEYS[base..] (levels.go: one EXISTS
// when none holds any). It raises an error on a key of the wrong type,
// before anything was written. refuse(...) is the refusal's reply (see
// boundedScript), which marks the waiting producers when waitTTL is not
// "0"; its writes are pcalls, so that a Redis at maxmemory still answers
// with a *FullError rather than OOM.
var boundedLua = `
local function count(ready, delayed, marker, fair, base)
  local n = redis.call('LLEN', ready) + redis.call('ZCARD', delayed)
  n = n + redis.call('ZCARD', fair)
  if n > 0 and redis.call('LINDEX', ready, -1) == marker then n = n - 1 end
  local levels = {unpack(KEYS, base, base + ` + strconv.Itoa(MaxLevel-1) + `)}
  if redis.call('EXISTS', unpack(levels)) > 0 then
    for _, l in ipairs(levels) do n = n + redis.call('LLEN', l) end
  end
  return n
end
local function refuse(len, drain, waiters, limit, waitTTL)
  pcall(redis.call, 'HINCRBY', drain, 'refused', 1)
  if waitTTL ~= '0' then pcall(redis.call, 'SET', waiters, limit, 'PX', waitTTL) end
  local d = redis.call('HMGET', drain, 'dn', 'dt', 't')
  return {-1, len, tonumber(d[1]) or 0, tonumber(d[2]) or 0, tonumber(d[3]) or 0}
end
`

// boundedPushScript is boundedScript for jobs that are all plain (ready
// now, no ID, payload inline), the common case: their elements go to one
// LPUSH per 1,000 without a look at each.
// KEYS: ready, delayed, drain, waiters, bell, fair, the jobs' level's ready
// list, the level ready lists (keys.readyLevels). ARGV: limit, marker,
// waiters TTL ms (0: the caller does not wait), then the envelopes.
// Returns {the number of jobs added}, or the refusal of boundedScript.
var boundedPushScript = redis.NewScript(boundedLua + `
local len = count(KEYS[1], KEYS[2], ARGV[2], KEYS[6], 8)
local jobs = #ARGV - 3
if len + jobs > tonumber(ARGV[1]) then return refuse(len, KEYS[3], KEYS[4], ARGV[1], ARGV[3]) end
for i = 4, #ARGV, 1000 do
  redis.call('LPUSH', KEYS[7], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('ZADD', KEYS[5], 0, '1')
return {jobs}
`)

// boundedUndoScript is the bound of a plain batch too large to pass
// through Lua (over maxLuaBytes of elements): it runs in a MULTI right after
// the batch's LPUSH, counts, and when the batch did not fit takes it back
// (the n elements at the head, which nothing can have touched inside the
// MULTI) before refusing. The head and tail of the batch are checked first,
// so that it never trims jobs that are not the batch's (an LPUSH that failed).
// KEYS: ready, delayed, drain, waiters, bell, fair, the batch's level's
// ready list (where the LPUSH went), the level ready lists
// (keys.readyLevels). ARGV: limit, marker, waiters TTL ms, n, the batch's
// last element (now at the head), its first one.
// Returns {n}, or the refusal of boundedScript.
var boundedUndoScript = redis.NewScript(boundedLua + `
local n = tonumber(ARGV[4])
if redis.call('LINDEX', KEYS[7], 0) ~= ARGV[5] or redis.call('LINDEX', KEYS[7], n - 1) ~= ARGV[6] then
  return redis.error_reply('the batch is not at the head of ' .. KEYS[7] .. ': its LPUSH failed')
end
local len = count(KEYS[1], KEYS[2], ARGV[2], KEYS[6], 8) - n
if len + n > tonumber(ARGV[1]) then
  redis.call('LTRIM', KEYS[7], n, -1)
  return refuse(len, KEYS[3], KEYS[4], ARGV[1], ARGV[3])
end
redis.call('ZADD', KEYS[5], 0, '1')
return {n}
`)

// drainScript is the consumers' part: it publishes on the room channel when
// producers wait and the queue is below their limit, then counts the jobs
// that left the queue and takes a rate sample once per window. The publish
// comes first: PUBLISH is allowed when Redis is at maxmemory, HINCRBY not.
// KEYS: ready, delayed, drain, waiters, fair, the level ready lists
// (keys.readyLevels). ARGV: jobs gone, now ms, room channel, window ms,
// stale ms.
var drainScript = redis.NewScript(`
local limit = tonumber(redis.call('GET', KEYS[4]) or '')
if limit then
  local room = limit - redis.call('LLEN', KEYS[1]) - redis.call('ZCARD', KEYS[2])
  room = room - redis.call('ZCARD', KEYS[5])
  for i = 6, #KEYS do room = room - redis.call('LLEN', KEYS[i]) end
  if room > 0 then redis.call('PUBLISH', ARGV[3], room) end
end
if ARGV[1] == '0' then return 0 end
local n = redis.call('HINCRBY', KEYS[3], 'n', ARGV[1])
local now = tonumber(ARGV[2])
local t = tonumber(redis.call('HGET', KEYS[3], 't') or '') or 0
if now - t > tonumber(ARGV[5]) or now < t then
  redis.call('HSET', KEYS[3], 't', now, 'pn', n - tonumber(ARGV[1]))
  redis.call('HDEL', KEYS[3], 'dn', 'dt')
elseif now - t >= tonumber(ARGV[4]) then
  local pn = tonumber(redis.call('HGET', KEYS[3], 'pn') or '') or n
  redis.call('HSET', KEYS[3], 't', now, 'pn', n, 'dn', n - pn, 'dt', now - t)
end
return n
`)

// bounded reports whether enqueues go through boundedScript.
func (q *Queue) bounded() bool { return q.cfg.MaxLen > 0 }

// enqueueBounded writes prs (one Enqueue, or one EnqueueBatch) to a bounded
// queue. It returns, per job, whether it was added (false: duplicate ID),
// or a *FullError when they did not all fit. With wait, a refusal marks the
// producers as waiting (see wait.go).
func (q *Queue) enqueueBounded(ctx context.Context, prs []prepared, wait bool) ([]bool, error) {
	c := q.p.Client()
	if plain(prs) && elemBytes(prs) > maxLuaBytes {
		return q.boundedReply(q.pushThenCheck(ctx, c, prs, wait), prs)
	}
	if plain(prs) {
		ks, args := q.pushArgs(prs, wait)
		return q.boundedReply(boundedPushScript.Run(ctx, c, ks, args...), prs)
	}
	ks, args, apart := q.boundedArgs(prs, wait)
	var cmd *redis.Cmd
	if apart {
		cmd = q.runApart(ctx, c, boundedScript, prs, ks, args...)
	} else {
		cmd = boundedScript.Run(ctx, c, ks, args...)
	}
	return q.boundedReply(cmd, prs)
}

// plain reports whether prs are all ready now, without an ID, with their
// payload inline: boundedPushScript's jobs.
func plain(prs []prepared) bool {
	for _, pr := range prs {
		if !pr.due.IsZero() || pr.unique || pr.ref != "" {
			return false
		}
	}
	return true
}

// elemBytes is the size of prs' elements.
func elemBytes(prs []prepared) int {
	n := 0
	for _, pr := range prs {
		n += len(pr.elem)
	}
	return n
}

// pushThenCheck writes a plain batch too large for Lua: a MULTI of its
// LPUSH and boundedUndoScript, which takes it back when it does not fit.
// Every element stays out of Lua. The script is sent whole (EVAL, a few
// hundred bytes next to over 1 MiB of elements), never by its SHA: a
// NOSCRIPT inside the MULTI would leave the batch written unchecked, and
// taking it back afterwards cannot be done safely once another client has
// pushed to or fetched from the list in between (the batch was then written
// twice, or refused while it stayed).
func (q *Queue) pushThenCheck(ctx context.Context, c redis.UniversalClient, prs []prepared, wait bool) *redis.Cmd {
	elems := make([]any, len(prs))
	for i, pr := range prs {
		elems[i] = pr.elem
	}
	ks := q.k.withLevels(q.k.ready, q.k.delayed, q.k.drainKey(), q.k.waitersKey(), q.k.bell, q.k.fair(), q.k.readyAt(prs[0].level))
	args := []any{q.cfg.MaxLen, wakeMarker, waitTTL(wait), len(prs), prs[len(prs)-1].elem, prs[0].elem}
	pipe := c.TxPipeline()
	pipe.LPush(ctx, q.k.readyAt(prs[0].level), elems...)
	cmd := boundedUndoScript.Eval(ctx, pipe, ks, args...)
	_, _ = pipe.Exec(ctx)
	return cmd
}

// pushArgs builds the KEYS and ARGV of boundedPushScript.
func (q *Queue) pushArgs(prs []prepared, wait bool) ([]string, []any) {
	args := make([]any, 0, 3+len(prs))
	args = append(args, q.cfg.MaxLen, wakeMarker, waitTTL(wait))
	for _, pr := range prs {
		args = append(args, pr.elem)
	}
	return q.k.withLevels(q.k.ready, q.k.delayed, q.k.drainKey(), q.k.waitersKey(), q.k.bell, q.k.fair(), q.k.readyAt(prs[0].level)), args
}

// waitTTL is the TTL a refusal gives the waiters key (0: none).
func waitTTL(wait bool) int64 {
	if wait {
		return (3 * roomRecheck).Milliseconds()
	}
	return 0
}

// boundedArgs builds the KEYS and ARGV of boundedScript, and reports
// whether a payload is kept apart (to be written by an HSET first).
func (q *Queue) boundedArgs(prs []prepared, wait bool) (ks []string, args []any, apart bool) {
	ks = q.k.withLevels(q.k.ready, q.k.delayed, q.k.wake, q.k.payloads, q.k.drainKey(), q.k.waitersKey(), q.k.bell, q.k.fair(), q.k.readyAt(prs[0].level))
	args = make([]any, 0, 5+4*len(prs))
	args = append(args, q.cfg.MaxLen, wakeMarker, wakeTTL.Milliseconds(), q.uniqueTTL(prs[0].due), waitTTL(wait))
	for _, pr := range prs {
		ks, args = q.appendJob(ks, args, pr)
		apart = apart || pr.ref != ""
	}
	return ks, args, apart
}

// boundedReply reads boundedScript's reply for prs, and tells this
// process's schedulers about the delayed jobs it added.
func (q *Queue) boundedReply(cmd *redis.Cmd, prs []prepared) ([]bool, error) {
	res, err := cmd.Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(res) == 5 && res[0] == -1 {
		q.refused.Add(1)
		return nil, q.fullError(res[1], int64(len(prs)), res[2], res[3], res[4])
	}
	if len(res) == 1 && plain(prs) { // boundedPushScript: how many
		if res[0] != int64(len(prs)) {
			return nil, fmt.Errorf("enqueue script answered %v", res)
		}
		added := make([]bool, len(prs))
		for i := range added {
			added[i] = true
		}
		return added, nil
	}
	if len(res) != len(prs) {
		return nil, fmt.Errorf("enqueue script answered %v", res)
	}
	added := make([]bool, len(res))
	var earliest time.Time
	for i, r := range res {
		added[i] = r == 1
		if due := prs[i].due; added[i] && !due.IsZero() && (earliest.IsZero() || due.Before(earliest)) {
			earliest = due
		}
	}
	if !earliest.IsZero() {
		q.notifyDelayed(earliest)
	}
	return added, nil
}

// fullError builds the error for jobs refused at length n, from the drain
// sample (dn jobs left in dt ms, sampled at t ms); no estimate for more
// jobs than MaxLen, which never fit.
func (q *Queue) fullError(n, jobs, dn, dt, t int64) *FullError {
	e := &FullError{Queue: q.name, Len: n, Limit: q.cfg.MaxLen}
	age := q.cfg.Now().UnixMilli() - t // negative: clocks apart, or stepped back
	if jobs > q.cfg.MaxLen || dn <= 0 || dt <= 0 || age > drainStale.Milliseconds() || age < -drainStale.Milliseconds() {
		return e
	}
	need := float64(n + jobs - q.cfg.MaxLen) // jobs that must leave first
	ms := math.Ceil(need * float64(dt) / float64(dn))
	e.RetryAfter = time.Duration(min(ms, float64(maxRetryAfter/time.Millisecond))) * time.Millisecond
	return e
}

// maxRetryAfter caps the estimate: beyond it the number says nothing more.
const maxRetryAfter = time.Hour

// drainHook adds drainScript to a pipeline of outcomes of a bounded queue's
// worker, counting gone jobs that left the queue; nil when the queue is
// unbounded or no job left (a pipeline of retries frees no room).
func (q *Queue) drainHook(ctx context.Context, pipe redis.Pipeliner, gone int) *redis.Cmd {
	if !q.bounded() || gone == 0 {
		return nil
	}
	ks, args := q.drainArgs(gone)
	return drainScript.EvalSha(ctx, pipe, ks, args...)
}

func (q *Queue) drainArgs(gone int) ([]string, []any) {
	return q.k.withLevels(q.k.ready, q.k.delayed, q.k.drainKey(), q.k.waitersKey(), q.k.fair()),
		[]any{gone, q.cfg.Now().UnixMilli(), q.k.roomChannel(), drainWindow.Milliseconds(), drainStale.Milliseconds()}
}

// drainDone looks at drainHook's reply. A NOSCRIPT (a Redis that has not
// seen the script yet, or restarted) runs it again at once with its source,
// one more round trip: its wake-up could be the last one, when these were
// the last jobs of the queue. Other failures cost a log line: the count is
// an estimate, and a lost wake-up costs waiters at most roomRecheck.
func (q *Queue) drainDone(ctx context.Context, c redis.Scripter, cmd *redis.Cmd, gone int) {
	if cmd == nil || cmd.Err() == nil {
		return
	}
	err := cmd.Err()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		ks, args := q.drainArgs(gone)
		if err = drainScript.Run(ctx, c, ks, args...).Err(); err == nil {
			return
		}
	}
	q.cfg.Logger.Debug("queue: counting drained jobs failed", "queue", q.name, "err", err)
}

// refusedCmd adds to Stats' pipeline the read of the refusals counted in
// Redis; nil for an unbounded queue.
func (q *Queue) refusedCmd(ctx context.Context, pipe redis.Pipeliner) *redis.StringCmd {
	if !q.bounded() {
		return nil
	}
	return pipe.HGet(ctx, q.k.drainKey(), "refused")
}

// boundedStats fills the bound's part of Stats, once the counts are in.
func (q *Queue) boundedStats(s *Stats, refused *redis.StringCmd) {
	s.MaxLen = q.cfg.MaxLen
	s.RefusedLocal = q.refused.Load()
	if refused == nil {
		return
	}
	s.Refused, _ = refused.Int64() // redis.Nil: none yet
	s.Full = s.Ready+s.Delayed >= q.cfg.MaxLen
}

// goneJobs counts the outcomes that take a job out of the queue for good.
func goneJobs(ops []ackOp) int {
	n := 0
	for _, op := range ops {
		if (op.kind == ackDone || op.kind == ackDead) && !op.written {
			n++
		}
	}
	return n
}
