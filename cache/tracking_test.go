package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

func TestTrackRawWrites_Server(t *testing.T) {
	testTrackRawWrites(t, serverBackend(redistest.Server(t)), "track")
}

// testTrackRawWrites: with Config.TrackRawWrites, a value another program
// writes with a plain SET drops the local copy within a bounded time; so
// does a FLUSHALL, without the subscriber reconnecting; and after the
// subscriber's connection is killed, tracking is on again on the new one
// (and the tier was flushed).
func testTrackRawWrites(t *testing.T, be backend, name string) {
	ctx := context.Background()
	logs := &lockedBuffer{}
	a := newCache(t, be.newPool(t), name, Config[string]{TrackRawWrites: true, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	started(t, a)
	testutil.Eventually(t, testutil.Wait, "the subscriber to listen", func() bool { return a.Stats().Subscribed })
	require.Equal(t, "tracking", a.Stats().InvalidationMode)
	require.Contains(t, string(logs.Bytes()), "tracking raw writes")
	rc := rawClient(t, be)
	sub := be.subscriber(t, name)
	require.Contains(t, clientInfo(t, sub)["flags"], "t", "the subscriber's connection tracks")

	// A's own Set comes back as a tracking invalidation too.
	require.NoError(t, a.Set(ctx, "k", "v1", time.Minute))
	testutil.Eventually(t, testutil.Wait, "A's own write to come back", func() bool { return a.Stats().TrackingInvalidations >= 1 })
	for range 2 {
		v, err := a.Get(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, "v1", v)
	}
	require.Equal(t, int64(1), a.Stats().LocalEntries)

	rawSet := func(v string) {
		t.Helper()
		before := a.Stats().TrackingInvalidations
		require.NoError(t, rc.Set(ctx, a.RedisKey("k"), append([]byte{kindValue}, v...), time.Minute).Err())
		testutil.Eventually(t, 5*time.Second, "the raw SET to reach A's tier", func() bool {
			return a.Stats().TrackingInvalidations > before && a.Stats().LocalEntries == 0
		})
		got, err := a.Get(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, v, got)
	}
	rawSet("v2")
	// Only the subscribed connection is sent anything: any other
	// connection of the reservation (on a cluster, the ones that loaded the
	// slot map) tracks too, but speaks RESP2 and is not in Pub/Sub mode,
	// so nothing piles up in its output buffer.
	for _, n := range be.nodes {
		clients, err := n.Clients(ctx)
		require.NoError(t, err)
		for _, line := range clients {
			if f := clientFields(line); strings.Contains(f["name"], "cache:"+name+"_invalidation") {
				require.Equal(t, "0", f["omem"], line)
			}
		}
	}

	// FLUSHALL: Redis says "flush"; the tier goes, the subscription stays.
	subs := a.Stats().Subscribes
	require.Equal(t, int64(1), a.Stats().LocalEntries)
	_, err := sub.node.Do(ctx, "FLUSHALL") // the master of the cache's slot
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the flush to reach A", func() bool { return a.Stats().LocalEntries == 0 })
	require.True(t, a.Stats().Subscribed)
	require.Equal(t, subs, a.Stats().Subscribes)
	require.NotContains(t, string(logs.Bytes()), "level=WARN")

	// The subscriber's connection dies: the new one tracks again.
	flushes := a.Stats().Flushes
	_, err = sub.node.Do(ctx, "CLIENT", "KILL", "ID", sub.id)
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the subscriber to come back", func() bool {
		return a.Stats().Subscribes == subs+1 && a.Stats().Subscribed
	})
	require.Greater(t, a.Stats().Flushes, flushes, "the tier was flushed on resubscribing")
	require.Equal(t, "tracking", a.Stats().InvalidationMode)
	sub2 := be.subscriber(t, name)
	require.NotEqual(t, sub.id, sub2.id)
	require.Contains(t, clientInfo(t, sub2)["flags"], "t")
	require.NoError(t, a.Set(ctx, "k", "v3", time.Minute))
	_, err = a.Get(ctx, "k")
	require.NoError(t, err)
	rawSet("v4")
}

// clientInfo is sub's line of its server's CLIENT LIST.
func clientInfo(t *testing.T, sub subConn) map[string]string {
	t.Helper()
	clients, err := sub.node.Clients(context.Background())
	require.NoError(t, err)
	for _, line := range clients {
		if f := clientFields(line); f["id"] == sub.id {
			return f
		}
	}
	t.Fatalf("client %s not found", sub.id)
	return nil
}

// Where Redis lacks CLIENT TRACKING (miniredis), the cache says so once and
// invalidates through Pub/Sub as without TrackRawWrites.
func TestTrackRawWritesFallback_Mini(t *testing.T) {
	be := miniBackend(t)
	ctx := context.Background()
	logs := &lockedBuffer{}
	a := newCache(t, be.newPool(t), "fb", Config[string]{TrackRawWrites: true, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	b := newCache(t, be.newPool(t), "fb", Config[string]{})
	started(t, a)
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "both subscribers to listen", func() bool { return a.Stats().Subscribed && b.Stats().Subscribed })
	require.Equal(t, "pubsub", a.Stats().InvalidationMode)
	require.Equal(t, "pubsub", b.Stats().InvalidationMode)
	require.Contains(t, string(logs.Bytes()), "Redis refused client-side-caching tracking")
	require.Equal(t, 1, strings.Count(string(logs.Bytes()), "refused"), "said once")

	require.NoError(t, a.Set(ctx, "k", "v1", time.Minute))
	_, err := a.Get(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, b.Set(ctx, "k", "v2", time.Minute))
	testutil.Eventually(t, testutil.Wait, "A to hear of B's Set", func() bool { return a.Stats().InvalidationsReceived == 1 })
	v, err := a.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v2", v)
	require.Zero(t, a.Stats().TrackingInvalidations)
}

// The cost of tracking: every write to the cache's keys, its own included,
// comes back to every tracking instance. Measured for N Sets by A, read
// back by A and by B, against Pub/Sub alone in the same run: how many
// messages each instance handles, and how many of A's reads right after its
// own writes the local tier still answers. Invalidations batch (Redis sends
// the keys written in one event-loop turn together) and nothing they cause
// writes, so they cannot feed themselves.
func TestTrackingCost_Server(t *testing.T) {
	be := serverBackend(redistest.Server(t))
	ctx := context.Background()
	const n = 500
	for _, track := range []bool{false, true} {
		name := fmt.Sprint("cost", track)
		a := newCache(t, be.newPool(t), name, Config[string]{TrackRawWrites: track})
		b := newCache(t, be.newPool(t), name, Config[string]{TrackRawWrites: track})
		started(t, a)
		started(t, b)
		testutil.Eventually(t, testutil.Wait, "both subscribers to listen", func() bool { return a.Stats().Subscribed && b.Stats().Subscribed })
		for i := range n {
			require.NoError(t, a.Set(ctx, fmt.Sprint("k", i), "v", time.Minute))
		}
		testutil.Eventually(t, testutil.Wait, "B to hear of every Set", func() bool { return b.Stats().InvalidationsReceived == n })
		if track {
			// A sentinel write: once it is heard, every earlier one is.
			require.NoError(t, b.Set(ctx, "last", "v", time.Minute))
			testutil.Eventually(t, testutil.Wait, "A to hear of the last write", func() bool { return a.Stats().InvalidationsReceived == 1 })
			testutil.Eventually(t, testutil.Wait, "the tracking messages to settle", func() bool {
				_, err := a.Get(ctx, "last")
				return err == nil && a.Stats().LocalEntries >= 1
			})
		}
		before := a.Stats()
		for i := range n {
			_, err := a.Get(ctx, fmt.Sprint("k", i))
			require.NoError(t, err)
		}
		after := a.Stats()
		st := b.Stats()
		t.Logf("TrackRawWrites=%v: %d Sets by A; A handled %d tracking messages, B %d tracking + %d Pub/Sub; A's reads after its own writes: %d local hits, %d from Redis",
			track, n, after.TrackingInvalidations, st.TrackingInvalidations, st.InvalidationsReceived, after.LocalHits-before.LocalHits, after.RedisHits-before.RedisHits)
		if track {
			require.Positive(t, after.TrackingInvalidations)
			require.LessOrEqual(t, after.TrackingInvalidations, uint64(n+1), "at most one message per write")
			require.Equal(t, uint64(n), after.RedisHits-before.RedisHits, "A dropped its own copies")
		} else {
			require.Equal(t, uint64(n), after.LocalHits-before.LocalHits)
		}
	}
}
