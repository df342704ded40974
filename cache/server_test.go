package cache

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Tests where Redis semantics matter (Pub/Sub, Lua, real expiry). Each is a
// function of a pool factory, run here on a real server (and, where the
// harness allows, on miniredis); a Redis Cluster can be added the same way.

func TestInvalidationAcrossInstances_Server(t *testing.T) {
	testInvalidationAcrossInstances(t, serverBackend(redistest.Server(t)), "inv")
}

func TestInvalidationAcrossInstances_Mini(t *testing.T) {
	m := redistest.Mini(t)
	testInvalidationAcrossInstances(t, backend{cfg: pool.Config{Addrs: []string{m.Addr()}}}, "inv")
}

func testInvalidationAcrossInstances(t *testing.T, be backend, name string) {
	ctx := context.Background()
	a := newCache(t, be.newPool(t), name, Config[string]{})
	b := newCache(t, be.newPool(t), name, Config[string]{})
	started(t, a)
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "both subscribers to listen", func() bool { return a.Stats().Subscribed && b.Stats().Subscribed })

	received := func(c *Cache[string], n uint64) func() bool {
		return func() bool { return c.Stats().InvalidationsReceived >= n }
	}
	require.NoError(t, a.Set(ctx, "k", "v1", time.Minute))
	testutil.Eventually(t, testutil.Wait, "B to hear of the first Set", received(b, 1))
	for range 2 {
		v, err := b.Get(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, "v1", v)
	}
	require.Equal(t, uint64(1), b.Stats().LocalHits, "B holds v1 locally")

	require.NoError(t, a.Set(ctx, "k", "v2", time.Minute))
	testutil.Eventually(t, testutil.Wait, "B to drop its copy", received(b, 2))
	v, err := b.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v2", v, "a Set on A reached B's local tier")

	require.NoError(t, a.Delete(ctx, "k"))
	testutil.Eventually(t, testutil.Wait, "B to hear of the Delete", received(b, 3))
	_, err = b.Get(ctx, "k")
	require.ErrorIs(t, err, ErrNotFound)

	// And the other way round; nobody acts on its own messages.
	_, err = a.GetOrLoad(ctx, "j", func(context.Context) (string, error) { return "a's", nil })
	require.NoError(t, err)
	require.NoError(t, b.Set(ctx, "j", "b's", time.Minute))
	testutil.Eventually(t, testutil.Wait, "A to hear of B's Set", received(a, 1))
	v, err = a.Get(ctx, "j")
	require.NoError(t, err)
	require.Equal(t, "b's", v)
	testutil.Eventually(t, testutil.Wait, "B to hear of A's load", func() bool { return b.Stats().InvalidationsReceived == 4 })
	require.Equal(t, uint64(4), a.Stats().InvalidationsSent, "two Sets, a Delete and a load")
	require.Equal(t, uint64(1), b.Stats().InvalidationsSent)
	require.Equal(t, uint64(1), a.Stats().InvalidationsReceived, "B's Set; A's own messages did not come back to it")
}

func TestSubscriberFlushesOnResubscribe_Server(t *testing.T) {
	testSubscriberFlushesOnResubscribe(t, serverBackend(redistest.Server(t)), "resub")
}

func testSubscriberFlushesOnResubscribe(t *testing.T, be backend, name string) {
	ctx := context.Background()
	a := newCache(t, be.newPool(t), name, Config[string]{})
	b := newCache(t, be.newPool(t), name, Config[string]{})
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "B to listen", func() bool { return b.Stats().Subscribed })
	require.Equal(t, uint64(1), b.Stats().Subscribes)

	require.NoError(t, a.Set(ctx, "k", "v1", time.Minute))
	testutil.Eventually(t, testutil.Wait, "B to hear of the Set", func() bool { return b.Stats().InvalidationsReceived == 1 })
	_, err := b.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, int64(1), b.Stats().LocalEntries)

	// Killed on the server it is connected to (one node of a cluster).
	sub := be.subscriber(t, name)
	_, err = sub.node.Do(ctx, "CLIENT", "KILL", "ID", sub.id)
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "B to resubscribe", func() bool { return b.Stats().Subscribes == 2 })
	st := b.Stats()
	require.Zero(t, st.LocalEntries, "a message may have been lost while B was away: everything local went")
	require.Equal(t, uint64(2), st.Flushes)
	testutil.Eventually(t, testutil.Wait, "B to listen again", func() bool { return b.Stats().Subscribed })

	// The new subscription works.
	_, err = b.Get(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, a.Set(ctx, "k", "v2", time.Minute))
	testutil.Eventually(t, testutil.Wait, "B to hear of the second Set", func() bool { return b.Stats().InvalidationsReceived == 2 })
	v, err := b.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v2", v)
}

func TestCrossInstanceStampede_Server(t *testing.T) {
	testCrossInstanceStampede(t, serverBackend(redistest.Server(t)), "stampede")
}

// 4 instances x 100 callers on a cold key: one loader call in all.
func testCrossInstanceStampede(t *testing.T, b backend, name string) {
	const instances, callers = 4, 100
	caches := make([]*Cache[item], instances)
	for i := range caches {
		caches[i] = newCache(t, b.newPool(t), name, Config[item]{})
		started(t, caches[i])
	}
	testutil.Eventually(t, testutil.Wait, "every subscriber to listen", func() bool {
		for _, c := range caches {
			if !c.Stats().Subscribed {
				return false
			}
		}
		return true
	})
	lockWaits := func() (n uint64) {
		for _, c := range caches {
			n += c.Stats().LockWaits
		}
		return n
	}
	var calls atomic.Int32
	load := func(ctx context.Context) (item, error) {
		calls.Add(1)
		// Hold the lock until every other instance waits for it, so the
		// test covers the wait and the wake-up, not a late reader.
		for lockWaits() < instances-1 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		return item{ID: 42, Name: "loaded once"}, nil
	}
	var wg sync.WaitGroup
	var bad atomic.Int32
	for _, c := range caches {
		for range callers {
			wg.Go(func() {
				v, err := c.GetOrLoad(context.Background(), "cold", load)
				if err != nil || v.ID != 42 {
					bad.Add(1)
				}
			})
		}
	}
	wg.Wait()
	require.Zero(t, bad.Load())
	require.Equal(t, int32(1), calls.Load(), "one loader call across 4 instances")
	var loads uint64
	for _, c := range caches {
		loads += c.Stats().Loads
	}
	require.Equal(t, uint64(1), loads)
	require.Equal(t, uint64(instances-1), lockWaits())
}

func TestLockHolderDiesAnotherTakesOver_Server(t *testing.T) {
	testLockHolderDies(t, serverBackend(redistest.Server(t)), "dead")
}

func testLockHolderDies(t *testing.T, b backend, name string) {
	ctx := context.Background()
	p := b.newPool(t)
	c := newCache(t, p, name, Config[item]{})
	started(t, c)
	// An instance that took the lock and died: nothing will publish a note.
	require.NoError(t, p.Client().Set(ctx, c.lockKey("k"), "dead-holder", 200*time.Millisecond).Err())
	var calls atomic.Int32
	v, err := c.GetOrLoad(ctx, "k", func(context.Context) (item, error) {
		calls.Add(1)
		return item{ID: 1}, nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	require.Equal(t, int32(1), calls.Load())
	require.Equal(t, uint64(1), c.Stats().LockWaits, "it waited for the lock to expire, then took over")
	n, err := p.Client().Exists(ctx, c.lockKey("k")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "and released it")
}

func TestTTLToTheMillisecond_Server(t *testing.T) {
	testTTLToTheMillisecond(t, serverBackend(redistest.Server(t)), "pttl")
}

func testTTLToTheMillisecond(t *testing.T, b backend, name string) {
	ctx := context.Background()
	p := b.newPool(t)
	c := newCache(t, p, name, Config[string]{TTL: 300 * time.Millisecond})
	require.NoError(t, c.Set(ctx, "set", "v", 250*time.Millisecond))
	_, err := c.GetOrLoad(ctx, "load", func(context.Context) (string, error) { return "v", nil })
	require.NoError(t, err)
	for key, want := range map[string]time.Duration{"set": 250 * time.Millisecond, "load": 300 * time.Millisecond} {
		pttl, err := p.Client().PTTL(ctx, c.RedisKey(key)).Result()
		require.NoError(t, err)
		require.Positive(t, pttl, key)
		require.LessOrEqual(t, pttl, want, "%s: a TTL under a second is not turned into an hour or a second", key)
		require.Greater(t, pttl, want-100*time.Millisecond, key)
	}
}

func TestSubscriberReplacesASilentConnection_Server(t *testing.T) {
	testSubscriberReplacesASilentConnection(t, serverBackend(redistest.Server(t)), "silent")
}

func testSubscriberReplacesASilentConnection(t *testing.T, b backend, name string) {
	c := newCache(t, b.newPool(t), name, Config[string]{PingInterval: MinPingInterval})
	started(t, c)
	testutil.Eventually(t, testutil.Wait, "the subscriber to listen", func() bool { return c.Stats().Subscribed })
	srv := b.subscriber(t, name).node
	st, err := srv.CommandStats(context.Background())
	require.NoError(t, err)
	pings := st["ping"]
	// While idle it pings, and answered pings keep the connection.
	testutil.Eventually(t, testutil.Wait, "three idle pings", func() bool {
		st, err := srv.CommandStats(context.Background())
		return err == nil && st["ping"] >= pings+3
	})
	require.Equal(t, uint64(1), c.Stats().Subscribes)
	// The connection stays open but Redis stops answering: no error ever
	// comes, only the unanswered PING tells.
	_, err = srv.Do(context.Background(), "CLIENT", "PAUSE", "400", "ALL")
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the subscriber to replace its connection", func() bool {
		st := c.Stats()
		return st.Subscribes >= 2 && st.Subscribed
	})
	require.GreaterOrEqual(t, c.Stats().Flushes, uint64(2))
}

func TestSetWinsOverALoadAtEveryInterleaving_Mini(t *testing.T) {
	m := redistest.Mini(t)
	testSetWinsOverALoadAtEveryInterleaving(t, backend{cfg: pool.Config{Addrs: []string{m.Addr()}}})
}

func TestSetWinsOverALoadAtEveryInterleaving_Server(t *testing.T) {
	testSetWinsOverALoadAtEveryInterleaving(t, serverBackend(redistest.Server(t)))
}

// testSetWinsOverALoadAtEveryInterleaving: a Set's pipeline is not atomic,
// so another instance's fill (the script that writes a loaded value if the
// load lock is still its own) can run between any two of its commands. At
// every such point the Set must win: its value in Redis, no lock left, and
// the loaded value (which may predate the Set) kept nowhere.
func testSetWinsOverALoadAtEveryInterleaving(t *testing.T, be backend) {
	ctx := context.Background()
	for at := range 3 { // SET, DEL of the lock, PUBLISH, in some order
		t.Run(fmt.Sprint("fill after command ", at), func(t *testing.T) {
			name := fmt.Sprint("interleave", at)
			loader := newCache(t, be.newPool(t), name, Config[string]{})
			sp := be.newPool(t)
			setter := newCache(t, sp, name, Config[string]{})

			l := make(chan struct{})
			started := make(chan struct{})
			got, errc := make(chan string, 1), make(chan error, 1)
			go func() {
				v, err := loader.GetOrLoad(ctx, "k", func(ctx context.Context) (string, error) {
					close(started)
					select {
					case <-l:
						return "loaded", nil
					case <-ctx.Done():
						return "", ctx.Err()
					}
				})
				got <- v
				errc <- err
			}()
			testutil.Recv(t, started, "the loader to start") // it holds the lock

			h := &splitPipeline{at: at, between: func() {
				close(l)
				require.Equal(t, "loaded", testutil.Recv(t, got, "GetOrLoad to return"), "the loader's callers get its value")
			}}
			sp.Client().AddHook(h)
			require.NoError(t, setter.Set(ctx, "k", "set", time.Minute))
			require.True(t, h.split, "the Set's pipeline was split")
			require.NoError(t, testutil.Recv(t, errc, "GetOrLoad's error"))

			raw, err := sp.Client().Get(ctx, setter.RedisKey("k")).Result()
			require.NoError(t, err)
			require.Equal(t, "set", raw[1:], "Redis holds the Set's value")
			n, err := sp.Client().Exists(ctx, setter.lockKey("k")).Result()
			require.NoError(t, err)
			require.Zero(t, n, "no lock left behind")
			for _, c := range []*Cache[string]{loader, setter} {
				v, err := c.Get(ctx, "k")
				require.NoError(t, err)
				require.Equal(t, "set", v)
			}
		})
	}
}

// splitPipeline runs the first pipeline with a SET in it one command at a
// time, and calls between after command at.
type splitPipeline struct {
	at      int
	between func()
	split   bool
}

func (h *splitPipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *splitPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *splitPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.split || !slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "set" }) {
			return next(ctx, cmds)
		}
		h.split = true
		var first error
		for i := range cmds {
			if err := next(ctx, cmds[i:i+1]); err != nil && first == nil {
				first = err
			}
			if i == h.at {
				h.between()
			}
		}
		return first
	}
}
