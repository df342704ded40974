package queue

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The registry of a namespace's queue names, for the Inspector. Nothing
// else lists the queues of a namespace (their keys carry one hash tag each,
// and a SCAN of the keyspace is no option on a large Redis), so every
// process that uses a queue says so, at a cost that does not depend on the
// number of jobs:
//
//   - a Queue, on its first enqueue in the process, and again at most once
//     per registryRefresh while it enqueues (Queue.noteSeen);
//   - Queue.Schedule, on every registration;
//   - a Worker, when it starts, and its Consumer's heartbeat every
//     heartbeatRetention/4 (15 minutes) for the queues its workers consume.
//
// Two sorted sets in the namespace's slot hold it: {ns}:queues, every score
// 0, so ZRANGEBYLEX pages through the names in a stable order, and
// {ns}:queueseen, score = last seen (unix ms), by which names not seen for
// registryRetention are trimmed, and the oldest beyond registryMax. Each
// write trims at most 100 names, so no call is long.
//
// The same write records which queues a consumer consumes
// ({ns}:consumerqueues, consumer ID -> space-separated queue names), for
// Inspector.Consumers; its entries go with the consumer's heartbeat
// (Consumer leave, trimHeartbeatsScript).

// registryRetention is how long a queue name stays listed without being
// seen; registryMax bounds the names of a namespace.
const (
	registryRetention = 30 * 24 * time.Hour
	registryMax       = 10_000
	// registryRefresh is how often a producing Queue notes itself again.
	registryRefresh = time.Hour
	// registryTimeout bounds a consumer's registry write.
	registryTimeout = 5 * time.Second
)

// queuesKey is the registry of the namespace's queue names (score 0, lex
// order); queueSeenKey the same names by last seen; consumerQueuesKey the
// queues of each consumer.
func queuesKey(namespace string) string         { return "{" + namespace + "}:queues" }
func queueSeenKey(namespace string) string      { return "{" + namespace + "}:queueseen" }
func consumerQueuesKey(namespace string) string { return "{" + namespace + "}:consumerqueues" }

// registerScript notes queue names as seen now, and trims the registry.
// KEYS: queues, queueseen. ARGV: now ms, oldest ms kept, max names, names...
var registerScript = redis.NewScript(`
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
  redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[i])
end
local drop = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2], 'LIMIT', 0, 100)
local over = redis.call('ZCARD', KEYS[2]) - #drop - tonumber(ARGV[3])
if over > 0 then
  local more = redis.call('ZRANGE', KEYS[2], #drop, #drop + math.min(over, 100) - 1)
  for _, v in ipairs(more) do drop[#drop+1] = v end
end
if #drop > 0 then
  redis.call('ZREM', KEYS[1], unpack(drop))
  redis.call('ZREM', KEYS[2], unpack(drop))
end
return #drop
`)

// register notes names in the namespace's registry with one script call
// on pipe. EVAL, not EVALSHA: it runs rarely, and a Redis that lost its
// scripts must not fail it.
func register(ctx context.Context, pipe redis.Pipeliner, namespace string, now time.Time, names ...string) {
	args := make([]any, 0, 3+len(names))
	args = append(args, now.UnixMilli(), now.Add(-registryRetention).UnixMilli(), registryMax)
	for _, n := range names {
		args = append(args, n)
	}
	registerScript.Eval(ctx, pipe, []string{queuesKey(namespace), queueSeenKey(namespace)}, args...)
}

// noteSeen registers the queue on its first enqueue in this process, and
// again once per registryRefresh: one round trip per hour and queue at
// most, never per job. A failure is logged and tried again on the next
// enqueue; it never fails the enqueue.
func (q *Queue) noteSeen(ctx context.Context) {
	now := q.cfg.Now()
	last := q.seen.Load()
	if last != 0 && now.Sub(time.UnixMilli(last)) < registryRefresh && now.UnixMilli() >= last {
		return
	}
	if !q.seen.CompareAndSwap(last, now.UnixMilli()) {
		return // another enqueue of this process is noting it
	}
	pipe := q.p.Client().Pipeline()
	register(ctx, pipe, q.cfg.Namespace, now, q.name)
	if _, err := pipe.Exec(ctx); err != nil {
		q.seen.CompareAndSwap(now.UnixMilli(), last)
		q.cfg.Logger.Debug("queue: noting the queue in the namespace's registry failed; retried on the next enqueue", "queue", q.name, "err", err)
	}
}

// noteQueues registers the queues of the node's workers, and records them
// as the consumer's: at a worker's start, and every heartbeatRetention/4.
// Best effort: a failure is logged (Inspector listings may miss the queue
// until the next refresh).
func (n *node) noteQueues(ctx context.Context) {
	ws := n.attached()
	if len(ws) == 0 {
		return
	}
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.queueName()
	}
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	ns := n.c.cfg.Namespace
	pipe := n.p.Background().Pipeline()
	register(ctx, pipe, ns, n.now(), names...)
	pipe.HSet(ctx, consumerQueuesKey(ns), n.id, strings.Join(names, " "))
	if _, err := pipe.Exec(ctx); err != nil {
		n.log.Warn("queue: noting the consumer's queues in the namespace's registry failed", "err", err)
	}
}
