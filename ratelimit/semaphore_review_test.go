package ratelimit

import (
	"context"
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
