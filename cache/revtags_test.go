package cache

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A loader that reads another key through GetOrLoad (of this cache or of
// another one) gets a context carrying its own call's values: the tags of
// the outer call must not ride along onto the inner key, which nobody
// tagged. Before, the inner value was added to the outer call's tag (of
// the other cache too), so InvalidateTag of the outer tag removed it and it
// took a place in a tag it does not belong to.
func TestNestedGetOrLoadDoesNotInheritTags(t *testing.T) {
	be := miniBackend(t)
	ctx := context.Background()
	rc := rawClient(t, be)
	p := be.newPool(t)
	a := newCache(t, p, "nestA", Config[string]{})
	b := newCache(t, p, "nestB", Config[string]{})
	v, err := a.GetOrLoad(ctx, "outer", func(ctx context.Context) (string, error) {
		inner, err := a.GetOrLoad(ctx, "inner", func(context.Context) (string, error) { return "i", nil })
		if err != nil {
			return "", err
		}
		other, err := b.GetOrLoad(ctx, "other", func(context.Context) (string, error) { return "o", nil })
		if err != nil {
			return "", err
		}
		return "outer+" + inner + other, nil
	}, Tags("user:1"))
	require.NoError(t, err)
	require.Equal(t, "outer+io", v)

	members, err := rc.ZRange(ctx, a.TagKey("user:1"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"outer"}, members, "only the outer key carries the tag")
	n, err := rc.Exists(ctx, b.TagKey("user:1")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the other cache has no such tag")

	require.NoError(t, a.InvalidateTag(ctx, "user:1"))
	n, err = rc.Exists(ctx, a.RedisKey("inner")).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the untagged inner key survives")
}

func TestInvalidateTagRacesFirstLoad_Mini(t *testing.T) {
	testInvalidateTagRacesFirstLoad(t, miniBackend(t), "firstload")
}
func TestInvalidateTagRacesFirstLoad_Server(t *testing.T) {
	testInvalidateTagRacesFirstLoad(t, serverBackend(redistest.Server(t)), "firstload")
}

// "Update the source, then InvalidateTag": a tagged load of a key that is
// not cached yet (so not yet a member of the tag), whose loader read the
// source before the update, must not write its value after the
// InvalidateTag, as a load racing a Delete of its key does not (with the
// lock and without it). Before, the InvalidateTag could not see the key,
// the load wrote the old data under the tag and it was served for its
// whole TTL.
func testInvalidateTagRacesFirstLoad(t *testing.T, be backend, name string) {
	ctx := context.Background()
	rc := rawClient(t, be)
	for _, noLock := range []bool{false, true} {
		c := newCache(t, be.newPool(t), fmt.Sprint(name, noLock), Config[string]{NoLock: noLock})
		started(t, c)
		testutil.Eventually(t, testutil.Wait, "the subscriber to listen", func() bool { return c.Stats().Subscribed })
		source := "old"
		var mu sync.Mutex
		read, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := c.GetOrLoad(ctx, "k", func(lctx context.Context) (string, error) {
				mu.Lock()
				v := source
				mu.Unlock()
				close(read)
				select {
				case <-release:
				case <-lctx.Done():
				}
				return v, nil
			}, Tags("user:1"))
			done <- err
		}()
		testutil.Recv(t, read, "the loader to read the source")
		mu.Lock()
		source = "new"
		mu.Unlock()
		require.NoError(t, c.InvalidateTag(ctx, "user:1"))
		close(release)
		require.NoError(t, testutil.Recv(t, done, "the load to end"))

		got, err := rc.Get(ctx, c.RedisKey("k")).Result()
		if err == nil {
			require.NotEqual(t, string(append([]byte{kindValue}, "old"...)), got, "NoLock %v: the old value was written after InvalidateTag", noLock)
		} else {
			require.ErrorIs(t, err, redis.Nil)
		}
		v, err := c.GetOrLoad(ctx, "k", func(context.Context) (string, error) { return source, nil }, Tags("user:1"))
		require.NoError(t, err)
		require.Equal(t, "new", v, "NoLock %v", noLock)
	}
}

// GetOrLoad answered by the local tier allocates nothing, with or without
// the options Set and GetOrLoad took since tags.
func TestGetOrLoadLocalHitAllocs(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "allocs", Config[item]{})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", item{ID: 1}, time.Hour))
	load := func(context.Context) (item, error) { return item{}, nil }
	allocs := testing.AllocsPerRun(100, func() {
		v, err := c.GetOrLoad(ctx, "k", load)
		if err != nil || v.ID != 1 {
			panic("not a hit")
		}
	})
	require.Zero(t, allocs, "allocations per GetOrLoad local hit")
}

// A write with far too many tags is refused as soon as it is known to be
// over MaxTagsPerWrite: before, the duplicates were sought among all of
// them first, quadratic in their number (100,000 tags took seconds of
// CPU before the refusal).
func TestTagsOverMaxRefusedAtOnce(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "manytags", Config[string]{})
	tags := make([]string, 100_000)
	for i := range tags {
		tags[i] = fmt.Sprint("t", i)
	}
	start := time.Now()
	err := c.Set(context.Background(), "k", "v", time.Minute, Tags(tags...))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "over MaxTagsPerWrite (32)")
	require.Less(t, time.Since(start), time.Second, "refused without comparing every pair")
}

// TrackRawWrites on a pool with a password, a database and a client name:
// the RESP2 reservation's own HELLO 2 AUTH ... SETNAME passes the pool's
// identity check, tracking is on, and a raw EXPIRE reaches the tier; with
// NoLocal too.
func TestTrackRawWritesPoolIdentity_Server(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{Password: "s3cret"})
	cfg := pool.Config{Addrs: []string{srv.Addr()}, Password: "s3cret", ClientName: "app", DB: 3}
	ctx := context.Background()
	a := newCache(t, newPool(t, cfg), "pa", Config[string]{TrackRawWrites: true})
	started(t, a)
	testutil.Eventually(t, testutil.Wait, "sub", func() bool { return a.Stats().Subscribed })
	require.Equal(t, "tracking", a.Stats().InvalidationMode)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: "s3cret", DB: 3})
	defer func() { require.NoError(t, rc.Close()) }()
	require.NoError(t, a.Set(ctx, "k", "v", time.Minute))
	testutil.Eventually(t, testutil.Wait, "own", func() bool { return a.Stats().TrackingInvalidations >= 1 })
	_, err := a.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, int64(1), a.Stats().LocalEntries)
	require.NoError(t, rc.Expire(ctx, a.RedisKey("k"), time.Millisecond).Err())
	testutil.Eventually(t, testutil.Wait, "expire drop", func() bool { return a.Stats().LocalEntries == 0 })
	// NoLocal + tracking
	b := newCache(t, newPool(t, cfg), "pb", Config[string]{TrackRawWrites: true, NoLocal: true})
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "sub", func() bool { return b.Stats().Subscribed })
	require.Equal(t, "tracking", b.Stats().InvalidationMode)
}

// A tagged key with the largest TTL (a common "forever") next to one of
// 1ms: the tag's set takes the longest expiry, and InvalidateTag removes
// the key.
func TestTagHugeTTL(t *testing.T) {
	for _, be := range []backend{miniBackend(t), serverBackend(redistest.Server(t))} {
		ctx := context.Background()
		c := newCache(t, be.newPool(t), "huge", Config[string]{})
		rc := rawClient(t, be)
		require.NoError(t, c.Set(ctx, "k", "v", time.Duration(math.MaxInt64), Tags("t")))
		require.NoError(t, c.Set(ctx, "k2", "v", time.Millisecond, Tags("t")))
		ms, err := rc.ZRange(ctx, c.TagKey("t"), 0, -1).Result()
		require.NoError(t, err)
		require.Equal(t, []string{"k2", "k"}, ms)
		pttl, err := rc.PTTL(ctx, c.TagKey("t")).Result()
		require.NoError(t, err)
		require.Greater(t, pttl, 100*365*24*time.Hour)
		require.NoError(t, c.InvalidateTag(ctx, "t"))
		n, err := rc.Exists(ctx, c.RedisKey("k")).Result()
		require.NoError(t, err)
		require.Zero(t, n)
	}
}

// Three instances, six writers (Sets and loads) and InvalidateTags on one
// tag of MaxTagMembers 20: the tag never holds more, and every value in
// Redis is a member of it.
func TestTagMaxMembersConcurrentWriters_Server(t *testing.T) {
	be := serverBackend(redistest.Server(t))
	ctx := context.Background()
	rc := rawClient(t, be)
	var cs []*Cache[string]
	for range 3 {
		c := newCache(t, be.newPool(t), "fullc", Config[string]{MaxTagMembers: 20})
		started(t, c)
		cs = append(cs, c)
	}
	var wg sync.WaitGroup
	for w := range 6 {
		c := cs[w%3]
		wg.Go(func() {
			for i := range 60 {
				k := fmt.Sprint("k", (w*13+i)%50)
				if i%3 == 0 {
					_, _ = c.GetOrLoad(ctx, k+"L", func(context.Context) (string, error) { return "l", nil }, Tags("t"))
				} else {
					_ = c.Set(ctx, k, "v", time.Duration(1+i%5)*time.Minute, Tags("t"))
				}
				if i%17 == 0 {
					_ = c.InvalidateTag(ctx, "t")
				}
			}
		})
	}
	wg.Wait()
	members, err := rc.ZRange(ctx, cs[0].TagKey("t"), 0, -1).Result()
	require.NoError(t, err)
	require.LessOrEqual(t, len(members), 20)
	keys, err := rc.Keys(ctx, "{c:fullc}:k:*").Result()
	require.NoError(t, err)
	in := map[string]bool{}
	for _, m := range members {
		in[cs[0].RedisKey(m)] = true
	}
	for _, k := range keys {
		require.True(t, in[k], k)
	}
	var ev uint64
	for _, c := range cs {
		ev += c.Stats().TagEvictions
	}
	require.NotZero(t, ev, "the tag was full at times")
}
