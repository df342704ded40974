package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/pool"
)

// Tracking of raw writes (Config.TrackRawWrites). The subscriber's
// connection speaks RESP2 and, as soon as it is set up (before it
// subscribes, and again on every reconnect), asks Redis for
// client-side-caching invalidations of every key under the cache's value
// prefix, redirected to itself:
//
//	CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX {c:<name>}:k:
//
// Redis then sends, to a RESP2 connection in Pub/Sub mode, each batch of
// keys written (by anyone: redis-cli, another program, this cache) as a
// message on __redis__:invalidate, and a flush (FLUSHALL, FLUSHDB) as one
// whose payload is null. It needs no subscription to that channel, only
// the connection's being subscribed to something: the cache's own channel.
// Not subscribing to it matters on a Redis Cluster, where go-redis picks
// the node of a resubscription by the slot of one of its channels, taken at
// random: with two it would land on the wrong master half the time.
//
// Why RESP2: the reservation's every connection gets the OnConnect (on a
// cluster, also the ones that load the slot map), and only a subscribed
// RESP2 one is sent anything; a RESP3 connection would be pushed every
// invalidation, read or not.

// trackingChannel is where Redis sends the invalidations of a RESP2
// connection that redirects them to one in Pub/Sub mode.
const trackingChannel = "__redis__:invalidate"

// Invalidation modes (Stats.InvalidationMode).
const (
	modeNone int32 = iota
	modePubSub
	modeTracking
)

// tracking is the state of Config.TrackRawWrites.
type tracking struct {
	mode atomic.Int32
}

func (t *tracking) modeName() string {
	switch t.mode.Load() {
	case modePubSub:
		return "pubsub"
	case modeTracking:
		return "tracking"
	}
	return ""
}

// reserveOptions are the subscriber reservation's options.
func (c *Cache[V]) reserveOptions() pool.ReserveOptions {
	if !c.cfg.TrackRawWrites {
		return pool.ReserveOptions{}
	}
	return pool.ReserveOptions{Protocol: 2, OnConnect: c.enableTracking}
}

// subscribedMode records the mode of a new subscription: without
// TrackRawWrites it is Pub/Sub; with it, enableTracking set it already.
func (c *Cache[V]) subscribedMode() {
	if !c.cfg.TrackRawWrites {
		c.track.mode.Store(modePubSub)
	}
}

// enableTracking turns tracking on for a new connection of the
// subscriber's reservation. A Redis that refuses it (miniredis, Redis 5)
// leaves the cache on Pub/Sub, with a notice; a connection that fails
// fails.
func (c *Cache[V]) enableTracking(ctx context.Context, cn *redis.Conn) error {
	hello, err := cn.Do(ctx, "HELLO").Result()
	var id int64
	if err == nil {
		id, err = helloID(hello)
	}
	if err == nil {
		err = cn.Do(ctx, "CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST", "PREFIX", c.keyPrefix).Err()
	}
	if err != nil {
		if !trackingRefused(err) {
			// No reply, or a passing one (BUSY, LOADING, OOM): the set-up
			// fails and the subscriber connects again, rather than staying
			// on Pub/Sub alone until some later reconnect.
			return err
		}
		if c.track.mode.Swap(modePubSub) != modePubSub {
			c.log.Info("cache: Redis refused client-side-caching tracking; invalidating through Pub/Sub only (raw writes by other programs reach the local tier only through LocalTTL)", "err", err)
		}
		return nil
	}
	if c.track.mode.Swap(modeTracking) != modeTracking {
		c.log.Info("cache: tracking raw writes (CLIENT TRACKING BCAST)", "prefix", c.keyPrefix)
	}
	return nil
}

var errNoHelloID = errors.New("no id in the HELLO reply")

// trackingRefused tells a server that cannot or will not track (an unknown
// command or subcommand, an ACL refusal, an id-less HELLO) from a passing
// failure.
func trackingRefused(err error) bool {
	if errors.Is(err, errNoHelloID) {
		return true
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := strings.ToLower(rerr.Error())
	return strings.HasPrefix(msg, "noperm") || strings.Contains(msg, "unknown command") ||
		strings.Contains(msg, "unknown subcommand") || strings.Contains(msg, "syntax error") ||
		strings.Contains(msg, "wrong number of arguments") ||
		strings.Contains(msg, "not supported")
}

// helloID finds the client id in a HELLO reply: a map (RESP3) or a flat
// list of names and values (RESP2).
func helloID(reply any) (int64, error) {
	switch r := reply.(type) {
	case map[any]any:
		if id, ok := r["id"].(int64); ok {
			return id, nil
		}
	case []any:
		for i := 0; i+1 < len(r); i += 2 {
			if name, _ := r[i].(string); name == "id" {
				if id, ok := r[i+1].(int64); ok {
					return id, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("%w: %v", errNoHelloID, reply)
}

// applyTracked acts on a message from trackingChannel: the Redis keys
// written. Keys outside the cache's value prefix (there should be none) are
// ignored. As for another instance's Set: the local copy goes, a GetOrLoad
// from now on does not join a load already running, and a waiter for
// another instance's load checks Redis again.
func (c *Cache[V]) applyTracked(m *redis.Message) {
	if m.PayloadSlice == nil {
		// Redis sends keys as a list; a string here was PUBLISHed by
		// someone else.
		c.st.badMessages.Add(1)
		return
	}
	defer c.st.trackingInval.Add(1)
	for _, rk := range m.PayloadSlice {
		key, ok := strings.CutPrefix(rk, c.keyPrefix)
		if !ok {
			continue
		}
		c.dropLocal(key)
		c.flights.Forget(key)
		c.wake(key)
	}
}

// unreadableMessage reports whether err is go-redis failing to turn a
// message it read into a Message: the connection is fine. Tracking's flush
// notice (a null payload, after FLUSHALL or FLUSHDB) is one.
func unreadableMessage(err error) bool {
	return strings.HasPrefix(err.Error(), "redis: unsupported pubsub message")
}

// unreadable handles a message go-redis could not read: what it said is
// unknown (tracking's flush notice, most likely), so the whole local tier
// goes.
func (c *Cache[V]) unreadable(err error) {
	if c.cfg.TrackRawWrites {
		c.st.trackingInval.Add(1)
	} else {
		c.st.badMessages.Add(1)
		c.log.Warn("cache: unreadable message on the invalidation subscription; flushing the local tier", "err", err)
	}
	c.flushLocal()
}
