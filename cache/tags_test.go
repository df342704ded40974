package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

func miniBackend(t *testing.T) backend {
	m := redistest.Mini(t)
	return backend{cfg: pool.Config{Addrs: []string{m.Addr()}}}
}

// rawClient is a plain go-redis client on b's Redis, outside any pool: the
// test's view of Redis, and "another program" writing to it.
func rawClient(t *testing.T, b backend) redis.UniversalClient {
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: b.cfg.Addrs, IsClusterMode: b.cfg.ClusterMode})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestTags_Mini(t *testing.T)   { testTags(t, miniBackend(t), "tags") }
func TestTags_Server(t *testing.T) { testTags(t, serverBackend(redistest.Server(t)), "tags") }

// testTags: keys Set or loaded with a tag are removed by InvalidateTag from
// Redis and from another instance's local tier; keys of other tags stay;
// the tag's set expires with its last member.
func testTags(t *testing.T, be backend, name string) {
	ctx := context.Background()
	a := newCache(t, be.newPool(t), name, Config[string]{})
	b := newCache(t, be.newPool(t), name, Config[string]{})
	started(t, a)
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "both subscribers to listen", func() bool { return a.Stats().Subscribed && b.Stats().Subscribed })
	rc := rawClient(t, be)

	require.NoError(t, a.Set(ctx, "k1", "v1", time.Minute, Tags("user:42")))
	require.NoError(t, a.Set(ctx, "k2", "v2", 2*time.Minute, Tags("user:42", "team:7", "user:42")))
	require.NoError(t, a.Set(ctx, "k3", "v3", time.Minute, Tags("team:7")))
	// Else a late message of these Sets would drop the copies B takes below.
	testutil.Eventually(t, testutil.Wait, "B to hear of A's Sets", func() bool { return b.Stats().InvalidationsReceived == 3 })
	v, err := b.GetOrLoad(ctx, "k4", func(context.Context) (string, error) { return "v4", nil }, Tags("user:42"))
	require.NoError(t, err)
	require.Equal(t, "v4", v)
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		_, err := b.Get(ctx, k)
		require.NoError(t, err)
	}
	require.Equal(t, int64(4), b.Stats().LocalEntries)

	// The membership is scored by the key's expiry, and the set expires
	// with its last member.
	members, err := rc.ZRangeWithScores(ctx, a.TagKey("user:42"), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, members, 3)
	pttl, err := rc.PTTL(ctx, a.TagKey("user:42")).Result()
	require.NoError(t, err)
	require.Greater(t, pttl, time.Hour-time.Second, "the set lives as long as k4 (Config.TTL, 1h)")
	require.LessOrEqual(t, pttl, time.Hour+time.Second)
	k2, err := rc.PTTL(ctx, a.RedisKey("k2")).Result()
	require.NoError(t, err)
	for _, m := range members {
		if m.Member == "k2" {
			now, err := rc.Time(ctx).Result()
			require.NoError(t, err)
			exp := time.UnixMilli(int64(m.Score))
			require.InDelta(t, float64(now.Add(k2).UnixMilli()), float64(exp.UnixMilli()), 1000, "k2's score is its expiry")
		}
	}

	recv := b.Stats().InvalidationsReceived
	require.NoError(t, a.InvalidateTag(ctx, "user:42"))
	for _, k := range []string{"k1", "k2", "k4"} {
		n, err := rc.Exists(ctx, a.RedisKey(k)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "%s is gone from Redis", k)
		_, err = a.Get(ctx, k)
		require.ErrorIs(t, err, ErrNotFound, "%s is gone from A's tier", k)
	}
	testutil.Eventually(t, testutil.Wait, "B to hear of it", func() bool { return b.Stats().InvalidationsReceived > recv })
	require.Equal(t, int64(1), b.Stats().LocalEntries, "B keeps only k3")
	v, err = b.Get(ctx, "k3")
	require.NoError(t, err)
	require.Equal(t, "v3", v)
	n, err := rc.Exists(ctx, a.TagKey("user:42"), a.tagDrainKey("user:42")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing is left of the tag")
	st := a.Stats()
	require.Equal(t, uint64(1), st.TagInvalidations)
	require.Equal(t, uint64(3), st.TagKeysInvalidated)

	// k2 still belongs to team:7 (k2's value is gone; the member goes
	// with InvalidateTag or its expiry); an unused tag is no error.
	recv = b.Stats().InvalidationsReceived
	require.NoError(t, a.InvalidateTag(ctx, "team:7"))
	testutil.Eventually(t, testutil.Wait, "B to hear of it", func() bool { return b.Stats().InvalidationsReceived > recv })
	_, err = b.Get(ctx, "k3")
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, a.InvalidateTag(ctx, "nobody"))
}

// A tag holds at most MaxTagMembers keys: a tagged write into a full tag
// evicts the member that expires first and deletes its value (in Redis, in
// the writer's tier and, through the usual message, in the others'), so
// InvalidateTag misses no live key. The writer's own key is never the one
// evicted, even with the shortest TTL.
func TestTagMaxMembers_Mini(t *testing.T) { testTagMaxMembers(t, miniBackend(t), "full") }
func TestTagMaxMembers_Server(t *testing.T) {
	testTagMaxMembers(t, serverBackend(redistest.Server(t)), "full")
}

// (On a Redis Cluster too: the script deletes the evicted keys, which are
// not in its KEYS but share the cache's slot.)
func testTagMaxMembers(t *testing.T, be backend, name string) {
	ctx := context.Background()
	cfg := Config[string]{MaxTagMembers: 3}
	a := newCache(t, be.newPool(t), name, cfg)
	b := newCache(t, be.newPool(t), name, cfg)
	started(t, a)
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "both subscribers to listen", func() bool { return a.Stats().Subscribed && b.Stats().Subscribed })
	rc := rawClient(t, be)
	for i, k := range []string{"k1", "k2", "k3"} {
		require.NoError(t, a.Set(ctx, k, k, time.Duration(i+2)*time.Minute, Tags("t")))
		testutil.Eventually(t, testutil.Wait, "B to hear of the Set", func() bool { return b.Stats().InvalidationsReceived == uint64(i+1) })
		_, err := b.Get(ctx, k)
		require.NoError(t, err)
	}
	recv := b.Stats().InvalidationsReceived
	require.NoError(t, a.Set(ctx, "k4", "k4", 10*time.Minute, Tags("t")))
	require.Equal(t, uint64(1), a.Stats().TagEvictions)
	members, err := rc.ZRange(ctx, a.TagKey("t"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"k2", "k3", "k4"}, members, "k1, which expired first, was evicted")
	n, err := rc.Exists(ctx, a.RedisKey("k1")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "and its value deleted")
	testutil.Eventually(t, testutil.Wait, "B to drop k1", func() bool { return b.Stats().InvalidationsReceived >= recv+2 })
	_, err = b.Get(ctx, "k1")
	require.ErrorIs(t, err, ErrNotFound)

	// The shortest TTL of all: k5 stays, k2 goes.
	require.NoError(t, a.Set(ctx, "k5", "k5", time.Minute, Tags("t")))
	members, err = rc.ZRange(ctx, a.TagKey("t"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"k5", "k3", "k4"}, members)
	// Rewriting a member adds nobody.
	require.NoError(t, a.Set(ctx, "k5", "k5", time.Minute, Tags("t")))
	require.Equal(t, uint64(2), a.Stats().TagEvictions)

	require.NoError(t, a.InvalidateTag(ctx, "t"))
	for _, k := range []string{"k3", "k4", "k5"} {
		_, err := a.Get(ctx, k)
		require.ErrorIs(t, err, ErrNotFound, k)
	}
}

// Bad tags fail before anything is written, with ErrInvalid and a message
// naming the tag.
func TestTagValidation(t *testing.T) {
	be := miniBackend(t)
	ctx := context.Background()
	c := newCache(t, be.newPool(t), "val", Config[string]{})
	long := strings.Repeat("x", MaxTagBytes+1)
	many := make([]string, MaxTagsPerWrite+1)
	for i := range many {
		many[i] = fmt.Sprint("t", i)
	}
	cases := []struct {
		name string
		tags []string
		msg  string
	}{
		{"empty", []string{"a", ""}, `Set "k": tag 2 of 2: empty tag`},
		{"long", []string{long}, fmt.Sprintf("is %d bytes, over MaxTagBytes (%d)", MaxTagBytes+1, MaxTagBytes)},
		{"many", many, fmt.Sprintf("more than %d distinct tags (of %d given), over MaxTagsPerWrite (%d)", MaxTagsPerWrite, MaxTagsPerWrite+1, MaxTagsPerWrite)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Set(ctx, "k", "v", time.Minute, Tags(tc.tags...))
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, tc.msg)
			_, err = c.GetOrLoad(ctx, "k", func(context.Context) (string, error) { panic("not called") }, Tags(tc.tags...))
			require.ErrorIs(t, err, ErrInvalid)
			_, err = c.Get(ctx, "k")
			require.ErrorIs(t, err, ErrNotFound, "nothing was written")
		})
	}
	// Exactly at the limits is fine.
	require.NoError(t, c.Set(ctx, "k", "v", time.Minute, Tags(strings.Repeat("y", MaxTagBytes))))
	require.NoError(t, c.Set(ctx, "k", "v", time.Minute, Tags(many[:MaxTagsPerWrite]...)))
	require.NoError(t, c.Set(ctx, "k", "v", time.Minute, nil)) // a nil Option is ignored

	err := c.InvalidateTag(ctx, "")
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "InvalidateTag: empty tag")
	err = c.InvalidateTag(ctx, long)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, `tag "xxxxxxxx`)

	_, err = New(newPool(t, be.cfg), "cfg", Config[string]{MaxTagMembers: -1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "Config.MaxTagMembers")
	_, err = New(newPool(t, be.cfg), "cfg", Config[string]{TrackRawWrites: true, NoInvalidation: true})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "Config.TrackRawWrites")
}

// With Redis down InvalidateTag fails (fast, with the pool's error). One
// that fails midway leaves its members in the drain set, and the next call
// removes them, along with what was tagged since.
func TestInvalidateTagRedisDown(t *testing.T) {
	m := redistest.Mini(t)
	be := backend{cfg: pool.Config{Addrs: []string{m.Addr()}}}
	ctx := context.Background()
	c := newCache(t, be.newPool(t), "down", Config[string]{})
	const n = 3*tagChunk + 10
	for i := range n {
		require.NoError(t, c.Set(ctx, fmt.Sprint("k", i), "v", time.Minute, Tags("t")))
	}
	c.testHookTagDrain = func() { m.Close() }
	err := c.InvalidateTag(ctx, "t")
	require.Error(t, err)
	require.ErrorContains(t, err, "0 key(s) removed, the rest not yet (call again)")
	c.testHookTagDrain = nil
	require.NoError(t, m.Restart())

	// Meanwhile another key was tagged: it goes too.
	testutil.Eventually(t, testutil.Wait, "Redis to be back for the pool", func() bool {
		return c.Set(ctx, "late", "v", time.Minute, Tags("t")) == nil
	})
	err = c.InvalidateTag(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, uint64(n+1), c.Stats().TagKeysInvalidated)
	// What is left is the tag's epoch, which expires.
	require.Equal(t, []string{c.tagEpochKey("t")}, m.Keys(), "values, tag and drain sets all gone")
	require.Equal(t, c.tagEpochTTL(), m.TTL(c.tagEpochKey("t")))

	// Once the pool has seen Redis fail, calls fail at once.
	m.Close()
	testutil.Eventually(t, testutil.Wait, "InvalidateTag to fail with pool.ErrUnavailable", func() bool {
		return errors.Is(c.InvalidateTag(ctx, "t"), pool.ErrUnavailable)
	})
	require.NoError(t, m.Restart())
}

// InvalidateTag racing Sets of the tag: a key tagged before it began is
// removed; a key Set with the tag while it runs either survives, still
// tagged, or is removed; no key is left written with the tag but outside
// it.
func TestInvalidateTagRacesSet_Mini(t *testing.T) {
	testInvalidateTagRacesSet(t, miniBackend(t), "race")
}
func TestInvalidateTagRacesSet_Server(t *testing.T) {
	testInvalidateTagRacesSet(t, serverBackend(redistest.Server(t)), "race")
}

func testInvalidateTagRacesSet(t *testing.T, be backend, name string) {
	ctx := context.Background()
	c := newCache(t, be.newPool(t), name, Config[string]{})
	rc := rawClient(t, be)
	require.NoError(t, c.Set(ctx, "old", "v", time.Minute, Tags("t")))
	require.NoError(t, c.Set(ctx, "again", "v1", time.Minute, Tags("t")))
	// Between the move of the members and their deletion: a new key, and
	// a key that was a member already.
	c.testHookTagDrain = func() {
		require.NoError(t, c.Set(ctx, "new", "v", time.Minute, Tags("t")))
		require.NoError(t, c.Set(ctx, "again", "v2", time.Minute, Tags("t")))
	}
	require.NoError(t, c.InvalidateTag(ctx, "t"))
	c.testHookTagDrain = nil
	_, err := c.Get(ctx, "old")
	require.ErrorIs(t, err, ErrNotFound)
	v, err := c.Get(ctx, "new")
	require.NoError(t, err)
	require.Equal(t, "v", v, "a key tagged after InvalidateTag began survives")
	// "again" was removed with the old members (over-invalidation), but
	// its new write's membership stands.
	_, err = c.Get(ctx, "again")
	require.ErrorIs(t, err, ErrNotFound)
	members, err := rc.ZRange(ctx, c.TagKey("t"), 0, -1).Result()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"new", "again"}, members)
	require.NoError(t, c.InvalidateTag(ctx, "t"))
	_, err = c.Get(ctx, "new")
	require.ErrorIs(t, err, ErrNotFound)

	// And at random: writers and invalidations of one tag at once; then
	// every key in Redis is in the tag's set.
	const writers, keys = 4, 20
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, writers+1)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.Set(ctx, fmt.Sprint("r", (w*7+i)%keys), "v", time.Minute, Tags("t")); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if err := c.InvalidateTag(ctx, "t"); err != nil {
				errs <- err
				return
			}
		}
	})
	testutil.Eventually(t, testutil.Wait, "20 invalidations", func() bool { return c.Stats().TagInvalidations >= 22 || len(errs) > 0 })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	tagged, err := rc.ZRange(ctx, c.TagKey("t"), 0, -1).Result()
	require.NoError(t, err)
	for i := range keys {
		k := fmt.Sprint("r", i)
		n, err := rc.Exists(ctx, c.RedisKey(k)).Result()
		require.NoError(t, err)
		if n == 1 {
			require.Contains(t, tagged, k, "%s is in Redis, so in its tag", k)
		}
	}
}

// A value loaded with tags under the lock and with Config.NoLock (SET NX)
// is tagged; one a Set kept out of Redis is not.
func TestGetOrLoadTags_Mini(t *testing.T) {
	be := miniBackend(t)
	ctx := context.Background()
	rc := rawClient(t, be)
	for _, noLock := range []bool{false, true} {
		c := newCache(t, be.newPool(t), fmt.Sprint("load", noLock), Config[string]{NoLock: noLock, NegativeTTL: time.Minute})
		_, err := c.GetOrLoad(ctx, "k", func(context.Context) (string, error) { return "v", nil }, Tags("t"))
		require.NoError(t, err)
		_, err = c.GetOrLoad(ctx, "gone", func(context.Context) (string, error) { return "", ErrNotFound }, Tags("t"))
		require.ErrorIs(t, err, ErrNotFound)
		members, err := rc.ZRange(ctx, c.TagKey("t"), 0, -1).Result()
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"k", "gone"}, members, "NoLock %v: the negative entry is tagged too", noLock)
		require.NoError(t, c.InvalidateTag(ctx, "t"))
		n, err := rc.Exists(ctx, c.RedisKey("k"), c.RedisKey("gone")).Result()
		require.NoError(t, err)
		require.Zero(t, n)
	}
}

// After the cache's group closed, tagged calls fail with ErrClosed at once,
// as every other one (TestEveryMethodAfterCloseReturnsErrClosed).
func TestTagsAfterClose(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "closed", Config[string]{})
	g := lifecycle.New()
	require.NoError(t, c.Start(g))
	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(closeCtx))
	commands := m.CommandCount()
	for name, call := range map[string]func() error{
		"InvalidateTag": func() error { return c.InvalidateTag(ctx, "t") },
		"Set tagged":    func() error { return c.Set(ctx, "k", "v", time.Minute, Tags("t")) },
		"GetOrLoad tagged": func() error {
			_, err := c.GetOrLoad(ctx, "k", func(context.Context) (string, error) { return "v", nil }, Tags("t"))
			return err
		},
	} {
		err := call()
		require.ErrorIs(t, err, ErrClosed, name)
	}
	require.Equal(t, commands, m.CommandCount(), "no call reached Redis")
}
