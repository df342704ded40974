package ratelimit

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
	"github.com/bounded-go/bounded/pool"
)

// semAddrs runs test on miniredis and on a real server, for the tests that
// need a pool of their own (hooks, settings).
func semAddrs(t *testing.T, test func(t *testing.T, addr string)) {
	t.Run("miniredis", func(t *testing.T) { test(t, redistest.Mini(t).Addr()) })
	t.Run("server", func(t *testing.T) { test(t, redistest.Server(t).Addr()) })
}

// beforePipeline is a hook that calls fn once, before the first pipeline
// with a script in it (a Semaphore's renewal) is sent.
type beforePipeline struct {
	fn   func(ctx context.Context)
	done atomic.Bool
}

func (h *beforePipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *beforePipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *beforePipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if n := c.Name(); (n == "evalsha" || n == "eval") && h.done.CompareAndSwap(false, true) {
				h.fn(ctx)
				break
			}
		}
		return next(ctx, cmds)
	}
}

// TestSemaphoreReleaseRacingRenewalIsNotLost: a holder releases while the
// renewal batch that still lists its lease is on its way, and another
// process takes the freed slot before the batch runs. The renewal then
// finds the lease gone and the key full: that is no lost lease (its holder
// gave it back), so neither Stats.Lost nor the "runs past its slot" warning.
func TestSemaphoreReleaseRacingRenewalIsNotLost(t *testing.T) {
	semAddrs(t, func(t *testing.T, addr string) {
		ctx := context.Background()
		cfg := SemaphoreConfig{Limit: 1, LeaseTTL: time.Minute} // the test renews by hand
		other, _ := newSem(t, newPool(t, pool.Config{Addrs: []string{addr}}), "race", cfg)
		var release func()
		var otherErr error
		hook := &beforePipeline{fn: func(context.Context) {
			release()
			_, otherErr = other.TryAcquire(ctx, "k")
		}}
		a, _ := newSem(t, newPool(t, pool.Config{Addrs: []string{addr}, Hooks: []redis.Hook{hook}}), "race", cfg)
		var err error
		release, err = a.TryAcquire(ctx, "k")
		require.NoError(t, err)
		a.renew(ctx)
		require.True(t, hook.done.Load(), "the renewal ran")
		require.NoError(t, otherErr, "the released slot went to the other process")
		require.Zero(t, a.Stats().Lost, "a released lease is not a lost one")
		require.Equal(t, uint64(1), a.Stats().Renewals)
	})
}

// TestSemaphoreRenewalRemovesAbandonedFirst: a key full of this process's
// own abandoned lease (a release that failed, an acquire that timed out
// after Redis ran it) while its live lease is gone (a failover that lost
// it): the renewal frees the abandoned slot before it takes the live
// lease back, instead of reporting the live one lost and leaving the key
// empty while its holder works.
func TestSemaphoreRenewalRemovesAbandonedFirst(t *testing.T) {
	semAddrs(t, func(t *testing.T, addr string) {
		ctx := context.Background()
		p := newPool(t, pool.Config{Addrs: []string{addr}})
		a, _ := newSem(t, p, "order", SemaphoreConfig{Limit: 1, LeaseTTL: time.Minute}) // the test renews by hand
		release, err := a.TryAcquire(ctx, "k")
		require.NoError(t, err)
		live := holders(t, p, a, "k")
		require.Len(t, live, 1)
		_, err = p.Client().TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Del(ctx, a.Key("k"))
			pipe.ZAdd(ctx, a.Key("k"), redisZ(time.Now().Add(time.Minute), "abandoned"))
			return nil
		})
		require.NoError(t, err)
		a.abandon("k", "abandoned")
		a.renew(ctx)
		require.Zero(t, a.Stats().Lost)
		require.Equal(t, uint64(1), a.Stats().Readmitted)
		require.Equal(t, live, holders(t, p, a, "k"), "the live lease holds the slot")
		release()
		require.Empty(t, holders(t, p, a, "k"))
	})
}

// TestSemaphoreHugeWaitRecheck: a WaitRecheck so long that three of them
// overflow a Duration (the waiting mark's PX) is accepted by NewSemaphore,
// so it must work: a waiter waits (here until its deadline) instead of
// failing every attempt with ErrSemaphoreUnavailable.
func TestSemaphoreHugeWaitRecheck(t *testing.T) {
	semAddrs(t, func(t *testing.T, addr string) {
		ctx := context.Background()
		s, _ := newSem(t, newPool(t, pool.Config{Addrs: []string{addr}}), "recheck",
			SemaphoreConfig{Limit: 1, WaitRecheck: 1 << 62})
		release, err := s.TryAcquire(ctx, "k")
		require.NoError(t, err)
		defer release()
		dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err = s.Acquire(dctx, "k")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, s.Stats().RedisErrors)
	})
}

// TestSemaphoreNamesDoNotShareKeys: two Semaphores with different names
// never share a key's slots, whatever the names and keys: "a" with key
// "b:c" and "a:b" with key "c" would, so a name with ':' is refused.
func TestSemaphoreNamesDoNotShareKeys(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	a, err := NewSemaphore(p, "a", SemaphoreConfig{Limit: 1})
	require.NoError(t, err)
	ab, err := NewSemaphore(p, "a:b", SemaphoreConfig{Limit: 1})
	if err == nil {
		require.NotEqual(t, a.Key("b:c"), ab.Key("c"))
	}
	require.ErrorIs(t, err, ErrInvalidConfig)
}

// TestSemaphoreMixedLeaseTTLs: Semaphores of one name whose LeaseTTLs
// differ (a rolling deploy that shortens it) share the keys' sets; a
// write by the short one must not shorten a set's TTL below the long
// one's live lease, or the set vanishes with that lease in it and the
// fleet admits more than Limit until the long one's next renewal.
func TestSemaphoreMixedLeaseTTLs(t *testing.T) {
	semAddrs(t, func(t *testing.T, addr string) {
		ctx := context.Background()
		long, _ := newSem(t, newPool(t, pool.Config{Addrs: []string{addr}}), "mixed", SemaphoreConfig{Limit: 2, LeaseTTL: time.Minute})
		short, _ := newSem(t, newPool(t, pool.Config{Addrs: []string{addr}}), "mixed", SemaphoreConfig{Limit: 2, LeaseTTL: MinLeaseTTL})
		release, err := long.TryAcquire(ctx, "k")
		require.NoError(t, err)
		defer release()
		r, err := short.TryAcquire(ctx, "k")
		require.NoError(t, err)
		r()
		ttl, err := long.p.Client().PTTL(ctx, long.Key("k")).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 30*time.Second, "the set outlives the long lease in it")
	})
}

// pipelineSizes records the number of commands of every pipeline.
type pipelineSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (h *pipelineSizes) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipelineSizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipelineSizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.sizes = append(h.sizes, len(cmds))
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// TestSemaphoreRenewalInChunks: a process holding many leases renews them
// in pipelines of at most renewChunk leases, each with its own Timeout.
// One pipeline for all could not end within Timeout past some ten thousand
// keys (20,000 took 300ms on a real server, against the 250ms default): it
// failed every time, and every lease lapsed. A key with more leases than
// a chunk is split too, its removals first. (A real server only:
// miniredis's Lua takes seconds for these thousand scripts.)
func TestSemaphoreRenewalInChunks(t *testing.T) {
	func(t *testing.T, addr string) {
		ctx := context.Background()
		sizes := &pipelineSizes{}
		p := newPool(t, pool.Config{Addrs: []string{addr}, Hooks: []redis.Hook{sizes}})
		s, _ := newSem(t, p, "chunks", SemaphoreConfig{Limit: 3 * renewChunk, LeaseTTL: time.Hour}) // the test renews by hand
		const keys = 5*renewChunk/2 + 1
		var releases []func()
		for i := range keys {
			r, err := s.TryAcquire(ctx, fmt.Sprint("k", i))
			require.NoError(t, err)
			releases = append(releases, r)
		}
		for range 2*renewChunk + 1 { // one key with more leases than a chunk
			r, err := s.TryAcquire(ctx, "big")
			require.NoError(t, err)
			releases = append(releases, r)
		}
		// Every lease ends in a minute: the renewal makes it an hour.
		soon := float64(time.Now().Add(time.Minute).UnixMicro())
		for i := range keys {
			k := s.Key(fmt.Sprint("k", i))
			require.NoError(t, p.Client().ZAddXX(ctx, k, redis.Z{Score: soon, Member: holders(t, p, s, fmt.Sprint("k", i))[0]}).Err())
		}
		for _, tok := range holders(t, p, s, "big") {
			require.NoError(t, p.Client().ZAddXX(ctx, s.Key("big"), redis.Z{Score: soon, Member: tok}).Err())
		}
		s.abandon("big", "gone") // a removal in the same key

		sizes.mu.Lock()
		sizes.sizes = nil
		sizes.mu.Unlock()
		s.renew(ctx)
		require.Equal(t, uint64(1), s.Stats().Renewals)
		require.Zero(t, s.Stats().RedisErrors)
		sizes.mu.Lock()
		got := slices.Clone(sizes.sizes)
		sizes.mu.Unlock()
		require.GreaterOrEqual(t, len(got), 2, "several pipelines")
		for _, n := range got {
			require.LessOrEqual(t, n, renewChunk, "pipelines %v", got)
		}
		later := float64(time.Now().Add(30 * time.Minute).UnixMicro())
		for _, key := range append([]string{"big"}, func() (ks []string) {
			for i := range keys {
				ks = append(ks, fmt.Sprint("k", i))
			}
			return ks
		}()...) {
			zs, err := p.Client().ZRangeWithScores(ctx, s.Key(key), 0, -1).Result()
			require.NoError(t, err)
			for _, z := range zs {
				require.Greater(t, z.Score, later, "%s's lease %v renewed", key, z.Member)
			}
		}
		for _, r := range releases {
			r()
		}
	}(t, redistest.Server(t).Addr())
}

// TestRenewChunks: chunks hold at most renewChunk leases and no empty
// item; every lease is in one, in order, a split key's removals first.
func TestRenewChunks(t *testing.T) {
	toks := func(p string, n int) []string {
		var v []string
		for i := range n {
			v = append(v, fmt.Sprint(p, i))
		}
		return v
	}
	for _, batch := range [][]renewItem{
		{{key: "a", renew: toks("r", renewChunk)}},
		{{key: "a", renew: toks("r", renewChunk)}, {key: "b", renew: toks("r", 1)}},
		{{key: "a", renew: toks("r", renewChunk-1)}, {key: "b", renew: toks("r", 2), remove: toks("x", 1)}},
		{{key: "a", renew: toks("r", 2*renewChunk+3), remove: toks("x", renewChunk+5)}},
		{{key: "a", remove: toks("x", 3)}, {key: "b", renew: toks("r", 3*renewChunk)}, {key: "c", renew: toks("r", 1)}},
	} {
		var want, got []string
		for _, it := range batch {
			for _, tok := range it.remove {
				want = append(want, it.key+"-"+tok)
			}
			for _, tok := range it.renew {
				want = append(want, it.key+"+"+tok)
			}
		}
		for _, c := range renewChunks(batch) {
			n := 0
			for _, it := range c {
				require.NotZero(t, len(it.renew)+len(it.remove), "an empty item")
				n += len(it.renew) + len(it.remove)
				for _, tok := range it.remove {
					got = append(got, it.key+"-"+tok)
				}
				for _, tok := range it.renew {
					got = append(got, it.key+"+"+tok)
				}
			}
			require.LessOrEqual(t, n, renewChunk)
			require.NotZero(t, n)
		}
		require.Equal(t, want, got)
	}
	require.Empty(t, renewChunks(nil))
}

// TestSemaphoreReleaseRacingRenewalNoScriptCluster: on a Redis Cluster
// one master lost its scripts (a restart, a failover) while another still
// has them, and a release's ZREM runs just before the renewal, whose
// script re-admits the released lease on the master that has the script.
// Only the scripts that got NOSCRIPT are sent again: sending the whole
// pipeline again hid the re-admission (the second run found the lease
// present) and left a released lease holding a slot for LeaseTTL.
func TestSemaphoreReleaseRacingRenewalNoScriptCluster(t *testing.T) {
	c := redistest.Cluster(t)
	ctx := context.Background()
	var release func()
	var flush *redistest.Redis
	var hookErr error
	hook := &beforePipeline{fn: func(context.Context) {
		release()
		_, hookErr = flush.Do(ctx, "SCRIPT", "FLUSH")
	}}
	hook.done.Store(true) // armed below
	require.NoError(t, c.Flush(ctx))
	p := newPool(t, pool.Config{Addrs: c.Addrs(), ClusterMode: true, Hooks: []redis.Hook{hook}})
	s, _ := newSem(t, p, "noscript", SemaphoreConfig{Limit: 2, LeaseTTL: time.Minute}) // the test renews by hand
	// Two keys on different masters.
	keyA := "a"
	mA, err := c.MasterOf(ctx, s.Key(keyA))
	require.NoError(t, err)
	var keyB string
	for i := range 1000 {
		k := fmt.Sprint("b", i)
		m, err := c.MasterOf(ctx, s.Key(k))
		require.NoError(t, err)
		if m.Addr() != mA.Addr() {
			keyB, flush = k, m
			break
		}
	}
	require.NotEmpty(t, keyB)
	release, err = s.TryAcquire(ctx, keyA)
	require.NoError(t, err)
	releaseB, err := s.TryAcquire(ctx, keyB)
	require.NoError(t, err)
	defer releaseB()
	s.renew(ctx) // loads the renewal script on both masters
	require.Equal(t, uint64(1), s.Stats().Renewals)

	hook.done.Store(false)
	s.renew(ctx)
	require.True(t, hook.done.Load(), "the renewal ran")
	require.NoError(t, hookErr)
	require.Empty(t, holders(t, p, s, keyA), "the released lease is not held")
	require.Len(t, holders(t, p, s, keyB), 1)
}
