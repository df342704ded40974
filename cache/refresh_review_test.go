package cache

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// The refresh stamp at its edges: the stamp is the Redis TTL below which a
// value is due, ttl - ceil(ttl*RefreshAfter/TTL), never negative, exact for
// huge TTLs; a stamp of 0 (a window under a millisecond) means never due.
func TestStampEdges(t *testing.T) {
	_, p := miniPool(t)
	const largest = time.Duration(math.MaxInt64/int64(time.Millisecond)) * time.Millisecond
	for _, tc := range []struct {
		name          string
		ttl, after    time.Duration // Config.TTL, Config.RefreshAfter
		written, want time.Duration // the value's Redis TTL, its stamp
	}{
		{"Config.TTL", time.Hour, 45 * time.Minute, time.Hour, 15 * time.Minute},
		{"1ms: never due", time.Hour, 45 * time.Minute, time.Millisecond, 0},
		{"2ms", 2 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, time.Millisecond},
		{"RefreshAfter 1ms below TTL", time.Hour, time.Hour - time.Millisecond, time.Hour, time.Millisecond},
		{"RefreshAfter 1ns below TTL: never due", time.Hour, time.Hour - 1, time.Hour, 0},
		{"per-call TTL far below", time.Hour, 30 * time.Minute, 10 * time.Millisecond, 5 * time.Millisecond},
		{"per-call TTL far above", time.Minute, 30 * time.Second, 365 * 24 * time.Hour, 365 * 12 * time.Hour},
		{"per-call TTL rounds the due time up", time.Hour, 20 * time.Minute, 10 * time.Millisecond, 6 * time.Millisecond},
		{"largest TTL", largest, largest / 2, largest, largest - largest/2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, p, "stamp", Config[[]byte]{TTL: tc.ttl, RefreshAfter: tc.after})
			e, err := c.encode("k", []byte("v"))
			require.NoError(t, err)
			c.stamp(&e, tc.written)
			require.Equal(t, tc.want, e.staleBelow)
			got, ok := readStamp(e.data)
			require.True(t, ok)
			require.Equal(t, tc.want, got, "the stamp written")
			d, err := c.decode("k", e.data)
			require.NoError(t, err)
			require.Equal(t, []byte("v"), d.v)
			// PTTL -1 (no expiry) and -2 (gone) are never due; the stamp
			// itself is.
			require.False(t, isStale(d, -1))
			require.False(t, isStale(d, -2))
			require.Equal(t, tc.want > 0, isStale(d, tc.want))
			require.False(t, isStale(d, tc.want+time.Millisecond))
			// A local copy read at 0 with the full TTL is due after the
			// refresh window, never before, and never wraps.
			at := c.refreshDue(0, tc.written, d).at
			if tc.want == 0 {
				require.Equal(t, int64(neverRefresh), at)
			} else {
				require.Equal(t, int64(tc.written-tc.want), at)
			}
			if tc.written-tc.want > 10 {
				require.Equal(t, int64(neverRefresh), c.refreshDue(math.MaxInt64-10, tc.written, d).at, "saturates")
			}
		})
	}
}

// A value whose per-call TTL is far below Config.TTL has a refresh window
// as short (here 500ms, against RefreshAfter's 30 minutes): a refresh that
// failed is tried again within that window, not a quarter of Config's
// window (7.5 minutes) later, after the value has expired and its readers
// have waited for a load.
func TestFailedRefreshOfAShortTTLIsRetriedBeforeItExpires(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "shortretry", Config[item]{TTL: time.Hour, RefreshAfter: 30 * time.Minute, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	load := func(ctx context.Context) (item, time.Duration, error) {
		v, err := l.load(ctx)
		return v, time.Second, err
	}
	_, err := c.GetOrLoadTTL(ctx, "k", load)
	require.NoError(t, err)
	l.failWith(errors.New("database down"))
	clk.advance(600 * time.Millisecond) // due: 400ms left
	v, err := c.GetOrLoadTTL(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	testutil.Eventually(t, testutil.Wait, "the refresh to fail", func() bool { return c.Stats().RefreshErrors == 1 })
	clk.advance(150 * time.Millisecond) // 250ms left
	v, err = c.GetOrLoadTTL(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	testutil.Eventually(t, testutil.Wait, "a second try before the value expires", func() bool { return l.calls.Load() == 3 })
}

// failScript fails every call of one script (by its source or SHA).
type failScript struct{ sha, src string }

func (h *failScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) > 1 && (args[1] == h.sha || args[1] == h.src) && cmd.Name() != "script" {
			err := errors.New("READONLY You can't write against a read only replica")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (h *failScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A refresh whose loaded value cannot be written to Redis failed as a
// refresh: the fleet still has the old value, due, so it counts in
// Stats.RefreshErrors, as documented ("the loader or Redis").
func TestRefreshWhoseWriteFailsCountsAsAnError(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "writefails", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	p.Client().AddHook(&failScript{sha: c.scripts.fill.Hash(), src: fillScript})
	clk.advance(time.Minute)
	_, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the refresh to end", func() bool {
		st := c.Stats()
		return st.Refreshes == 1 && st.LoadsInFlight == 0
	})
	require.Equal(t, int32(2), l.calls.Load())
	require.Equal(t, uint64(1), c.Stats().RefreshErrors)
}

// A refresh whose lock script ran but whose reply was lost releases the
// lock it may hold: otherwise no instance refreshes the key until LockTTL,
// and should the value expire meanwhile, every reader waits on that lock.
func TestRefreshReleasesTheLockOfALostLockReply(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "refreshlost", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	p.Client().AddHook(&lostReply{sha: c.refresh.lock.Hash(), src: refreshScript, err: errors.New("i/o timeout")})
	clk.advance(time.Minute)
	_, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the refresh to fail", func() bool { return c.Stats().RefreshErrors == 1 })
	testutil.Eventually(t, testutil.Wait, "the refresh to end", func() bool { return c.Stats().LoadsInFlight == 0 })
	require.False(t, m.Exists(c.lockKey("k")), "the lock is left for LockTTL (%s)", c.cfg.LockTTL)
}

// A GetOrLoad answered by the local tier allocates nothing, as Get does,
// with refresh-ahead off and on (a copy that is not due).
func TestGetOrLoadLocalHitAllocatesNothing(t *testing.T) {
	_, p := miniPool(t)
	for _, cfg := range []Config[item]{{}, {TTL: time.Hour, RefreshAfter: 30 * time.Minute}} {
		c := newCache(t, p, "hitallocs", cfg)
		ctx := context.Background()
		require.NoError(t, c.Set(ctx, "k", item{ID: 1}, time.Hour))
		load := func(context.Context) (item, error) { return item{}, nil }
		allocs := testing.AllocsPerRun(1000, func() {
			if v, err := c.GetOrLoad(ctx, "k", load); err != nil || v.ID != 1 {
				panic("not a hit")
			}
		})
		require.Zero(t, allocs, "RefreshAfter %s", cfg.RefreshAfter)
	}
}
