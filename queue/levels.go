package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Priority levels within one queue.
//
// A job enqueued with Priority(l), l > 0, waits in the ready list of its
// level, {ns:q}:ready:<l>, beside the level-0 list {ns:q}:ready, in the
// queue's slot. The take script serves the highest non-empty level first
// (strict: a lower level waits while a higher one holds jobs), so a
// high-priority job enqueued behind a backlog starts at the next free
// handler slot. The level rides in the envelope (flag "p<l>"), so a retry,
// a promotion, a put-back and a requeue from the dead letters return the
// job to its own level. Level 0 adds no key and no byte: a queue that never
// uses levels costs what it cost before, and data written by earlier
// versions is level 0. The doorbell is the queue's one bell: every push, at
// any level, rings it.

// MaxLevel is the highest priority level (see Priority).
const MaxLevel = 3

// Priority enqueues the job at level (0..MaxLevel; higher runs first;
// the default is 0). Levels are strict within the queue's unpartitioned
// jobs (a partitioned job's level is strict within its partition only,
// below): a worker starts no job of a level while a higher level holds
// ready jobs, so a job at a higher level enqueued behind a backlog starts
// at the next free handler slot. The level applies when the job becomes ready: a delayed job waits
// for its due time first. A retry, a recovery and a requeue from the dead
// letters keep the level. A level out of range fails the enqueue with an
// error wrapping ErrInvalidArgument, and nothing is written.
//
// With the Partition option the level orders the job within its partition
// only: it runs before the partition's jobs of lower levels (after those
// of its level enqueued before it), while the partitions keep taking turns
// as without levels, and every unpartitioned job of a level above 0 runs
// before it (see Partition for why: strict levels across partitions would
// let one tenant starve the others).
func Priority(level int) EnqueueOption {
	return func(o *enqueueOpts) error {
		if level < 0 || level > MaxLevel {
			return fmt.Errorf("queue: Priority(%d): %w: the levels are 0 to %d (MaxLevel)", level, ErrInvalidArgument, MaxLevel)
		}
		o.level = level
		return nil
	}
}

// JobPriority is the Priority option of every occurrence of a schedule.
// With JobPartition it orders the occurrences within their partition only
// (see Priority).
func JobPriority(level int) ScheduleOption {
	return func(s *scheduleDef) error {
		var o enqueueOpts
		if err := Priority(level)(&o); err != nil {
			return err
		}
		s.Priority = level
		return nil
	}
}

// readyAt is the ready list of level (0: the plain ready list).
func (k keys) readyAt(level int) string {
	if level <= 0 {
		return k.ready
	}
	return k.levels[level-1]
}

// readyLevels are the ready lists of levels 1..MaxLevel, in that order:
// the KEYS that the scripts routing or counting by level receive. The
// slice is the keys' own: read it, do not change it.
func (k keys) readyLevels() []string { return k.levels }

// levelLists are the level ready lists beside the ready list ready.
func levelLists(ready string) []string {
	ls := make([]string, MaxLevel)
	for i := range ls {
		ls[i] = ready + ":" + strconv.Itoa(i+1)
	}
	return ls
}

// withLevels returns ks followed by the level ready lists.
func (k keys) withLevels(ks ...string) []string {
	return append(ks, k.levels...)
}

// The KEYS of the scripts that route jobs to their partition or level:
// their own keys, the partition keys (keys.partKeys, seven; parts.go),
// then the level ready lists. Every caller passes all of them, so that each
// script has one base number for the level lists (takeScript and
// promoteScript: KEYS[12..14]).

func (k keys) takeKeys(proc string) []string {
	return append(k.withLevels(append([]string{k.ready, proc, k.bell, k.paused}, k.partKeys()...)...), k.partWaiters())
}

func (k keys) promoteKeys() []string {
	return k.withLevels(append([]string{k.delayed, k.ready, k.wake, k.bell}, k.partKeys()...)...)
}

func (k keys) recoverKeys(proc string) []string {
	return k.withLevels(append([]string{proc, k.ready, k.bell}, k.partKeys()...)...)
}

func (k keys) sweepKeys(proc string) []string {
	return k.withLevels(append([]string{proc, k.ready, k.incarnations, k.consumers, k.bell}, k.partKeys()...)...)
}

// levelLua defines, for scripts that receive the level ready lists in
// KEYS[base..base+MaxLevel-1] (readyLevels):
//
//	levelOf(v)          the level of element v: its flag "p<l>", else 0
//	readyFor(v, r, base) the ready list of v's level (r: level 0's)
//
// levelOf reads the flags field, the eighth '|'-separated field (job IDs
// hold no '|'), with an anchored pattern: a few dozen bytes per element,
// whatever the payload.
var levelLua = `
local maxLevel = ` + strconv.Itoa(MaxLevel) + `
local function levelOf(v)
  local f = string.match(v, '^bq1|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|')
  if not f then return 0 end
  local l = string.match(f, 'p(%d)')
  if not l then return 0 end
  l = tonumber(l)
  if l > maxLevel then return 0 end
  return l
end
local function readyFor(v, r, base)
  local l = levelOf(v)
  if l == 0 then return r end
  return KEYS[base + l - 1]
end
`

// levelsReverse is the Lua list of the level ready lists, highest first,
// for KEYS[base..].
func levelsReverse(base int) string {
	parts := make([]string, MaxLevel)
	for i := range parts {
		parts[i] = "KEYS[" + strconv.Itoa(base+MaxLevel-1-i) + "]"
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// levelsTimes is the Lua argument list naming each level ready list
// (KEYS[base..]) times times: an EXISTS of it counts times per list that
// holds jobs (takeLua).
func levelsTimes(base, times int) string {
	parts := make([]string, 0, MaxLevel*times)
	for i := range MaxLevel {
		for range times {
			parts = append(parts, "KEYS["+strconv.Itoa(base+i)+"]")
		}
	}
	return strings.Join(parts, ", ")
}

// levelReads are the reads of the level ready lists that Stats and
// Inspector.Queues add to their pipelines: no round trip more.
type levelReads struct {
	lens [MaxLevel]*redis.IntCmd
	last [MaxLevel]*redis.StringCmd // the element fetched next; nil when not read
}

// readLevels adds the LLEN of each level list to pipe, and with oldest its
// take-end element.
func readLevels(ctx context.Context, pipe redis.Pipeliner, k keys, oldest bool) levelReads {
	var r levelReads
	for i := range r.lens {
		r.lens[i] = pipe.LLen(ctx, k.readyAt(i+1))
		if oldest {
			r.last[i] = pipe.LIndex(ctx, k.readyAt(i+1), -1)
		}
	}
	return r
}

// jobs is the number of jobs in the level lists (they hold no wake
// markers: markers go to level 0's list).
func (r levelReads) jobs() int64 {
	var n int64
	for _, l := range r.lens {
		n += l.Val()
	}
	return n
}

// oldest is the largest age, from its EnqueuedAt, of the jobs at the take
// ends of the level lists (0: none).
func (r levelReads) oldest(now time.Time) time.Duration {
	var d time.Duration
	for _, c := range r.last {
		if c != nil && c.Err() == nil {
			d = max(d, oldestReady([]string{c.Val()}, now))
		}
	}
	return d
}

// levelField is the prefix naming a priority level in a cursor or handle
// of the ready jobs: "" for level 0, so those of earlier versions still
// read, else "p<level>:".
func levelField(level int) string {
	if level == 0 {
		return ""
	}
	return "p" + strconv.Itoa(level) + ":"
}

// cutLevel cuts levelField off s.
func cutLevel(s string) (level int, rest string, err error) {
	v, ok := strings.CutPrefix(s, "p")
	if !ok {
		return 0, s, nil
	}
	l, rest, ok := strings.Cut(v, ":")
	level, err = strconv.Atoi(l)
	if !ok || err != nil || level < 1 || level > MaxLevel {
		return 0, s, fmt.Errorf("priority level %q out of range", l)
	}
	return level, rest, nil
}

// topLevel is the highest level whose ready list holds jobs, 0 when none
// does: one round trip (a pipeline of EXISTS).
func (in *Inspector) topLevel(ctx context.Context, k keys) (int, error) {
	pipe := in.p.Client().Pipeline()
	var ex [MaxLevel]*redis.IntCmd
	for i := range ex {
		ex[i] = pipe.Exists(ctx, k.readyAt(i+1))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	for l := MaxLevel; l > 0; l-- {
		if ex[l-1].Val() == 1 {
			return l, nil
		}
	}
	return 0, nil
}
