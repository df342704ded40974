package queue

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Due announcements: the earliest due time of a queue's delayed jobs is
// also kept in the namespace's heartbeat set, as the member "{due}<queue
// tag>" scored by that time. Every heartbeat already reads the members
// whose score has passed (they are how dead consumers are found), so an
// announcement that is overdue reaches every process within one
// HeartbeatInterval at no extra cost, and each process consuming the queue
// re-reads its delayed set.
//
// It closes the one gap the wake markers leave: a delayed job that became
// the earliest is announced by a wake marker to ONE process (the one that
// takes the marker); should that process die before the job is due while
// every other one last read an empty delayed set, nobody would promote the
// job until the dead process is detected (HeartbeatTTL + HeartbeatInterval)
// and its death wakes the others. With the announcement it is promoted
// within HeartbeatInterval of its due time instead.
//
// A scheduler announces after a read that could have taught it something
// no other process knows: one that promoted jobs (it may be alone to have
// read the next one), one that followed a wake marker, or one that an
// overdue announcement triggered. An announcement costs one script call on
// those reads only; with nothing delayed nothing is sent. Consumer IDs
// cannot contain '{', so no announcement is taken for a consumer.

// dueMemberPrefix starts the heartbeat-set member of a due announcement.
const dueMemberPrefix = "{due}"

// dueMember is the announcement member of the queue with hash tag tag.
func dueMember(tag string) string { return dueMemberPrefix + tag }

// isDueMember tells an announcement from a consumer ID.
func isDueMember(member string) bool { return strings.HasPrefix(member, dueMemberPrefix) }

// announceDueScript sets a queue's announcement to the earliest due time
// a read found (-1: none), unless it holds an earlier time still in the
// future (another process announced a job this read did not see yet; if
// that job is gone, the announcement only costs one extra read when it
// comes due). An announcement already past is replaced: the read just made
// promoted what was due. The one case this misses is a job added after
// the read with a due time already past when the announcement is written
// (milliseconds), whose announcer then crashes: jobs enter the delayed set
// with a due time ahead (Delay, At, retries), so it needs both at once.
// KEYS: heartbeat set. ARGV: member, next due ms (-1: none), now ms.
var announceDueScript = redis.NewScript(`
local cur = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
local nxt, now = tonumber(ARGV[2]), tonumber(ARGV[3])
if cur and cur > now and (nxt < 0 or cur < nxt) then return 0 end
if nxt < 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], nxt, ARGV[1])
end
return 1
`)

// announce publishes the earliest due time a read found, when the read may
// have taught this process something others do not know (promoted jobs,
// followed a wake marker or an overdue announcement), and the time differs
// from what this scheduler announced last.
func (s *scheduler) announce(ctx context.Context, promoted, next int64, informed bool) {
	if !informed && promoted == 0 {
		return
	}
	if next == s.announced.Load() && promoted == 0 {
		return
	}
	w := s.w
	ctx, cancel := context.WithTimeout(ctx, dueAnnounceTimeout)
	defer cancel()
	err := announceDueScript.Run(ctx, w.q.p.Background(), []string{heartbeatKey(w.q.cfg.Namespace)},
		dueMember(w.q.k.tag), next, w.q.cfg.Now().UnixMilli()).Err()
	if err != nil {
		// Not fatal: the wake markers and the heartbeat's dead-consumer
		// check still promote the job; only the crash case loses its bound.
		if ctx.Err() == nil {
			w.log.Debug("queue: announcing the next due time failed", "err", err)
		}
		return
	}
	s.announced.Store(next)
}

// overdueQueues returns the tags of the queues whose due announcement in
// found has passed, and found without the announcements.
func overdueQueues(found []redis.Z) (tags map[string]bool, consumers []redis.Z) {
	consumers = found[:0:0]
	for _, z := range found {
		m, _ := z.Member.(string)
		if isDueMember(m) {
			if tags == nil {
				tags = map[string]bool{}
			}
			tags[strings.TrimPrefix(m, dueMemberPrefix)] = true
			continue
		}
		consumers = append(consumers, z)
	}
	return tags, consumers
}

// dueOverdue runs on the heartbeat's goroutine when the queue's due
// announcement has passed: a job may be due that no live scheduler knows
// of. The scheduler re-reads, and announces what it finds.
func (w *Worker) dueOverdue() {
	w.sched.fromDue.Store(true)
	w.sched.wake(false)
}

// dueAnnounceTimeout bounds one announcement.
const dueAnnounceTimeout = 5 * time.Second
