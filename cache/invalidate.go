package cache

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// publish queues the invalidation of keys on pipe, unless invalidation is
// off, and returns the number of messages. op is opKeys after a Set or
// Delete, opLoaded after a load's fill.
func (c *Cache[V]) publish(ctx context.Context, pipe redis.Pipeliner, op byte, keys ...string) int {
	if c.cfg.NoInvalidation {
		return 0
	}
	msgs := keyMessages(c.id, op, keys)
	for _, m := range msgs {
		// PUBLISH takes no key, so a cluster client would send it to any
		// master (go-redis picks them in turn): a second round trip and
		// socket, on a node that has nothing to do with this cache.
		// Routed by its channel, which carries the cache's hash tag, it
		// goes with the rest of the pipeline to the cache's own master;
		// Redis Cluster forwards it to the subscribers on every node
		// (TestCluster/CachesOnEveryMaster).
		pipe.Publish(ctx, c.channel, m).SetFirstKeyPos(1)
	}
	return len(msgs)
}

// apply acts on one message from the channel.
func (c *Cache[V]) apply(payload string) {
	from, op, keys, ok := parseInvalidation(payload)
	if !ok {
		c.st.badMessages.Add(1)
		c.log.Warn("cache: ignoring a message that is not an invalidation", "channel", c.channel, "bytes", len(payload))
		return
	}
	if from == c.id {
		return // our own: the local tier is already up to date
	}
	// Counted once applied: whoever sees Stats.InvalidationsReceived go up
	// finds the copies already gone.
	defer c.st.invalReceived.Add(1)
	if op == opFlush {
		c.flushLocal()
		return
	}
	for keys != "" {
		var key string
		if key, keys, ok = nextKey(keys); !ok {
			// Corrupt tail: the keys it held are unknown, so drop them all.
			c.st.badMessages.Add(1)
			c.flushLocal()
			return
		}
		c.dropLocal(key)
		if op == opKeys {
			// Another instance's Set or Delete: as for our own.
			c.flights.Forget(key)
		}
		c.wake(key)
	}
}
