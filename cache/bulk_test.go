package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// roundTrips counts the round trips to Redis: one per command sent alone,
// one per pipeline.
type roundTrips struct{ n atomic.Int32 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

func countTrips(p *pool.Pool) *roundTrips {
	h := &roundTrips{}
	p.Client().AddHook(h)
	return h
}

func keysN(prefix string, n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprint(prefix, i)
	}
	return ks
}

func TestBulkBadInput(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "bulkbad", Config[item]{})
	ctx := context.Background()
	load := func(context.Context, []string) (map[string]item, error) { return nil, nil }

	m, err := c.GetMany(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, m)
	m, err = c.GetOrLoadMany(ctx, []string{}, load)
	require.NoError(t, err)
	require.Empty(t, m)
	require.NoError(t, c.SetMany(ctx, nil, time.Minute))

	tooMany := keysN("k", MaxBulkKeys+1)
	_, err = c.GetMany(ctx, tooMany)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "1001 keys, over MaxBulkKeys (1000)")
	_, err = c.GetOrLoadMany(ctx, tooMany, load)
	require.ErrorIs(t, err, ErrInvalid)
	values := map[string]item{}
	for _, k := range tooMany {
		values[k] = item{}
	}
	require.ErrorIs(t, c.SetMany(ctx, values, time.Minute), ErrInvalid)

	_, err = c.GetMany(ctx, []string{"a", ""})
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "empty key")
	_, err = c.GetOrLoadMany(ctx, []string{strings.Repeat("x", MaxKeyBytes+1)}, load)
	require.ErrorContains(t, err, "over MaxKeyBytes")
	_, err = c.GetOrLoadMany(ctx, []string{"a"}, nil)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "nil loader")

	require.ErrorContains(t, c.SetMany(ctx, map[string]item{"a": {}}, 0), "ttl must be positive")
	big := newCache(t, p, "bulkbad", Config[item]{MaxValueBytes: 20})
	err = big.SetMany(ctx, map[string]item{"a": {ID: 1}, "b": {Name: strings.Repeat("x", 50)}}, time.Minute)
	require.ErrorIs(t, err, ErrValueTooLarge)
	m, err = c.GetMany(ctx, []string{"a", "b"})
	require.NoError(t, err)
	require.Empty(t, m, "a value over MaxValueBytes fails the whole SetMany before anything is written")
	require.Equal(t, MaxBulkKeys, len(keysN("k", MaxBulkKeys)))
	_, err = c.GetMany(ctx, keysN("k", MaxBulkKeys))
	require.NoError(t, err, "MaxBulkKeys keys are fine")
}

// GetMany: the local tier first, then one round trip for the rest;
// duplicates, keys in neither tier and negative entries are handled.
func TestGetMany(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "getmany", Config[item]{NegativeTTL: time.Minute})
	ctx := context.Background()
	require.NoError(t, c.SetMany(ctx, map[string]item{"a": {ID: 1}, "b": {ID: 2}, "c": {ID: 3}}, time.Minute))
	_, err := c.GetOrLoad(ctx, "neg", func(context.Context) (item, error) { return item{}, ErrNotFound })
	require.ErrorIs(t, err, ErrNotFound)
	trips := countTrips(p)

	m, err := c.GetMany(ctx, []string{"a", "b", "a", "neg"})
	require.NoError(t, err)
	require.Equal(t, map[string]item{"a": {ID: 1}, "b": {ID: 2}}, m)
	require.Zero(t, trips.n.Load(), "all local")

	c.dropLocal("b")
	c.dropLocal("c")
	c.dropLocal("neg")
	m, err = c.GetMany(ctx, []string{"a", "b", "c", "neg", "nope", "c"})
	require.NoError(t, err)
	require.Equal(t, map[string]item{"a": {ID: 1}, "b": {ID: 2}, "c": {ID: 3}}, m)
	require.Equal(t, int32(1), trips.n.Load(), "one round trip for the misses")
	m, err = c.GetMany(ctx, []string{"b", "c", "neg"})
	require.NoError(t, err)
	require.Len(t, m, 2)
	require.Equal(t, int32(1), trips.n.Load(), "and they are kept locally")
	st := c.Stats()
	require.Equal(t, uint64(3), st.RedisHits)
	require.Equal(t, uint64(2), st.Misses, "neg's first read, and nope")
}

func TestGetManyWithoutLocalTierAndRedisDown(t *testing.T) {
	m, _ := miniPool(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	c := newCache(t, p, "nolocal", Config[item]{NoLocal: true})
	ctx := context.Background()
	require.NoError(t, c.SetMany(ctx, map[string]item{"a": {ID: 1}, "b": {ID: 2}}, time.Minute))
	trips := countTrips(p)
	got, err := c.GetMany(ctx, []string{"a", "b", "x"})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, int32(1), trips.n.Load())

	m.Set(c.RedisKey("bad"), "\x09junk")
	got, err = c.GetMany(ctx, []string{"a", "bad"})
	require.NoError(t, err)
	require.Len(t, got, 1, "an undecodable value is left out")
	require.False(t, m.Exists(c.RedisKey("bad")), "and deleted")
	require.Equal(t, uint64(1), c.Stats().DecodeErrors)

	m.Close()
	got, err = c.GetMany(ctx, []string{"a"})
	require.Error(t, err)
	require.Empty(t, got)
}

// GetOrLoadMany: one loader call with the keys neither tier holds; a key
// the loader leaves out is not found (and cached so with NegativeTTL).
func TestGetOrLoadMany(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "loadmany", Config[item]{NegativeTTL: time.Minute, TTL: 10 * time.Minute})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "local", item{ID: 1}, time.Minute))
	require.NoError(t, c.Set(ctx, "redis", item{ID: 2}, time.Minute))
	c.dropLocal("redis")
	var calls [][]string
	load := func(_ context.Context, missing []string) (map[string]item, error) {
		calls = append(calls, missing)
		out := map[string]item{}
		for _, k := range missing {
			if k != "gone" {
				out[k] = item{ID: 100 + len(k), Name: k}
			}
		}
		out["unasked"] = item{} // ignored
		return out, nil
	}
	got, err := c.GetOrLoadMany(ctx, []string{"local", "redis", "new1", "gone", "new1", "new22"}, load)
	require.NoError(t, err)
	require.Equal(t, map[string]item{
		"local": {ID: 1}, "redis": {ID: 2},
		"new1": {ID: 104, Name: "new1"}, "new22": {ID: 105, Name: "new22"},
	}, got)
	require.Equal(t, [][]string{{"new1", "gone", "new22"}}, calls, "one call, with the missing keys once each")
	require.Equal(t, 10*time.Minute, m.TTL(c.RedisKey("new1")))
	require.Equal(t, time.Minute, m.TTL(c.RedisKey("gone")), "negative entry")
	require.False(t, m.Exists(c.lockKey("new1")))
	require.False(t, m.Exists(c.lockKey("gone")))
	require.False(t, m.Exists(c.RedisKey("unasked")))

	got, err = c.GetOrLoadMany(ctx, []string{"new1", "gone", "new22"}, load)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Len(t, calls, 1, "all answered by the tiers")
	for _, k := range []string{"new1", "gone"} {
		c.dropLocal(k)
	}
	got, err = c.GetOrLoadMany(ctx, []string{"new1", "gone"}, load)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Len(t, calls, 1, "and by Redis")
	st := c.Stats()
	require.Equal(t, uint64(1), st.Loads)
}

func TestGetOrLoadManyLoaderError(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "manyerr", Config[item]{NegativeTTL: time.Minute})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "have", item{ID: 1}, time.Minute))
	boom := errors.New("database down")
	got, err := c.GetOrLoadMany(ctx, []string{"have", "x", "y"}, func(context.Context, []string) (map[string]item, error) {
		return nil, boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, map[string]item{"have": {ID: 1}}, got, "the hits come with the error")
	require.False(t, m.Exists(c.lockKey("x")), "the locks are released")
	require.False(t, m.Exists(c.RedisKey("x")), "nothing is cached, not even a negative entry")
	require.Equal(t, uint64(1), c.Stats().LoadErrors)

	// A value too large for one key: the others are cached, its error
	// returned, its lock released.
	small := newCache(t, p, "manyerr2", Config[item]{MaxValueBytes: 30})
	got, err = small.GetOrLoadMany(ctx, []string{"ok", "big"}, func(context.Context, []string) (map[string]item, error) {
		return map[string]item{"ok": {ID: 1}, "big": {Name: strings.Repeat("x", 40)}}, nil
	})
	require.ErrorIs(t, err, ErrValueTooLarge)
	require.Len(t, got, 2, "the loaded values are returned")
	require.True(t, m.Exists(small.RedisKey("ok")))
	require.False(t, m.Exists(small.RedisKey("big")))
	require.False(t, m.Exists(small.lockKey("big")))
}

// A key whose lock another instance holds is not given to the loader: the
// call waits for that load and takes its value.
func TestGetOrLoadManyWaitsForAHeldLock(t *testing.T) {
	m, _ := miniPool(t)
	pa, pb := newPool(t, pool.Config{Addrs: []string{m.Addr()}}), newPool(t, pool.Config{Addrs: []string{m.Addr()}})
	a := newCache(t, pa, "held", Config[item]{})
	b := newCache(t, pb, "held", Config[item]{})
	started(t, a)
	started(t, b)
	waitSubscribed(t, []*Cache[item]{a, b})
	ctx := context.Background()
	bl := newBlockingLoader(item{ID: 7, Name: "from b"})
	fromB := loadInBackground(b, "x", bl.load)
	testutil.Recv(t, bl.started, "b's load")
	var asked atomic.Value
	done := make(chan map[string]item, 1)
	go func() {
		got, err := a.GetOrLoadMany(ctx, []string{"x", "y"}, func(_ context.Context, missing []string) (map[string]item, error) {
			asked.Store(slices.Clone(missing))
			out := map[string]item{}
			for _, k := range missing {
				out[k] = item{Name: "from a"}
			}
			return out, nil
		})
		if err != nil {
			got = nil
		}
		done <- got
	}()
	testutil.Eventually(t, testutil.Wait, "a to load y", func() bool { return asked.Load() != nil })
	require.Equal(t, []string{"y"}, asked.Load())
	close(bl.release)
	got := testutil.Recv(t, done, "GetOrLoadMany")
	require.Equal(t, map[string]item{"x": {ID: 7, Name: "from b"}, "y": {Name: "from a"}}, got)
	require.NoError(t, testutil.Recv(t, fromB, "b's GetOrLoad").err)
	require.Equal(t, int32(1), bl.calls.Load())
}

// Redis down: every missing key goes to the loader, and the values are
// kept locally.
func TestGetOrLoadManyRedisDown(t *testing.T) {
	m, _ := miniPool(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	c := newCache(t, p, "manydown", Config[item]{})
	ctx := context.Background()
	m.Close()
	var calls atomic.Int32
	load := func(_ context.Context, missing []string) (map[string]item, error) {
		calls.Add(1)
		out := map[string]item{}
		for _, k := range missing {
			out[k] = item{Name: k}
		}
		return out, nil
	}
	got, err := c.GetOrLoadMany(ctx, []string{"a", "b"}, load)
	require.NoError(t, err)
	require.Len(t, got, 2)
	got, err = c.GetOrLoadMany(ctx, []string{"a", "b"}, load)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, int32(1), calls.Load(), "kept locally")
}

// Closing the group while a batch loads cancels it and releases its locks.
func TestCloseDuringGetOrLoadMany(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "manyclose", Config[item]{})
	g := lifecycle.New()
	require.NoError(t, c.Start(g))
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoadMany(context.Background(), []string{"a", "b"}, func(ctx context.Context, _ []string) (map[string]item, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		})
		errc <- err
	}()
	testutil.Recv(t, started, "the batch to load")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
	require.ErrorIs(t, testutil.Recv(t, errc, "GetOrLoadMany"), ErrClosed)
	require.False(t, m.Exists(c.lockKey("a")))
	require.Zero(t, c.Stats().LoadErrors)
	_, err := c.GetMany(context.Background(), []string{"a"})
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, c.SetMany(context.Background(), map[string]item{"a": {}}, time.Minute), ErrClosed)
}

func TestBulk_Mini(t *testing.T) {
	m := redistest.Mini(t)
	testBulk(t, backend{cfg: pool.Config{Addrs: []string{m.Addr()}}}, "bulk")
}

func TestBulk_Server(t *testing.T) {
	testBulk(t, serverBackend(redistest.Server(t)), "bulk")
}

// testBulk: SetMany invalidates the other instances' copies, GetMany reads
// them back in one round trip, and 4 instances x 4 callers of
// GetOrLoadMany on the same 50 cold keys load each key once in all.
func testBulk(t *testing.T, b backend, name string) {
	const instances, callers = 4, 4
	caches := make([]*Cache[item], instances)
	pools := make([]*pool.Pool, instances)
	for i := range caches {
		pools[i] = b.newPool(t)
		caches[i] = newCache(t, pools[i], name, Config[item]{})
		started(t, caches[i])
	}
	waitSubscribed(t, caches)
	ctx := context.Background()
	keys := keysN("k", 50)
	values := map[string]item{}
	for i, k := range keys {
		values[k] = item{ID: i}
	}
	require.NoError(t, caches[0].SetMany(ctx, values, time.Minute))
	got, err := caches[1].GetMany(ctx, keys)
	require.NoError(t, err)
	require.Equal(t, values, got)
	values["k1"] = item{ID: -1}
	require.NoError(t, caches[0].SetMany(ctx, map[string]item{"k1": {ID: -1}}, time.Minute))
	testutil.Eventually(t, testutil.Wait, "instance 1 to drop its copy", func() bool {
		v, err := caches[1].Get(ctx, "k1")
		return err == nil && v.ID == -1
	})
	require.NoError(t, pools[2].Client().Ping(ctx).Err()) // a connection's set-up commands are round trips too
	trips := countTrips(pools[2])
	got, err = caches[2].GetMany(ctx, keys)
	require.NoError(t, err)
	require.Equal(t, values, got)
	require.Equal(t, int32(1), trips.n.Load(), "one round trip for 50 keys")

	cold := keysN("cold", 50)
	var mu sync.Mutex
	loaded := map[string]int{}
	load := func(_ context.Context, missing []string) (map[string]item, error) {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]item{}
		for _, k := range missing {
			loaded[k]++
			out[k] = item{Name: k}
		}
		return out, nil
	}
	var wg sync.WaitGroup
	var bad atomic.Int32
	for _, c := range caches {
		for range callers {
			wg.Go(func() {
				got, err := c.GetOrLoadMany(ctx, cold, load)
				if err != nil || len(got) != len(cold) {
					bad.Add(1)
				}
			})
		}
	}
	wg.Wait()
	require.Zero(t, bad.Load())
	require.Len(t, loaded, len(cold))
	for k, n := range loaded {
		require.Equal(t, 1, n, "key %s loaded once in all", k)
	}
}

// Without a load slot GetOrLoadMany still returns what Redis holds, and
// ErrTooManyLoads for the rest.
func TestGetOrLoadManyWithoutALoadSlot(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "manyslots", Config[item]{MaxLoads: 1})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "have", item{ID: 1}, time.Minute))
	c.dropLocal("have")
	bl := newBlockingLoader(item{})
	other := loadInBackground(c, "other", bl.load)
	testutil.Recv(t, bl.started, "the other load")
	got, err := c.GetOrLoadMany(ctx, []string{"have", "x"}, func(context.Context, []string) (map[string]item, error) {
		t.Error("the loader ran without a slot")
		return nil, nil
	})
	require.ErrorIs(t, err, ErrTooManyLoads)
	require.Equal(t, map[string]item{"have": {ID: 1}}, got)
	close(bl.release)
	require.NoError(t, testutil.Recv(t, other, "the other load").err)
	require.Equal(t, uint64(1), c.Stats().LoadsRefused)
}

// Every key a bulk write stores locally stays there, also when several
// share a shard of the local tier: each store marks its shard changed, and
// a batch's own stores must not count as a change made meanwhile.
func TestBulkWritesKeepEveryKeyLocally(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "keepall", Config[item]{})
	ctx := context.Background()
	keys := keysN("k", 64)
	values := map[string]item{}
	for i, k := range keys {
		values[k] = item{ID: i}
	}
	require.NoError(t, c.SetMany(ctx, values, time.Minute))
	load := func(_ context.Context, missing []string) (map[string]item, error) {
		out := map[string]item{}
		for _, k := range missing {
			out[k] = item{Name: k}
		}
		return out, nil
	}
	cold := keysN("cold", 64)
	_, err := c.GetOrLoadMany(ctx, cold, load)
	require.NoError(t, err)
	trips := countTrips(p)
	got, err := c.GetMany(ctx, append(keys, cold...))
	require.NoError(t, err)
	require.Len(t, got, 128)
	require.Zero(t, trips.n.Load(), "all 128 keys local")

	m.Close() // the values of a batch loaded without Redis too
	down := keysN("down", 64)
	_, err = c.GetOrLoadMany(ctx, down, load)
	require.NoError(t, err)
	got, err = c.GetMany(ctx, down)
	require.NoError(t, err)
	require.Len(t, got, 64)
}

// A Set that lands while a batch loads wins over the batch's value of that
// key, with the lock and with Config.NoLock (whose batch reads with MGET
// and writes with SET NX).
func TestSetDuringGetOrLoadManyWins(t *testing.T) {
	for _, noLock := range []bool{false, true} {
		t.Run(fmt.Sprint("NoLock=", noLock), func(t *testing.T) {
			m, p := miniPool(t)
			c := newCache(t, p, "setwins", Config[item]{NoLock: noLock})
			ctx := context.Background()
			got, err := c.GetOrLoadMany(ctx, []string{"a", "b"}, func(ctx context.Context, missing []string) (map[string]item, error) {
				require.Equal(t, []string{"a", "b"}, missing)
				if err := c.Set(ctx, "a", item{ID: 99}, time.Minute); err != nil {
					return nil, err
				}
				return map[string]item{"a": {ID: 1}, "b": {ID: 2}}, nil
			})
			require.NoError(t, err)
			require.Equal(t, map[string]item{"a": {ID: 1}, "b": {ID: 2}}, got, "the callers get what was loaded")
			for k, want := range map[string]int{"a": 99, "b": 2} {
				v, err := c.Get(ctx, k)
				require.NoError(t, err)
				require.Equal(t, want, v.ID, "local %s", k)
				c.dropLocal(k)
				v, err = c.Get(ctx, k)
				require.NoError(t, err)
				require.Equal(t, want, v.ID, "Redis %s", k)
			}
			require.False(t, m.Exists(c.lockKey("b")))
			require.Equal(t, uint64(2), c.Stats().Misses)
		})
	}
}
