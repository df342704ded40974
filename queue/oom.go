package queue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis at its memory limit.
//
// Under maxmemory-policy noeviction, a Redis at maxmemory refuses every
// "deny-oom" command: LPUSH, LMOVE, BLMOVE, ZADD, HSET, SADD, SET. That is
// right for enqueues (a full Redis says no early), but the fetch, the
// promotion of due jobs, the heartbeat and joining it are deny-oom too, so
// the one component that would free memory was locked out. An EVAL script
// without flags is refused at its first deny-oom write, unless it already
// deleted something (which is why acks, retries and dead-lettering, which
// LREM first, always went through).
//
// Redis 7 scripts may declare "#!lua flags=allow-oom" on their first line:
// Redis then runs every command in them at the limit. Each path that must
// work at the limit has such a twin of its script (the heartbeat's and the
// join's pipelines have one script that replays their refused commands),
// used only after Redis answered OOM: the normal path costs nothing more,
// and servers that do not parse the flags line (miniredis, Redis before 7)
// never see it. What the
// twins do is memory-neutral or nearly so: they move elements between
// lists (take), from the delayed set to the ready list (promote), change a
// score (heartbeat), or add a consumer's few bytes (join, sweep lock). On
// Redis 6 the twins fail to compile and the paths fail as before.
//
// The fetch hub's BZPOPMIN is not refused at the limit. At the limit the
// fetcher takes jobs with the allow-oom take script while there are any,
// and when the ready list is empty waits for a ring, BlockTimeout on a
// timer, or this worker's promotions, before it takes again: see
// waitAtLimit for why that is not polling.

// allowOOM is the flags line of a Redis 7 script that may run at maxmemory.
const allowOOM = "#!lua flags=allow-oom\n"

var (
	takeAtLimitScript    = redis.NewScript(allowOOM + takeLua)
	promoteAtLimitScript = redis.NewScript(allowOOM + promoteLua)

	// replayAtLimitScript runs again the single-key commands of a pipeline
	// that Redis refused at maxmemory (the heartbeat's ZADD, the join's
	// ZADD, HSET and SADD). Key names come in KEYS, one per command.
	// KEYS: each command's key. ARGV: for each command its name, the number
	// of its other arguments, then those.
	replayAtLimitScript = redis.NewScript(allowOOM + `
local j = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[j+1])
  redis.call(ARGV[j], KEYS[i], unpack(ARGV, j+2, j+1+n))
  j = j + 2 + n
end
return #KEYS
`)

	// lockAtLimitScript is SET NX PX. KEYS: lock. ARGV: value, ms.
	// Returns 1 when taken, 0 when held by someone else.
	lockAtLimitScript = redis.NewScript(allowOOM + `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
`)

	// ringAtLimitScript is ringScript at maxmemory, and bellAtLimitScript
	// rings a doorbell unconditionally: a ring handed on must not be lost
	// at the limit, where no producer can ring (a bell is a few bytes).
	// KEYS: ready, bell (ringAtLimitScript); bell (bellAtLimitScript).
	ringAtLimitScript = redis.NewScript(allowOOM + ringLua)
	bellAtLimitScript = redis.NewScript(allowOOM + `
return redis.call('ZADD', KEYS[1], 0, '1')
`)

	// handOverAtLimitScript is handOverScript at maxmemory.
	handOverAtLimitScript = redis.NewScript(allowOOM + handOverLua)
)

// handOverLua is RPUSH of one element to a ready list, and the ring of its
// doorbell, only while the delayed set holds jobs: a stopping scheduler's
// handover (scheduler.go), which has nothing to hand over once the jobs
// it knew of went (cancelled or promoted by another process), and would
// leave a marker and a ring for good when it is the queue's last worker.
// KEYS: list, bell, delayed. ARGV: element. Returns 1 if pushed.
const handOverLua = `
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, '1')
return 1
`

var handOverScript = redis.NewScript(handOverLua)

// ringIfReady rings bell if ready holds jobs, with the allow-oom twin when
// Redis refuses the ring at maxmemory.
func ringIfReady(ctx context.Context, c redis.Scripter, k keys) error {
	ks := append([]string{k.ready, k.bell, k.fair()}, k.levels...)
	err := ringScript.Run(ctx, c, ks).Err()
	if isOOM(err) {
		err = ringAtLimitScript.Run(ctx, c, ks).Err()
	}
	return err
}

// ringBell rings bell, with the allow-oom twin when Redis refuses the
// ZADD at maxmemory.
func ringBell(ctx context.Context, c redis.UniversalClient, bell string) error {
	err := c.ZAdd(ctx, bell, redis.Z{Score: 0, Member: bellMember}).Err()
	if isOOM(err) {
		err = bellAtLimitScript.Run(ctx, c, []string{bell}).Err()
	}
	return err
}

// isOOM reports whether err is Redis refusing a command at maxmemory.
func isOOM(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "OOM ")
}

// oomRefused reports whether a pipeline failed because Redis is at
// maxmemory: err, or the error of one of its commands, is an OOM error. (A
// MULTI at the limit answers EXECABORT; its commands carry the OOM.)
func oomRefused(cmds []redis.Cmder, err error) bool {
	if err == nil {
		return false
	}
	if isOOM(err) {
		return true
	}
	for _, c := range cmds {
		if isOOM(c.Err()) {
			return true
		}
	}
	return false
}

// memState is what a worker knows of Redis's memory: its eviction policy
// (see policy.go) and whether Redis refuses deny-oom commands.
type memState struct {
	atLimit  atomic.Bool   // the last fetch found Redis at maxmemory
	fetched  atomic.Uint64 // jobs taken with the allow-oom script
	promoted atomic.Uint64 // delayed jobs promoted with the allow-oom script
	wake     chan struct{} // this worker promoted jobs at the limit: the waiting fetcher looks again
	oomAt    atomic.Int64  // when Redis last answered OOM, unix nanos (Config.Now)
	entered  atomic.Uint64 // times the worker found Redis at the limit
	loggedAt atomic.Int64  // when that was last logged, unix nanos

	mu     sync.Mutex
	policy string // "" until read
	stale  bool   // the last read failed on the connection (not by refusal), or the hub's connection failed since: read again
	fails  uint64 // connectionFailed calls: a read clears stale only if none came while it ran
}

func newMemState() memState { return memState{wake: make(chan struct{}, 1)} }

// MemoryStats is what a worker knows of Redis's memory limit.
type MemoryStats struct {
	// Policy is Redis's maxmemory-policy, read at Start and again after
	// each reconnect of the fetcher or of its fetch hub; "unknown" when Redis refused both
	// CONFIG GET and INFO (a managed Redis may).
	Policy string `json:"maxmemory_policy"`
	// Evicting is set for the allkeys-* and volatile-* policies: Redis may
	// delete the queue's keys (see WorkerConfig.RefuseEvictingPolicy).
	Evicting bool `json:"evicting"`
	// AtLimit is set while Redis refuses new writes (maxmemory reached
	// under noeviction), as of the fetcher's last look: enqueues fail, and
	// the worker drains the queue with allow-oom scripts.
	AtLimit bool `json:"at_limit"`
	// FetchedAtLimit and PromotedAtLimit count jobs taken, and delayed
	// jobs promoted, with allow-oom scripts since Start.
	FetchedAtLimit  uint64 `json:"fetched_at_limit"`
	PromotedAtLimit uint64 `json:"promoted_at_limit"`
}

// Memory reports what the worker knows of Redis's memory limit, without a
// Redis call: a health check can call it (degraded while AtLimit or
// Evicting).
func (w *Worker) Memory() MemoryStats {
	w.mem.mu.Lock()
	policy := w.mem.policy
	w.mem.mu.Unlock()
	if policy == "" {
		policy = policyUnknown
	}
	return MemoryStats{
		Policy: policy, Evicting: evicting(policy), AtLimit: w.mem.atLimit.Load(),
		FetchedAtLimit: w.mem.fetched.Load(), PromotedAtLimit: w.mem.promoted.Load(),
	}
}

// setAtLimit records whether Redis refuses deny-oom commands. Entering the
// limit is logged at Error level, at most once per atLimitLogEvery: a Redis
// hovering at its limit (producers filling what the workers free) flips
// with every fetch, and must not flood the log. Leaving it is logged at
// Debug level.
func (w *Worker) setAtLimit(at bool) {
	if at {
		w.mem.oomAt.Store(w.q.cfg.Now().UnixNano())
	}
	if w.mem.atLimit.Swap(at) == at {
		return
	}
	if !at {
		w.log.Debug("queue: Redis accepts writes again (below maxmemory)")
		return
	}
	w.mem.entered.Add(1)
	now := time.Now().UnixNano()
	last := w.mem.loggedAt.Load()
	if last != 0 && time.Duration(now-last) < atLimitLogEvery || !w.mem.loggedAt.CompareAndSwap(last, now) {
		return
	}
	w.log.Error("queue: Redis is at maxmemory and refuses new writes: enqueues fail; this worker drains the queue with allow-oom scripts (Redis 7)",
		"times_at_limit", w.mem.entered.Load())
}

// atLimitLogEvery is how often reaching the memory limit is logged at most.
const atLimitLogEvery = time.Minute

// atLimitProbe is how long after its last OOM answer the fetcher, at the
// limit, tries the plain take script again (see Worker.take).
const atLimitProbe = time.Second

// take runs the take script for up to n jobs, its allow-oom twin when Redis
// is at the limit (or answers that it is).
//
// At the limit it still tries the plain script once per atLimitProbe: a
// fetcher draining a backlog takes full batches and never blocks, so
// without the probe it would never see Redis leave the limit (AtLimit, a
// health check's "degraded", would stay set until the backlog is gone).
// The plain script's first command is LMOVE, refused at the limit even on
// an empty list, so its success means Redis accepts writes again.
func (w *Worker) take(ctx context.Context, c redis.Scripter, ks []string, n int) ([]string, error) {
	if !w.mem.atLimit.Load() || w.q.cfg.Now().Sub(time.Unix(0, w.mem.oomAt.Load())) >= atLimitProbe {
		elems, err := takeScript.Run(ctx, c, ks, n, w.q.k.roomChannel()).StringSlice()
		if !isOOM(err) {
			if err == nil || errors.Is(err, redis.Nil) {
				w.setAtLimit(false)
			}
			return elems, err
		}
		w.setAtLimit(true)
	}
	elems, err := takeAtLimitScript.Run(ctx, c, ks, n, w.q.k.roomChannel()).StringSlice()
	w.mem.fetched.Add(uint64(len(elems)))
	return elems, err
}

// promote runs the promote script, its allow-oom twin at the limit. Jobs it
// promoted at the limit wake this worker's fetcher if it waits there.
func (w *Worker) promote(ctx context.Context, c redis.Scripter, ks []string, args ...any) ([]int64, error) {
	if !w.mem.atLimit.Load() {
		res, err := promoteScript.Run(ctx, c, ks, args...).Int64Slice()
		if !isOOM(err) {
			return res, err
		}
		w.setAtLimit(true)
	}
	res, err := promoteAtLimitScript.Run(ctx, c, ks, args...).Int64Slice()
	if err == nil && len(res) == 2 && res[0] > 0 {
		w.mem.promoted.Add(uint64(res[0]))
		select {
		case w.mem.wake <- struct{}{}:
		default:
		}
	}
	return res, err
}

// waitAtLimit is the fetcher's wait when Redis is at the limit and the
// ready list is empty: BlockTimeout, or until this worker promotes jobs or
// the hub reports a ring, or ctx ends. It reports false when ctx ended.
//
// Not a poll: at the limit no producer can add a job (LPUSH is refused), so
// the ready list grows only by promotions (this worker's wake it at once;
// another worker's are seen within BlockTimeout, the bound invariant 2 gives
// for delayed jobs anyway; the allow-oom promotion rings the doorbell too),
// sweeps and requeues, which ring. The timer only lets the fetcher see
// Redis leave the limit (WorkerStats.Memory.AtLimit): an idle worker at
// the limit costs one take script per BlockTimeout (TestIdleAtMemoryLimit).
// A fetcher whose last take saw no refusal (Redis just under the limit)
// waits for a ring instead, and its AtLimit stays as last seen until its
// next take.
func (w *Worker) waitAtLimit(ctx context.Context) bool {
	w.st.fetchState.Store(fetcherWaitingAtLimit)
	t := time.NewTimer(w.cfg.BlockTimeout)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.mem.wake:
	case <-w.wakeCh:
	case <-ctx.Done():
		return false
	}
	return true
}

// replayable are the commands replayAtLimit may run again: single-key
// writes whose first argument is their key.
var replayable = map[string]bool{"zadd": true, "hset": true, "sadd": true}

// replayAtLimit runs the commands of a pipeline that Redis refused at
// maxmemory (OOM, or discarded with their MULTI) again, in one allow-oom
// script, and returns the first other error of the pipeline. Every key of
// the pipeline must be in one slot (true of the heartbeat's and the
// join's pipelines). Only replayable commands are run again; a refused
// other one returns its error.
func replayAtLimit(ctx context.Context, c redis.Scripter, cmds []redis.Cmder) error {
	var keys []string
	var args []any
	for _, cmd := range cmds {
		err := cmd.Err()
		if !isOOM(err) && !isExecAbort(err) {
			continue
		}
		a := cmd.Args()
		if !replayable[strings.ToLower(cmd.Name())] || len(a) < 2 {
			return err
		}
		key, ok := a[1].(string)
		if !ok {
			return err
		}
		keys = append(keys, key)
		args = append(append(args, cmd.Name(), len(a)-2), a[2:]...)
	}
	if len(keys) > 0 {
		if err := replayAtLimitScript.Run(ctx, c, keys, args...).Err(); err != nil {
			return err
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && !isOOM(err) && !isExecAbort(err) && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// deadReason is the reason a dead record keeps. Dead-lettering goes
// through at the limit (its script deletes first), and a record keeps the
// handler's error, up to 8 KiB: jobs failing with long errors would grow a
// full Redis far over maxmemory (measured: 15.8 MiB over a 3 MiB limit for
// 1,676 jobs of 1 KB). At the limit the reason is cut to reasonAtLimit
// bytes, so a dead letter costs about what its element frees.
func (w *Worker) deadReason(reason string) string {
	if !w.mem.atLimit.Load() || len(reason) <= reasonAtLimit {
		return reason
	}
	return reason[:reasonAtLimit] + "... (cut short: Redis at maxmemory)"
}

// reasonAtLimit is the most of a dead letter's reason kept at the limit.
const reasonAtLimit = 256

// isExecAbort reports whether err is a MULTI discarded by Redis because one
// of its commands was refused.
func isExecAbort(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "EXECABORT")
}
