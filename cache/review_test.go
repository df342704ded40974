package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A load whose lock was taken over meanwhile (it expired and another
// instance took it, here simulated by replacing the token) neither writes
// its value nor releases the other instance's lock: the fill script
// compares tokens. Its callers still get the value; it is not kept locally.
func TestStaleFillLeavesANewerLockAlone(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "takeover", Config[item]{})
	l := newBlockingLoader(item{Name: "stale"})
	got := loadInBackground(c, "k", l.load)
	testutil.Recv(t, l.started, "the loader to start")
	lock := c.lockKey("k")
	require.True(t, m.Exists(lock), "the loader holds the lock")
	require.NoError(t, m.Set(lock, "other-instance:1"))
	close(l.release)
	r := testutil.Recv(t, got, "GetOrLoad to return")
	require.NoError(t, r.err)
	require.Equal(t, "stale", r.v.Name)
	v, err := m.Get(lock)
	require.NoError(t, err)
	require.Equal(t, "other-instance:1", v, "the newer holder's lock was released by the stale load")
	require.False(t, m.Exists(c.RedisKey("k")), "a load that lost its lock wrote its value")
	_, hit, _ := c.fromLocal("k")
	require.False(t, hit, "a load that lost its lock kept its value locally")
}

// A Delete made by this very instance while its load runs wins locally on
// every path a load keeps its answer by (the gen check): under the lock,
// with NoLock (SET NX writes the old value to Redis, as documented, but the
// local copy must not survive), and kept locally only because the lock
// check failed; for a value and for a negative answer.
func TestOwnDeleteDuringALoadKeepsNothingLocally(t *testing.T) {
	type mode struct {
		name    string
		cfg     Config[item]
		failing string // the command that fails once (the lock check), if any
	}
	modes := []mode{
		{name: "lock", cfg: Config[item]{NegativeTTL: time.Minute}},
		{name: "NoLock", cfg: Config[item]{NoLock: true, NegativeTTL: time.Minute}},
		{name: "lock check fails", cfg: Config[item]{NegativeTTL: time.Minute}, failing: "evalsha"},
	}
	for _, md := range modes {
		for _, negative := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/negative=%v", md.name, negative), func(t *testing.T) {
				_, p := miniPool(t)
				ctx := context.Background()
				c := newCache(t, p, "owndel", md.cfg)
				if md.failing != "" {
					p.Client().AddHook(&failFirst{name: md.failing, err: fmt.Errorf("injected: %w", pool.ErrLaneExhausted)})
				}
				l := newBlockingLoader(item{Name: "old"})
				load := l.load
				if negative {
					load = func(ctx context.Context) (item, error) {
						if _, err := l.load(ctx); err != nil {
							return item{}, err
						}
						return item{}, ErrNotFound
					}
				}
				got := loadInBackground(c, "k", load)
				testutil.Recv(t, l.started, "the loader to start")
				require.NoError(t, c.Delete(ctx, "k"))
				close(l.release)
				r := testutil.Recv(t, got, "GetOrLoad to return")
				if negative {
					require.ErrorIs(t, r.err, ErrNotFound)
				} else {
					require.NoError(t, r.err)
				}
				_, hit, _ := c.fromLocal("k")
				require.False(t, hit, "an answer loaded across this instance's Delete was kept locally")
			})
		}
	}
}

// afterEach calls fn with every command and its error, after it ran.
type afterEach struct {
	fn func(cmd redis.Cmder, err error)
}

func (h afterEach) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h afterEach) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.fn(cmd, err)
		return err
	}
}
func (h afterEach) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// isScriptOn reports whether cmd ran a script (EVALSHA, or EVAL after
// NOSCRIPT) whose keys include key.
func isScriptOn(cmd redis.Cmder, key string) bool {
	if cmd.Name() != "evalsha" && cmd.Name() != "eval" {
		return false
	}
	return slices.Contains(cmd.Args(), any(key))
}

// Stats.LockWaits counts a load this instance waited for because another
// instance held the lock, also when its first lock check found a value it
// could not decode (deleted; the second check then found the lock held).
func TestLockWaitsCountsAWaitAfterAnUndecodableValue(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "undecwait", Config[item]{NoLocal: true, NoInvalidation: true})
	vk, lk := c.RedisKey("k"), c.lockKey("k")
	// The flight's GET misses; then an older deploy writes a value this
	// one cannot decode, which the first lock check finds and the flight
	// deletes; then another instance takes the lock, which the second lock
	// check finds held.
	var gets, lockChecks atomic.Int32
	p.Client().AddHook(afterEach{fn: func(cmd redis.Cmder, err error) {
		switch {
		case err != nil && !errors.Is(err, redis.Nil):
		case cmd.Name() == "get" && gets.Add(1) == 1:
			_ = m.Set(vk, "\x09not ours")
		case isScriptOn(cmd, lk):
			lockChecks.Add(1)
		case isScriptOn(cmd, vk): // the delete of the undecodable value
			_ = m.Set(lk, "other:1")
			m.SetTTL(lk, time.Minute)
		}
	}})
	got := loadInBackground(c, "k", func(context.Context) (item, error) { return item{Name: "mine"}, nil })
	testutil.Eventually(t, testutil.Wait, "the flight to find the lock held", func() bool { return lockChecks.Load() >= 2 })
	require.Equal(t, uint64(1), c.Stats().DecodeErrors)
	e, err := c.encode("k", item{Name: "theirs"})
	require.NoError(t, err)
	require.NoError(t, m.Set(vk, string(e.data))) // the other instance's value
	r := testutil.Recv(t, got, "GetOrLoad to return")
	require.NoError(t, r.err)
	require.Equal(t, "theirs", r.v.Name, "it waited for the other instance's value")
	st := c.Stats()
	require.Zero(t, st.Loads)
	require.Equal(t, uint64(1), st.LockWaits, "it waited for another instance's load")
}

// TTLJitter shortens the TTL of every write, a load's value and its
// negative answer included (with or without the lock), and the local copy
// of what a load wrote lives exactly as long as the jittered Redis TTL: not
// past it.
func TestTTLJitterOnLoadedValues(t *testing.T) {
	for _, noLock := range []bool{false, true} {
		for _, negative := range []bool{false, true} {
			t.Run(fmt.Sprintf("NoLock=%v/negative=%v", noLock, negative), func(t *testing.T) {
				m, p := miniPool(t)
				ctx := context.Background()
				clk := testutil.NewClock()
				c := newCache(t, p, "jit", Config[item]{TTL: time.Second, NegativeTTL: time.Second, TTLJitter: 0.5,
					NoLock: noLock, LocalTTL: time.Hour, Now: clk.Now})
				load := func(context.Context) (item, error) {
					if negative {
						return item{}, ErrNotFound
					}
					return item{Name: "v"}, nil
				}
				seen := map[time.Duration]bool{}
				for i := range 30 {
					k := fmt.Sprint("k", i)
					_, err := c.GetOrLoad(ctx, k, load)
					if negative {
						require.ErrorIs(t, err, ErrNotFound)
					} else {
						require.NoError(t, err)
					}
					ttl := m.TTL(c.RedisKey(k))
					require.GreaterOrEqual(t, ttl, 500*time.Millisecond, k)
					require.LessOrEqual(t, ttl, time.Second, k)
					seen[ttl] = true
					clk.Advance(ttl - time.Millisecond)
					_, hit, _ := c.fromLocal(k)
					require.True(t, hit, "%s: the local copy is gone before its Redis TTL (%s)", k, ttl)
					clk.Advance(time.Millisecond)
					_, hit, _ = c.fromLocal(k)
					require.False(t, hit, "%s: the local copy outlives its Redis TTL (%s)", k, ttl)
				}
				require.Greater(t, len(seen), 5, "jittered TTLs differ")
			})
		}
	}
}
