package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

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
