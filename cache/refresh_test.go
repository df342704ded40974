package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// versionLoader returns item{ID: n} on its n-th call. While gate is set,
// each call waits for it (or for its context) first; fail makes calls fail.
type versionLoader struct {
	calls   atomic.Int32
	started chan struct{} // one send per call, if there is room
	mu      sync.Mutex
	gate    chan struct{}
	fail    error
	ctxErr  atomic.Value
}

func newVersionLoader() *versionLoader {
	return &versionLoader{started: make(chan struct{}, 100)}
}

// hold makes the next calls wait until the returned function runs.
func (l *versionLoader) hold() (release func()) {
	g := make(chan struct{})
	l.mu.Lock()
	l.gate = g
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.gate = nil
			l.mu.Unlock()
			close(g)
		})
	}
}

func (l *versionLoader) failWith(err error) {
	l.mu.Lock()
	l.fail = err
	l.mu.Unlock()
}

func (l *versionLoader) load(ctx context.Context) (item, error) {
	n := l.calls.Add(1)
	select {
	case l.started <- struct{}{}:
	default:
	}
	l.mu.Lock()
	gate, fail := l.gate, l.fail
	l.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			l.ctxErr.Store(fmt.Sprint(context.Cause(ctx)))
			return item{}, ctx.Err()
		}
	}
	if fail != nil {
		return item{}, fail
	}
	return item{ID: int(n)}, nil
}

// refreshClock moves the local tiers' clock and miniredis's TTLs together.
type refreshClock struct {
	*testutil.Clock
	m *miniredis.Miniredis
}

func (c refreshClock) advance(d time.Duration) {
	c.Advance(d)
	c.m.FastForward(d)
}

func TestRefreshAfterConfig(t *testing.T) {
	_, p := miniPool(t)
	for _, tc := range []struct {
		cfg  Config[item]
		want string
	}{
		{Config[item]{RefreshAfter: -time.Second}, "Config.RefreshAfter must not be negative"},
		{Config[item]{TTL: time.Minute, RefreshAfter: time.Minute}, "must be below Config.TTL"},
		{Config[item]{RefreshAfter: 2 * time.Hour}, "must be below Config.TTL (1h0m0s)"},
		{Config[item]{RefreshAfter: time.Minute, NoLock: true}, "needs the cross-instance lock"},
		{Config[item]{MaxRefreshes: 2}, "Config.RefreshAfter is not set"},
		{Config[item]{RefreshAfter: time.Minute, MaxRefreshes: 5, MaxLoads: 4}, "must be at most Config.MaxLoads"},
		{Config[item]{RefreshAfter: time.Minute, MaxRefreshes: -1}, "Config.MaxRefreshes must not be negative"},
	} {
		_, err := New(p, "cfg", tc.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
	c := newCache(t, p, "cfg", Config[item]{RefreshAfter: time.Minute})
	require.Equal(t, DefaultMaxRefreshes, c.cfg.MaxRefreshes)
	c = newCache(t, p, "cfg", Config[item]{RefreshAfter: time.Minute, MaxLoads: 2})
	require.Equal(t, 2, c.cfg.MaxRefreshes, "never more refreshers than load slots")
}

// A due value is returned at once, by every caller, while one refresh runs;
// the refreshed value replaces it; the next refresh is due RefreshAfter
// later.
func TestRefreshAheadServesTheOldValueWhileItRefreshes(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "ra", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	v, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)

	raw, err := m.Get(c.RedisKey("k"))
	require.NoError(t, err)
	require.Equal(t, kindStamped, raw[0])
	require.Equal(t, uint64(9*time.Minute/time.Millisecond), binary.BigEndian.Uint64([]byte(raw[1:9])), "due once its TTL is down to TTL-RefreshAfter")

	clk.advance(time.Minute - time.Millisecond)
	for range 10 {
		v, err = c.GetOrLoad(ctx, "k", l.load)
		require.NoError(t, err)
		require.Equal(t, 1, v.ID)
	}
	require.Equal(t, int32(1), l.calls.Load(), "not due before RefreshAfter")

	clk.advance(time.Millisecond)
	release := l.hold()
	defer release()
	for range 100 {
		v, err = c.GetOrLoad(ctx, "k", l.load)
		require.NoError(t, err, "a due value is served while it refreshes")
		require.Equal(t, 1, v.ID)
	}
	testutil.Recv(t, l.started, "the first load")
	testutil.Recv(t, l.started, "the refresh")
	require.Equal(t, 1, c.Stats().LoadsInFlight, "%+v", c.Stats())
	release()
	testutil.Eventually(t, testutil.Wait, "the refresh to end", func() bool { return c.Stats().LoadsInFlight == 0 })
	v, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 2, v.ID, "the refreshed value replaced the old one locally")
	require.Equal(t, int32(2), l.calls.Load(), "one refresh for 100 reads")
	st := c.Stats()
	require.Equal(t, uint64(1), st.Refreshes)
	require.Equal(t, uint64(2), st.Loads)
	require.Equal(t, uint64(1), st.LoaderWaits, "only the first load made a caller wait")
	require.Zero(t, st.RefreshErrors)
	pttl := m.TTL(c.RedisKey("k"))
	require.Equal(t, 10*time.Minute, pttl, "the refresh wrote a full TTL")

	clk.advance(time.Minute - time.Millisecond)
	_, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, int32(2), l.calls.Load(), "the next refresh is due RefreshAfter after this one")
}

// Get has no loader: it serves a due value and asks for no refresh, and
// leaves the refresh to the next GetOrLoad.
func TestGetDoesNotClaimARefresh(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "get", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", item{ID: 7}, 10*time.Minute))
	clk.advance(2 * time.Minute)
	v, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 7, v.ID)
	l := newVersionLoader()
	v, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 7, v.ID, "a Set's value is served and refreshed like a loaded one")
	testutil.Eventually(t, testutil.Wait, "the refresh", func() bool { return c.Stats().Refreshes == 1 && c.Stats().LoadsInFlight == 0 })
	require.Equal(t, int32(1), l.calls.Load())
}

// TestRefreshAheadFleet_Mini: 4 instances read one hot key from many
// goroutines, on one injected clock. Each period, while the refresh's
// loader is held, every read still returns at once (none waits for the
// loader: a read that did would time out); the loader runs once per period
// in all; Stats.LoaderWaits stays at the first load's one.
//
// With LocalTTL above RefreshAfter the reads find the local copies due;
// with LocalTTL equal to it the copies expire first and the reads find the
// values due in Redis.
func TestRefreshAheadFleet_Mini(t *testing.T) {
	for _, localTTL := range []time.Duration{time.Hour, time.Minute} {
		t.Run(fmt.Sprint("LocalTTL=", localTTL), func(t *testing.T) { testRefreshAheadFleetMini(t, localTTL) })
	}
}

func testRefreshAheadFleetMini(t *testing.T, localTTL time.Duration) {
	m := redistest.Mini(t)
	clk := refreshClock{testutil.NewClock(), m}
	const instances, readers, periods = 4, 8, 5
	caches := make([]*Cache[item], instances)
	for i := range caches {
		p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
		caches[i] = newCache(t, p, "fleet", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, LocalTTL: localTTL, Now: clk.Now})
		started(t, caches[i])
	}
	waitSubscribed(t, caches)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := caches[0].GetOrLoad(ctx, "hot", l.load)
	require.NoError(t, err)
	// Every instance reads until it holds version want.
	readAll := func(want int) (failures int32) {
		var bad atomic.Int32
		var wg sync.WaitGroup
		for _, c := range caches {
			for range readers {
				wg.Go(func() {
					for range 50 {
						rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
						v, err := c.GetOrLoad(rctx, "hot", l.load)
						cancel()
						if err != nil || v.ID < want {
							bad.Add(1)
						}
					}
				})
			}
		}
		wg.Wait()
		return bad.Load()
	}
	require.Zero(t, readAll(1))
	for period := 1; period <= periods; period++ {
		clk.advance(time.Minute)
		release := l.hold()
		require.Zero(t, readAll(period), "period %d: reads while the refresh's loader is held", period)
		release()
		testutil.Eventually(t, testutil.Wait, "every instance to hold the new value", func() bool {
			for _, c := range caches {
				if c.Stats().LoadsInFlight > 0 {
					return false
				}
				if v, err := c.GetOrLoad(ctx, "hot", l.load); err != nil || v.ID != period+1 {
					return false
				}
			}
			return true
		})
	}
	require.Equal(t, int32(1+periods), l.calls.Load(), "one loader call per period in all")
	var st Stats
	for _, c := range caches {
		s := c.Stats()
		st.LoaderWaits += s.LoaderWaits
		st.Refreshes += s.Refreshes
		st.RefreshErrors += s.RefreshErrors
	}
	require.Equal(t, uint64(1), st.LoaderWaits, "no caller waited for a loader after the first load")
	require.Equal(t, uint64(periods), st.Refreshes)
	require.Zero(t, st.RefreshErrors)
}

// startedListening starts c and waits for its subscriber to listen: its
// first subscription flushes the local tier, which would otherwise land
// at some point of the test.
func startedListening(t *testing.T, c *Cache[item]) {
	t.Helper()
	started(t, c)
	if !c.cfg.NoInvalidation {
		waitSubscribed(t, []*Cache[item]{c})
	}
}

func waitSubscribed(t *testing.T, caches []*Cache[item]) {
	t.Helper()
	testutil.Eventually(t, testutil.Wait, "every subscriber to listen", func() bool {
		for _, c := range caches {
			if !c.Stats().Subscribed {
				return false
			}
		}
		return true
	})
}

// TestRefreshAheadFleet_Server: the same on a real server, whose TTLs run
// on its own clock, so time is real and short: a hot key read for 2.5s
// with RefreshAfter 500ms is loaded once and refreshed about once per
// 500ms in all, and no read after the first waits for a loader.
func TestRefreshAheadFleet_Server(t *testing.T) {
	testRefreshAheadFleet(t, serverBackend(redistest.Server(t)), "fleet", 2500*time.Millisecond)
}

// testRefreshAheadFleet is TestRefreshAheadFleet_Server on backend b (the
// cluster suite runs it too, shorter).
func testRefreshAheadFleet(t *testing.T, b backend, name string, run time.Duration) {
	const instances, readers = 4, 4
	const refreshAfter = 500 * time.Millisecond
	caches := make([]*Cache[item], instances)
	for i := range caches {
		caches[i] = newCache(t, b.newPool(t), name, Config[item]{TTL: 5 * time.Second, RefreshAfter: refreshAfter})
		started(t, caches[i])
	}
	waitSubscribed(t, caches)
	ctx := context.Background()
	var calls atomic.Int32
	load := func(ctx context.Context) (item, error) {
		n := calls.Add(1)
		t := time.NewTimer(5 * time.Millisecond) // a database round trip
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return item{ID: int(n)}, nil
	}
	_, err := caches[0].GetOrLoad(ctx, "hot", load)
	require.NoError(t, err)
	deadline := time.Now().Add(run)
	var bad, reads atomic.Int32
	var wg sync.WaitGroup
	for _, c := range caches {
		for range readers {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					if _, err := c.GetOrLoad(ctx, "hot", load); err != nil {
						bad.Add(1)
					}
					reads.Add(1)
				}
			})
		}
	}
	wg.Wait()
	require.Zero(t, bad.Load())
	var st Stats
	for _, c := range caches {
		s := c.Stats()
		st.LoaderWaits += s.LoaderWaits
		st.Refreshes += s.Refreshes
	}
	t.Logf("%d reads, %d loader calls, %d refreshes", reads.Load(), calls.Load(), st.Refreshes)
	require.Equal(t, uint64(1), st.LoaderWaits, "no caller waited for a loader after the first load")
	// Each period lasts RefreshAfter plus the time to notice and load; on
	// a loaded machine a little more. The bound that matters is the upper.
	periods := int32(run / refreshAfter)
	require.GreaterOrEqual(t, calls.Load(), 1+periods/2, "refreshed about once per RefreshAfter")
	require.LessOrEqual(t, calls.Load(), 1+periods, "and not more, fleet-wide")
}

// A refresh whose loader fails leaves the old value serving until its TTL,
// is counted, and is tried again a retry interval later; once the TTL is
// gone the next GetOrLoad loads (and waits) as for any miss.
func TestFailedRefreshServesTheOldValueUntilTheTTL(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "fail", Config[item]{TTL: 10 * time.Minute, RefreshAfter: 2 * time.Minute, LocalTTL: time.Hour, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	l.failWith(errors.New("database down"))
	clk.advance(2 * time.Minute)
	v, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	testutil.Eventually(t, testutil.Wait, "the refresh to fail", func() bool { return c.Stats().RefreshErrors == 1 })
	require.False(t, m.Exists(c.lockKey("k")), "a failed refresh releases the lock")
	for range 10 {
		v, err = c.GetOrLoad(ctx, "k", l.load)
		require.NoError(t, err)
		require.Equal(t, 1, v.ID, "the old value serves on")
	}
	require.Equal(t, int32(2), l.calls.Load(), "not retried before the retry interval")
	clk.advance(c.refreshRetry())
	_, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the retry to fail", func() bool { return c.Stats().RefreshErrors == 2 })
	require.Equal(t, int32(3), l.calls.Load())

	clk.advance(8 * time.Minute) // past the hard TTL
	l.failWith(nil)
	v, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 4, v.ID, "an expired value is loaded as a miss")
	st := c.Stats()
	require.Equal(t, uint64(2), st.LoaderWaits)
	require.Equal(t, uint64(2), st.RefreshErrors)
	require.Equal(t, uint64(2), st.LoadErrors)
}

func (c *Cache[V]) refreshRetry() time.Duration { return time.Duration(c.refresh.retry) }

// Redis down when a refresh is due: the local copy serves until it
// expires, the refresh fails fast and is counted, and nothing waits.
func TestRefreshWithRedisDown(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "down", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, LocalTTL: time.Hour, Now: clk.Now, NoInvalidation: true})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	clk.advance(time.Minute)
	m.Close()
	v, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	testutil.Eventually(t, testutil.Wait, "the refresh to fail", func() bool { return c.Stats().RefreshErrors == 1 })
	require.Equal(t, int32(1), l.calls.Load(), "no lock, no load")
	require.NotZero(t, c.Stats().RedisErrors)
	v, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID, "the local copy serves on")
}

// Closing the group while a refresh's loader runs cancels the loader,
// releases the lock, waits for the refresher and counts no error; the old
// value stays in Redis.
func TestCloseMidRefresh(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "close", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	g := lifecycle.New()
	require.NoError(t, c.Start(g))
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Recv(t, l.started, "the first load")
	clk.advance(time.Minute)
	release := l.hold()
	defer release()
	_, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Recv(t, l.started, "the refresh")
	require.True(t, m.Exists(c.lockKey("k")))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(cctx))
	require.Contains(t, l.ctxErr.Load(), "closed", "Close cancelled the refresh's loader")
	require.False(t, m.Exists(c.lockKey("k")), "and released the lock")
	st := c.Stats()
	require.Zero(t, st.RefreshErrors)
	require.Zero(t, st.LoadErrors)
	require.Zero(t, st.LoadsInFlight)
	raw, err := m.Get(c.RedisKey("k"))
	require.NoError(t, err)
	e, err := c.decode("k", []byte(raw))
	require.NoError(t, err)
	require.Equal(t, 1, e.v.ID)
}

// Without Start nothing runs a refresh: due values serve until their TTL,
// and the skipped refreshes are counted.
func TestRefreshNeedsStart(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "unstarted", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	clk.advance(time.Minute)
	v, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	require.Equal(t, uint64(1), c.Stats().RefreshesSkipped)
	require.Equal(t, int32(1), l.calls.Load())
}

// A Set that lands while a refresh's loader runs wins: the refresh writes
// nothing.
func TestSetDuringARefreshWins(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "setwins", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Recv(t, l.started, "the first load")
	clk.advance(time.Minute)
	release := l.hold()
	_, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Recv(t, l.started, "the refresh")
	require.NoError(t, c.Set(ctx, "k", item{ID: 99}, time.Hour))
	release()
	testutil.Eventually(t, testutil.Wait, "the refresh to end", func() bool { return c.Stats().LoadsInFlight == 0 })
	v, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 99, v.ID)
	c.dropLocal("k")
	v, err = c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 99, v.ID, "in Redis too")
}

// Values written without a stamp (before RefreshAfter was turned on) are
// read as before and never refreshed; a stamped value cut short is a codec
// error.
func TestUnstampedAndBrokenStamps(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	ctx := context.Background()
	old := newCache(t, p, "stamps", Config[item]{})
	require.NoError(t, old.Set(ctx, "k", item{ID: 5}, time.Hour))
	c := newCache(t, p, "stamps", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Now: clk.Now})
	startedListening(t, c)
	l := newVersionLoader()
	clk.advance(50 * time.Minute)
	v, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 5, v.ID)
	v, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 5, v.ID)
	require.Zero(t, l.calls.Load())
	require.Zero(t, c.Stats().RefreshesSkipped)

	m.Set(c.RedisKey("short"), "\x03\x00\x01")
	_, err = c.Get(ctx, "short")
	require.ErrorIs(t, err, ErrCodec)
	require.ErrorContains(t, err, "too short for its stamp")
}

// GetOrLoadTTL: the loader's TTL is the value's Redis TTL; zero means
// Config.TTL; a negative one fails the load and caches nothing. With
// RefreshAfter the value is due after ttl*RefreshAfter/TTL.
func TestGetOrLoadTTL(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "ttl", Config[item]{TTL: time.Hour, RefreshAfter: 30 * time.Minute, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	withTTL := func(ttl time.Duration, calls *atomic.Int32) func(context.Context) (item, time.Duration, error) {
		return func(context.Context) (item, time.Duration, error) {
			n := calls.Add(1)
			return item{ID: int(n)}, ttl, nil
		}
	}
	var calls atomic.Int32
	_, err := c.GetOrLoadTTL(ctx, "short", withTTL(10*time.Minute, &calls))
	require.NoError(t, err)
	require.Equal(t, 10*time.Minute, m.TTL(c.RedisKey("short")))
	_, err = c.GetOrLoadTTL(ctx, "default", withTTL(0, &calls))
	require.NoError(t, err)
	require.Equal(t, time.Hour, m.TTL(c.RedisKey("default")))

	var neg atomic.Int32
	_, err = c.GetOrLoadTTL(ctx, "neg", withTTL(-time.Second, &neg))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "negative TTL")
	require.False(t, m.Exists(c.RedisKey("neg")))
	require.False(t, m.Exists(c.lockKey("neg")), "the lock was released")
	_, err = c.GetOrLoadTTL(ctx, "neg", withTTL(-time.Second, &neg))
	require.Error(t, err)
	require.Equal(t, int32(2), neg.Load(), "nothing was cached")
	require.Equal(t, uint64(2), c.Stats().LoadErrors)

	// Due after half of each value's own TTL.
	clk.advance(5 * time.Minute)
	_, err = c.GetOrLoadTTL(ctx, "short", withTTL(10*time.Minute, &calls))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the short value's refresh", func() bool { return c.Stats().Refreshes == 1 && c.Stats().LoadsInFlight == 0 })
	_, err = c.GetOrLoadTTL(ctx, "default", withTTL(0, &calls))
	require.NoError(t, err)
	require.Equal(t, int32(3), calls.Load(), "the 1h value is not due after 5m")

	_, err = c.GetOrLoadTTL(ctx, "k", nil)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = c.GetOrLoadTTL(ctx, "", withTTL(0, &calls))
	require.ErrorIs(t, err, ErrInvalid)
}

// Refreshes need a load slot: with MaxLoads taken by loads in progress a
// due refresh is skipped (counted) and the old value serves.
func TestRefreshSkippedWithoutALoadSlot(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "slots", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, LocalTTL: time.Hour, MaxLoads: 1, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Recv(t, l.started, "the first load")
	bl := newBlockingLoader(item{})
	other := loadInBackground(c, "other", bl.load) // takes the one slot
	testutil.Recv(t, bl.started, "the other load")
	clk.advance(time.Minute)
	v, err := c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	testutil.Eventually(t, testutil.Wait, "the refresh to be skipped", func() bool { return c.Stats().RefreshesSkipped == 1 })
	close(bl.release)
	require.NoError(t, testutil.Recv(t, other, "the other load").err)
	require.Equal(t, int32(1), l.calls.Load())
	clk.advance(c.refreshRetry())
	_, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the retry", func() bool { return c.Stats().Refreshes == 1 })
}

// A loader's TTL near the largest Duration ("forever") neither wraps nor
// is refused.
func TestGetOrLoadTTLHuge(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "huge", Config[item]{RefreshAfter: time.Minute})
	v, err := c.GetOrLoadTTL(context.Background(), "k", func(context.Context) (item, time.Duration, error) {
		return item{ID: 1}, time.Duration(math.MaxInt64), nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	require.Greater(t, m.TTL(c.RedisKey("k")), 100*365*24*time.Hour)
	v, err = c.Get(context.Background(), "k")
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
}

// GetOrLoadMany asks for the refresh of the due values it returns, each
// through a one-key call of its loader.
func TestGetOrLoadManyRefreshesDueValues(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "manyra", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, LocalTTL: time.Hour, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	var mu sync.Mutex
	var calls [][]string
	version := 0
	load := func(_ context.Context, missing []string) (map[string]item, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, missing)
		version++
		out := map[string]item{}
		for _, k := range missing {
			out[k] = item{ID: version}
		}
		return out, nil
	}
	got, err := c.GetOrLoadMany(ctx, []string{"a", "b"}, load)
	require.NoError(t, err)
	require.Equal(t, map[string]item{"a": {ID: 1}, "b": {ID: 1}}, got)
	clk.advance(time.Minute)
	got, err = c.GetOrLoadMany(ctx, []string{"a", "b"}, load)
	require.NoError(t, err)
	require.Equal(t, map[string]item{"a": {ID: 1}, "b": {ID: 1}}, got, "due values are returned at once")
	testutil.Eventually(t, testutil.Wait, "both refreshes", func() bool { return c.Stats().Refreshes == 2 && c.Stats().LoadsInFlight == 0 })
	mu.Lock()
	require.Len(t, calls, 3)
	require.ElementsMatch(t, [][]string{{"a"}, {"b"}}, calls[1:], "one key per refresh")
	mu.Unlock()
	got, err = c.GetMany(ctx, []string{"a", "b"})
	require.NoError(t, err)
	require.Greater(t, got["a"].ID, 1)
	require.Greater(t, got["b"].ID, 1)
}

// A refresh writes the value with the tags of the GetOrLoad that asked for
// it: InvalidateTag still finds the refreshed key.
func TestRefreshKeepsTheTags(t *testing.T) {
	m, p := miniPool(t)
	clk := refreshClock{testutil.NewClock(), m}
	c := newCache(t, p, "ratags", Config[item]{TTL: 10 * time.Minute, RefreshAfter: time.Minute, LocalTTL: time.Hour, Now: clk.Now})
	startedListening(t, c)
	ctx := context.Background()
	l := newVersionLoader()
	_, err := c.GetOrLoad(ctx, "k", l.load, Tags("user:1"))
	require.NoError(t, err)
	clk.advance(time.Minute)
	_, err = c.GetOrLoad(ctx, "k", l.load, Tags("user:1"))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the refresh", func() bool { return c.Stats().Refreshes == 1 && c.Stats().LoadsInFlight == 0 })
	v, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 2, v.ID)
	require.NoError(t, c.InvalidateTag(ctx, "user:1"))
	require.False(t, m.Exists(c.RedisKey("k")), "the refreshed value was tagged")
	_, err = c.Get(ctx, "k")
	require.ErrorIs(t, err, ErrNotFound)
}
