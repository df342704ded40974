package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrEvictingPolicy: Start refused to run because Redis's maxmemory-policy
// may evict the queue's keys and WorkerConfig.RefuseEvictingPolicy is set.
var ErrEvictingPolicy = errors.New("queue: Redis's maxmemory-policy evicts keys")

// policyUnknown is the policy reported when Redis refused to tell it.
const policyUnknown = "unknown"

// policyReadTimeout bounds one read of the policy.
const policyReadTimeout = 5 * time.Second

// evicting reports whether a maxmemory-policy may delete keys to make room.
//
// allkeys-* evicts any key: whole ready lists, delayed sets, processing
// lists and payload hashes vanish, their jobs lost without a trace, while
// the idempotency keys of the lost jobs may survive and refuse their
// re-enqueue as duplicates until they expire.
//
// volatile-* evicts only keys with a TTL. Of the queue's keys those are the
// idempotency keys (the ID option, UniqueTTL), the wake flag and the sweep
// lock: no job is lost, but an evicted idempotency key lets a duplicate in
// (the ID option silently stops deduplicating under memory pressure); an
// evicted wake flag or sweep lock only costs an extra wake marker or a
// duplicated (harmless, conditional) sweep. When no key with a TTL is left,
// Redis refuses writes as under noeviction. The cache's keys all carry
// TTLs, so next to a cache volatile-* evicts the cache first, and then the
// idempotency keys.
func evicting(policy string) bool {
	return strings.HasPrefix(policy, "allkeys-") || strings.HasPrefix(policy, "volatile-")
}

// readPolicyFrom reads Redis's maxmemory-policy: CONFIG GET, and when that
// is refused (a managed Redis's ACL or renamed command), the
// maxmemory_policy field of INFO memory. answered is false when Redis could
// not be asked (a connection error), so the caller reads again later;
// policyUnknown with answered true means Redis refused both.
func readPolicyFrom(ctx context.Context, c redis.Cmdable) (policy string, answered bool) {
	ctx, cancel := context.WithTimeout(ctx, policyReadTimeout)
	defer cancel()
	var re redis.Error
	m, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
	if err == nil && m["maxmemory-policy"] != "" {
		return m["maxmemory-policy"], true
	}
	if err != nil && !errors.As(err, &re) {
		return policyUnknown, false
	}
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return policyUnknown, errors.As(err, &re)
	}
	if p := infoField(info, "maxmemory_policy"); p != "" {
		return p, true
	}
	return policyUnknown, true
}

// infoField is the value of name in an INFO reply ("" when absent).
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// checkPolicyAtStart reads the policy for Start, and refuses an evicting one
// when the worker is configured to.
func (w *Worker) checkPolicyAtStart() error {
	w.readPolicy(context.Background(), w.q.p.Background())
	p := w.Memory().Policy
	if w.cfg.RefuseEvictingPolicy && evicting(p) {
		return fmt.Errorf("%w: maxmemory-policy is %s, and WorkerConfig.RefuseEvictingPolicy is set: use noeviction (see docs/queue-memory.md)", ErrEvictingPolicy, p)
	}
	return nil
}

// readPolicy reads the policy and records it, logging each change: at Error
// level for an evicting policy (once per change, not per read). It reports
// whether Redis answered.
func (w *Worker) readPolicy(ctx context.Context, c redis.Cmdable) bool {
	m := &w.mem
	m.mu.Lock()
	fails := m.fails
	m.mu.Unlock()
	p, answered := readPolicyFrom(ctx, c)
	m.mu.Lock()
	// A connection failure during the read may follow a restart the answer
	// predates: the policy stays stale, for the next fetch to read again.
	m.stale = !answered || m.fails != fails
	if !answered && m.policy != "" {
		// Keep what was known; the fetcher reads again.
		m.mu.Unlock()
		return false
	}
	old := m.policy
	m.policy = p
	m.mu.Unlock()
	if p == old {
		return answered
	}
	switch {
	case strings.HasPrefix(p, "allkeys-"):
		w.log.Error("queue: Redis's maxmemory-policy evicts any key: at maxmemory it deletes whole queues (ready lists, delayed jobs, jobs in flight) without a trace. Use maxmemory-policy noeviction, and a separate Redis for a cache that needs an LRU policy",
			"maxmemory_policy", p)
	case strings.HasPrefix(p, "volatile-"):
		w.log.Error("queue: Redis's maxmemory-policy evicts keys with a TTL: at maxmemory it deletes the queue's idempotency keys, so jobs enqueued with the ID option may run twice. Use maxmemory-policy noeviction",
			"maxmemory_policy", p)
	case p == policyUnknown && answered:
		w.log.Warn("queue: cannot read Redis's maxmemory-policy (CONFIG GET and INFO refused); make sure it is noeviction, or jobs may be evicted")
	case old != "" && old != policyUnknown:
		w.log.Info("queue: Redis's maxmemory-policy changed", "maxmemory_policy", p, "was", old)
	}
	return answered
}

// connectionFailed records a failure of a connection the worker waits on
// that the fetcher does not see: the fetch hub's BZPOPMIN. Redis may have
// restarted with another config, and the fetcher the hub wakes may take
// without a failure of its own (Redis is back by then, and its take dials
// anew), so the fetcher reads the policy again after its next fetch that
// works.
func (m *memState) connectionFailed() {
	m.mu.Lock()
	m.stale = true
	m.fails++
	m.mu.Unlock()
}

// policyStale reports whether the policy should be read again: never read,
// the last read could not reach Redis, or a connection failed since
// (connectionFailed).
func (m *memState) policyStale() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.policy == "" || m.stale
}
