package cache

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// With V an interface type, a nil value (a loader's nil, a JSON null
// another instance Set) is a value like any other, not a panic.
func TestInterfaceNilValueDoesNotPanic(t *testing.T) {
	_, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "iface", Config[any]{})
	require.NotPanics(t, func() {
		v, err := c.GetOrLoad(ctx, "loaded", func(context.Context) (any, error) { return nil, nil })
		require.NoError(t, err)
		require.Nil(t, v)
	}, "loader returned nil")
	writer := newCache(t, p, "iface", Config[any]{})
	require.NoError(t, writer.Set(ctx, "set", nil, time.Minute))
	require.NotPanics(t, func() {
		v, err := c.GetOrLoad(ctx, "set", func(context.Context) (any, error) { return "x", nil })
		require.NoError(t, err)
		require.Nil(t, v)
	}, "Redis held null")
}

// A TTL near the largest Duration stays (about) that long instead of
// wrapping to 1ms.
func TestHugeTTLDoesNotWrap(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "forever", Config[string]{})
	require.NoError(t, c.Set(context.Background(), "k", "v", math.MaxInt64))
	require.Greater(t, m.TTL(c.RedisKey("k")), 100*365*24*time.Hour, "a 292-year TTL became %s", m.TTL(c.RedisKey("k")))
}

// A LoadTimeout whose LockTTL+LoadTimeout would wrap is refused by New,
// naming the field.
func TestHugeLoadTimeoutIsRefused(t *testing.T) {
	_, p := miniPool(t)
	_, err := New(p, "longload", Config[string]{LoadTimeout: math.MaxInt64 / 2})
	require.Error(t, err)
	require.Contains(t, err.Error(), "Config.LoadTimeout must be at most")
	_, err = New(p, "longlock", Config[string]{LockTTL: math.MaxInt64 / 2})
	require.Error(t, err)
	require.Contains(t, err.Error(), "Config.LockTTL must be at most")
}

// A GetOrLoad that starts after Delete returned does not join a load that
// began before it (whose loader may have read the old data).
func TestGetOrLoadAfterDeleteDoesNotJoinAnOlderLoad(t *testing.T) {
	_, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "join", Config[item]{})
	old := newBlockingLoader(item{Name: "old"})
	first := loadInBackground(c, "k", old.load)
	testutil.Recv(t, old.started, "the old loader to start") // the loader has read the source
	require.NoError(t, c.Delete(ctx, "k"))                   // source updated, then invalidated
	got := loadBesideOld(t, c, old, first)
	require.Equal(t, "new", got.Name, "GetOrLoad called after Delete returned served the value loaded before it")
}

// The same after another instance's Delete: once its invalidation arrived,
// a GetOrLoad here starts its own load.
func TestGetOrLoadAfterRemoteDeleteDoesNotJoinAnOlderLoad(t *testing.T) {
	_, p := miniPool(t)
	ctx := context.Background()
	a := newCache(t, p, "remotejoin", Config[item]{})
	b := newCache(t, p, "remotejoin", Config[item]{})
	started(t, a)
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "both subscribers to listen", func() bool { return a.Stats().Subscribed && b.Stats().Subscribed })
	old := newBlockingLoader(item{Name: "old"})
	first := loadInBackground(a, "k", old.load)
	testutil.Recv(t, old.started, "the old loader to start")
	before := a.Stats().InvalidationsReceived
	require.NoError(t, b.Delete(ctx, "k"))
	testutil.Eventually(t, testutil.Wait, "the Delete's invalidation to arrive", func() bool { return a.Stats().InvalidationsReceived > before })
	got := loadBesideOld(t, a, old, first)
	require.Equal(t, "new", got.Name, "GetOrLoad after another instance's Delete served the value loaded before it")
}

// loaded is what a GetOrLoad returned.
type loaded struct {
	v   item
	err error
}

// loadInBackground runs c.GetOrLoad(key, load) on a goroutine of its own;
// its result arrives on the channel.
func loadInBackground(c *Cache[item], key string, load func(context.Context) (item, error)) <-chan loaded {
	done := make(chan loaded, 1)
	go func() {
		v, err := c.GetOrLoad(context.Background(), key, load)
		done <- loaded{v, err}
	}()
	return done
}

// loadBesideOld runs a GetOrLoad of "k" whose loader answers "new" while
// old's load is held, and returns what it got. A GetOrLoad that joined the
// old load is stuck behind it: after 5s old is released, so it returns
// "old". Then old's first caller (first) must have got old's value.
func loadBesideOld(t *testing.T, c *Cache[item], old *blockingLoader, first <-chan loaded) item {
	t.Helper()
	second := loadInBackground(c, "k", func(context.Context) (item, error) { return item{Name: "new"}, nil })
	var got loaded
	select {
	case got = <-second:
	case <-time.After(5 * time.Second): // stuck behind the older load
		close(old.release)
		got = testutil.Recv(t, second, "the second GetOrLoad")
	}
	select {
	case <-old.release:
	default:
		close(old.release)
	}
	require.NoError(t, got.err, "the second GetOrLoad")
	f := testutil.Recv(t, first, "the first GetOrLoad")
	require.NoError(t, f.err, "the first GetOrLoad")
	require.Equal(t, "old", f.v.Name, "the first GetOrLoad gets its own loader's value")
	return got.v
}

// A LocalTTL near the largest Duration ("as long as Redis keeps it") keeps
// values locally instead of wrapping into the past (issue 14 item 6).
func TestHugeLocalTTLKeepsValuesLocally(t *testing.T) {
	_, p := miniPool(t)
	ctx := context.Background()
	for _, ttl := range []time.Duration{math.MaxInt64, math.MaxInt64 - 1, math.MaxInt64 / 2} {
		c := newCache(t, p, "forever-local", Config[string]{LocalTTL: ttl, TTL: ttl})
		require.NoError(t, c.Set(ctx, "set", "v", math.MaxInt64))
		_, err := c.GetOrLoad(ctx, "load", func(context.Context) (string, error) { return "v", nil })
		require.NoError(t, err)
		reader := newCache(t, p, "forever-local", Config[string]{LocalTTL: ttl})
		_, err = reader.Get(ctx, "set")
		require.NoError(t, err)
		for _, k := range []string{"set", "load"} {
			_, ok, _ := c.fromLocal(k)
			require.True(t, ok, "LocalTTL %d: %q written here is not kept locally", ttl, k)
		}
		_, ok, _ := reader.fromLocal("set")
		require.True(t, ok, "LocalTTL %d: a value read from Redis is not kept locally", ttl)
	}
}

// A load that could not ask Redis for the lock (its first read or its lock
// check failed, as with pool.ErrLaneExhausted under load) must not write its
// value to Redis: a Delete that lands while it runs ("update the database,
// then invalidate") would be undone there for the value's whole TTL
// (issue 14 item 1). The callers still get the value.
func TestLoadWithoutTheLockDoesNotUndoADelete(t *testing.T) {
	for _, failing := range []string{"get", "evalsha"} {
		t.Run("failing "+failing, func(t *testing.T) {
			m, p := miniPool(t)
			ctx := context.Background()
			loader := newCache(t, p, "undo", Config[item]{})
			deleter := newCache(t, p, "undo", Config[item]{})
			p.Client().AddHook(&failFirst{name: failing, err: fmt.Errorf("injected: %w", pool.ErrLaneExhausted)})
			old := newBlockingLoader(item{Name: "old"})
			first := loadInBackground(loader, "k", old.load)
			testutil.Recv(t, old.started, "the loader to start") // it has read the source
			require.NoError(t, deleter.Delete(ctx, "k"))         // source updated, then invalidated
			close(old.release)
			got := testutil.Recv(t, first, "GetOrLoad to return")
			require.NoError(t, got.err)
			require.Equal(t, "old", got.v.Name, "the callers get what the loader returned")
			require.False(t, m.Exists(loader.RedisKey("k")), "the value loaded before the Delete was written to Redis after it")
			_, err := deleter.Get(ctx, "k")
			require.ErrorIs(t, err, ErrNotFound)
		})
	}
}

// With Redis down, a loader's ErrNotFound is kept locally for NegativeTTL
// as a value is, so a missing key does not reach the loader on every call
// during the outage (issue 14 item 5).
func TestRedisDownKeepsNegativeAnswersLocally(t *testing.T) {
	m, _ := miniPool(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	ctx := context.Background()
	c := newCache(t, p, "down-neg", Config[item]{NegativeTTL: time.Minute})
	m.Close()
	_, err := c.Get(ctx, "x") // the failure that marks Redis down
	require.Error(t, err)
	require.False(t, p.Healthy())

	var calls atomic.Int32
	for range 10 {
		_, err := c.GetOrLoad(ctx, "missing", func(context.Context) (item, error) {
			calls.Add(1)
			return item{}, ErrNotFound
		})
		require.ErrorIs(t, err, ErrNotFound)
	}
	require.Equal(t, int32(1), calls.Load(), "the not-found answer was kept locally")
	_, err = c.Get(ctx, "missing")
	require.ErrorIs(t, err, ErrNotFound, "Get sees the local negative entry too")
}

// failFirst fails the first command (or pipeline starting with a command)
// named name with err, and lets everything else through.
type failFirst struct {
	name string
	err  error
	done atomic.Bool
}

func (h *failFirst) fail(cmds []redis.Cmder) bool {
	return len(cmds) > 0 && cmds[0].Name() == h.name && h.done.CompareAndSwap(false, true)
}

func (h *failFirst) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.fail([]redis.Cmder{cmd}) {
			cmd.SetErr(h.err)
			return h.err
		}
		return next(ctx, cmd)
	}
}
func (h *failFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.fail(cmds) {
			for _, c := range cmds {
				c.SetErr(h.err)
			}
			return h.err
		}
		return next(ctx, cmds)
	}
}

// A value in Redis the codec cannot decode (written with another V, as
// after a deploy that changed it) is a miss for GetOrLoad: it is deleted,
// the loader runs and its value replaces it, and Stats counts it. Before,
// GetOrLoad failed with ErrCodec for the key's whole TTL (issue 14 item 3).
func TestUndecodableValueIsAMiss(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook redis.Hook // how the flight meets the bad value
	}{
		{"on the first read", nil},
		// The first read misses (as if the value came just after it): the
		// lock script finds the bad value.
		{"in the lock check", &failFirst{name: "get", err: redis.Nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, p := miniPool(t)
			ctx := context.Background()
			c := newCache(t, p, "undecodable", Config[item]{})
			require.NoError(t, m.Set(c.RedisKey("k"), "\x01[1,2,3]")) // JSON, but not an item
			if tc.hook != nil {
				p.Client().AddHook(tc.hook)
			}
			var calls atomic.Int32
			v, err := c.GetOrLoad(ctx, "k", func(context.Context) (item, error) {
				calls.Add(1)
				return item{ID: 7}, nil
			})
			require.NoError(t, err, "an undecodable value blocked GetOrLoad")
			require.Equal(t, 7, v.ID)
			require.Equal(t, int32(1), calls.Load())
			require.Equal(t, uint64(1), c.Stats().DecodeErrors)
			other := newCache(t, p, "undecodable", Config[item]{})
			v, err = other.Get(ctx, "k")
			require.NoError(t, err, "the loaded value replaced the bad one in Redis")
			require.Equal(t, 7, v.ID)
		})
	}
}

// Get cannot replace an undecodable value: it returns ErrCodec, and deletes
// it so that the next read misses.
func TestGetDeletesAnUndecodableValue(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "undecodable-get", Config[item]{})
	require.NoError(t, m.Set(c.RedisKey("k"), "\x01not json"))
	_, err := c.Get(ctx, "k")
	require.ErrorIs(t, err, ErrCodec)
	require.Equal(t, uint64(1), c.Stats().DecodeErrors)
	require.False(t, m.Exists(c.RedisKey("k")))
	_, err = c.Get(ctx, "k")
	require.ErrorIs(t, err, ErrNotFound)

	// A value that decodes only in part is not handed out either: JSON
	// fills ID before it finds Name's type wrong.
	require.NoError(t, m.Set(c.RedisKey("k"), "\x01"+`{"id":7,"name":5}`))
	v, err := c.Get(ctx, "k")
	require.ErrorIs(t, err, ErrCodec)
	require.Zero(t, v, "a partly decoded value reached the caller")

	// Only the bad bytes go: a value written meanwhile stays.
	require.NoError(t, m.Set(c.RedisKey("k"), "\x01not json"))
	c.dropUndecodable(ctx, "k", []byte("\x01something else"))
	require.True(t, m.Exists(c.RedisKey("k")))
}
