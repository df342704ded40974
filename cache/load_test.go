package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// blockingLoader counts its calls and holds each until release is closed.
type blockingLoader struct {
	calls   atomic.Int32
	started chan struct{} // closed by the first call
	release chan struct{}
	once    sync.Once
	ctxErr  atomic.Value // the load context's error when it was released
	value   item
}

func newBlockingLoader(v item) *blockingLoader {
	return &blockingLoader{started: make(chan struct{}), release: make(chan struct{}), value: v}
}

func (l *blockingLoader) load(ctx context.Context) (item, error) {
	l.calls.Add(1)
	l.once.Do(func() { close(l.started) })
	select {
	case <-l.release:
		l.ctxErr.Store(fmt.Sprint(ctx.Err()))
		return l.value, nil
	case <-ctx.Done():
		l.ctxErr.Store(fmt.Sprint(ctx.Err()))
		return item{}, ctx.Err()
	}
}

func TestGetOrLoadOneLoaderCallFor100Callers(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "sf", Config[item]{})
	l := newBlockingLoader(item{ID: 9})
	var ready, done sync.WaitGroup
	var failures atomic.Int32
	for range 100 {
		ready.Add(1)
		done.Go(func() {
			ready.Done()
			v, err := c.GetOrLoad(context.Background(), "k", l.load)
			if err != nil || v.ID != 9 {
				failures.Add(1)
			}
		})
	}
	ready.Wait()
	testutil.Recv(t, l.started, "the loader to start")
	close(l.release)
	done.Wait()
	require.Zero(t, failures.Load())
	require.Equal(t, int32(1), l.calls.Load())
	st := c.Stats()
	require.Equal(t, uint64(1), st.Loads)
	require.Equal(t, uint64(99), st.LoadWaiters+st.LocalHits, "every other caller shared the load or hit its result")
	require.Equal(t, uint64(1), st.Misses)
}

func TestGetOrLoadWaiterHonoursItsDeadline(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "deadline", Config[item]{})
	l := newBlockingLoader(item{ID: 3})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "gave up waiting for the load")
	require.Equal(t, 1, c.Stats().LoadsInFlight, "the load goes on without the caller")

	close(l.release)
	testutil.Eventually(t, testutil.Wait, "the load to finish", func() bool { return c.Stats().LoadsInFlight == 0 })
	require.Equal(t, "<nil>", l.ctxErr.Load(), "the caller's deadline did not reach the loader")
	require.True(t, m.Exists("{c:deadline}:k:k"), "the value was written to Redis")
	require.False(t, m.Exists("{c:deadline}:l:k"), "the lock was released")

	v, err := c.GetOrLoad(context.Background(), "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 3, v.ID)
	require.Equal(t, int32(1), l.calls.Load())
}

type ctxKey struct{}

func TestFirstCallerCancellingDoesNotCancelTheLoad(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "cancel", Config[item]{})
	l := newBlockingLoader(item{ID: 5})
	var sawValue atomic.Value
	load := func(ctx context.Context) (item, error) {
		sawValue.Store(ctx.Value(ctxKey{}))
		return l.load(ctx)
	}

	first, cancelFirst := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "first"))
	firstErr := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(first, "k", load)
		firstErr <- err
	}()
	testutil.Recv(t, l.started, "the loader to start")
	second := make(chan error, 1)
	var got item
	go func() {
		var err error
		got, err = c.GetOrLoad(context.Background(), "k", load)
		second <- err
	}()
	cancelFirst()
	require.ErrorIs(t, testutil.Recv(t, firstErr, "the first caller"), context.Canceled)
	close(l.release)
	require.NoError(t, testutil.Recv(t, second, "the second caller"))
	require.Equal(t, 5, got.ID)
	require.Equal(t, "<nil>", l.ctxErr.Load(), "the load's context was never cancelled")
	require.Equal(t, "first", sawValue.Load(), "the load sees the first caller's values")
	require.Equal(t, int32(1), l.calls.Load())
}

func TestLoaderErrorIsNotCached(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "err", Config[item]{})
	boom := errors.New("db down")
	var calls atomic.Int32
	load := func(context.Context) (item, error) { calls.Add(1); return item{}, boom }
	for range 2 {
		_, err := c.GetOrLoad(context.Background(), "k", load)
		require.ErrorIs(t, err, boom)
		require.ErrorContains(t, err, `cache "err": load "k": db down`)
	}
	require.Equal(t, int32(2), calls.Load(), "a failure is not remembered")
	require.Empty(t, m.Keys(), "no value, and the lock was released")
	st := c.Stats()
	require.Equal(t, uint64(2), st.LoadErrors)
	require.Zero(t, st.LocalEntries)
}

func TestLoadTimeoutBoundsTheLoader(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "slow", Config[item]{LoadTimeout: 30 * time.Millisecond})
	_, err := c.GetOrLoad(context.Background(), "k", func(ctx context.Context) (item, error) {
		<-ctx.Done()
		return item{}, ctx.Err()
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, uint64(1), c.Stats().LoadErrors)
}

func TestNegativeCaching(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	var calls atomic.Int32
	notFound := func(context.Context) (item, error) {
		calls.Add(1)
		return item{}, fmt.Errorf("user 7: %w", ErrNotFound)
	}

	off := newCache(t, p, "neg-off", Config[item]{})
	for range 2 {
		_, err := off.GetOrLoad(ctx, "7", notFound)
		require.ErrorIs(t, err, ErrNotFound)
	}
	require.Equal(t, int32(2), calls.Load(), "without NegativeTTL every miss loads")
	require.Empty(t, m.Keys())

	calls.Store(0)
	a := newCache(t, p, "neg", Config[item]{NegativeTTL: 30 * time.Second})
	b := newCache(t, p, "neg", Config[item]{NegativeTTL: 30 * time.Second})
	_, err := a.GetOrLoad(ctx, "7", notFound)
	require.ErrorIs(t, err, ErrNotFound)
	raw, _ := m.Get("{c:neg}:k:7")
	require.Equal(t, notFoundMarker, raw)
	require.Equal(t, 30*time.Second, m.TTL("{c:neg}:k:7"))

	_, err = a.GetOrLoad(ctx, "7", notFound)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = a.Get(ctx, "7")
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, uint64(2), a.Stats().LocalHits, "answered by the local negative entry")

	_, err = b.GetOrLoad(ctx, "7", notFound)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = b.Get(ctx, "7")
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, uint64(1), b.Stats().RedisHits)
	require.Equal(t, int32(1), calls.Load(), "one load for every instance")

	// A Set replaces the negative entry everywhere it is told.
	require.NoError(t, a.Set(ctx, "7", item{ID: 7}, time.Minute))
	v, err := a.Get(ctx, "7")
	require.NoError(t, err)
	require.Equal(t, 7, v.ID)
}

func TestGetOrLoadPrefersRedis(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	a := newCache(t, p, "pref", Config[item]{})
	b := newCache(t, p, "pref", Config[item]{})
	require.NoError(t, a.Set(ctx, "k", item{ID: 1}, time.Minute))
	v, err := b.GetOrLoad(ctx, "k", func(context.Context) (item, error) {
		t.Error("loader called for a value in Redis")
		return item{}, nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	require.Equal(t, uint64(1), b.Stats().RedisHits)

	// The value written by a load carries Config.TTL.
	c := newCache(t, p, "ttl", Config[item]{TTL: 1500 * time.Millisecond})
	_, err = c.GetOrLoad(ctx, "k", func(context.Context) (item, error) { return item{ID: 2}, nil })
	require.NoError(t, err)
	require.Equal(t, 1500*time.Millisecond, m.TTL("{c:ttl}:k:k"))
}

func TestGetOrLoadWithoutLock(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "nolock", Config[item]{NoLock: true})
	l := newBlockingLoader(item{ID: 4})
	close(l.release)
	v, err := c.GetOrLoad(context.Background(), "k", l.load)
	require.NoError(t, err)
	require.Equal(t, 4, v.ID)
	require.Equal(t, []string{"{c:nolock}:k:k"}, m.Keys(), "no lock key was ever written")
}

func TestGroupCloseCancelsLoads(t *testing.T) {
	_, p := miniPool(t)
	c := newCache(t, p, "close", Config[item]{NoInvalidation: true})
	g := lifecycle.New()
	require.NoError(t, c.Start(g))
	l := newBlockingLoader(item{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(context.Background(), "k", l.load)
		errc <- err
	}()
	testutil.Recv(t, l.started, "the loader to start")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
	require.Equal(t, "context canceled", l.ctxErr.Load(), "Close cancelled the load and waited for it")
	err := testutil.Recv(t, errc, "GetOrLoad to return")
	require.ErrorIs(t, err, ErrClosed, "the cache closing is why the load ended")
	require.NotErrorIs(t, err, context.Canceled, "the caller's context was not cancelled")
	st := c.Stats()
	require.Zero(t, st.LoadsInFlight)
	require.Zero(t, st.LoadErrors, "a load cut short by Close is not a failed load")

	_, err = c.GetOrLoad(context.Background(), "k", l.load)
	require.ErrorIs(t, err, ErrClosed)
	require.Equal(t, int32(1), l.calls.Load())
}

// TestCloseDuringAFlightIsNotRedisDown: a flight whose context Close
// cancels while it reads Redis or waits for another instance's lock returns
// ErrClosed. It neither takes the failed read for Redis being down (and
// calls the loader without Redis) nor counts it as a Redis error.
func TestCloseDuringAFlightIsNotRedisDown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, m *miniredis.Miniredis, p *pool.Pool, c *Cache[item]) (inFlight func() bool)
	}{
		{"reading Redis", func(t *testing.T, _ *miniredis.Miniredis, p *pool.Pool, _ *Cache[item]) func() bool {
			h := &blockReads{reading: make(chan struct{})}
			p.Client().AddHook(h)
			return func() bool {
				select {
				case <-h.reading:
					return true
				default:
					return false
				}
			}
		}},
		{"waiting for another instance's lock", func(t *testing.T, m *miniredis.Miniredis, _ *pool.Pool, c *Cache[item]) func() bool {
			require.NoError(t, m.Set(c.lockKey("k"), "another instance"))
			m.SetTTL(c.lockKey("k"), time.Minute)
			return func() bool { return c.Stats().LockWaits == 1 }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, p := miniPool(t)
			c := newCache(t, p, "closing", Config[item]{NoInvalidation: true})
			g := lifecycle.New()
			require.NoError(t, c.Start(g))
			inFlight := tc.setup(t, m, p, c)
			var calls atomic.Int32
			errc := make(chan error, 1)
			go func() {
				_, err := c.GetOrLoad(context.Background(), "k", func(context.Context) (item, error) {
					calls.Add(1)
					return item{ID: 1}, nil
				})
				errc <- err
			}()
			testutil.Eventually(t, testutil.Wait, "the flight to be under way", inFlight)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			require.NoError(t, g.Close(ctx))
			err := testutil.Recv(t, errc, "GetOrLoad to return")
			require.ErrorIs(t, err, ErrClosed)
			require.NotErrorIs(t, err, context.Canceled, "the caller's context was not cancelled")
			require.Zero(t, calls.Load(), "the loader was not called as if Redis were down")
			st := c.Stats()
			require.Zero(t, st.RedisErrors, "Close is not a Redis error")
			require.Zero(t, st.Loads)
			require.True(t, p.Healthy())
		})
	}
}

// blockReads holds the cache's read pipeline (GET, PTTL) until the call's
// context ends, and closes reading when it starts holding one.
type blockReads struct {
	reading chan struct{}
	once    sync.Once
}

func (h *blockReads) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *blockReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *blockReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "get" {
			return next(ctx, cmds)
		}
		h.once.Do(func() { close(h.reading) })
		<-ctx.Done()
		for _, c := range cmds {
			c.SetErr(ctx.Err())
		}
		return ctx.Err()
	}
}

func TestRedisDown(t *testing.T) {
	m, _ := miniPool(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	ctx := context.Background()
	c := newCache(t, p, "down", Config[item]{})
	require.NoError(t, c.Set(ctx, "cached", item{ID: 1}, time.Minute))

	m.Close()
	_, err := c.Get(ctx, "other") // the failure that marks Redis down
	require.Error(t, err)
	require.False(t, p.Healthy())

	before := p.Stats().Request.Dials
	var loads atomic.Int32
	for i := range 100 {
		v, err := c.Get(ctx, "cached")
		require.NoError(t, err, "a local hit serves without Redis")
		require.Equal(t, 1, v.ID)

		_, err = c.Get(ctx, "other")
		require.ErrorIs(t, err, pool.ErrUnavailable)

		key := fmt.Sprint("load-", i%10)
		v, err = c.GetOrLoad(ctx, key, func(context.Context) (item, error) {
			loads.Add(1)
			return item{ID: 2}, nil
		})
		require.NoError(t, err, "a miss goes to the loader")
		require.Equal(t, 2, v.ID)
	}
	require.Equal(t, int32(10), loads.Load(), "loaded values are kept locally while Redis is down")
	require.ErrorIs(t, c.Set(ctx, "k", item{}, time.Minute), pool.ErrUnavailable)
	require.ErrorIs(t, c.Delete(ctx, "cached"), pool.ErrUnavailable)
	_, err = c.Get(ctx, "cached")
	require.ErrorIs(t, err, pool.ErrUnavailable, "Delete dropped the local copy even though Redis failed")
	require.Equal(t, before, p.Stats().Request.Dials, "no call dialled Redis while it was marked down")
}

func TestStartRules(t *testing.T) {
	m, _ := miniPool(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, Blocking: pool.BlockingConfig{Size: 1}})
	a := newCache(t, p, "a", Config[item]{})
	b := newCache(t, p, "b", Config[item]{})
	quiet := newCache(t, p, "quiet", Config[item]{NoInvalidation: true})

	require.ErrorIs(t, a.Start(nil), ErrInvalid)
	g := lifecycle.New()
	require.NoError(t, a.Start(g))
	require.ErrorIs(t, a.Start(g), ErrAlreadyStarted)
	require.ErrorIs(t, a.Start(g), ErrStarted, "the deprecated name still matches")
	err := b.Start(g)
	require.ErrorIs(t, err, pool.ErrOverBudget)
	require.ErrorContains(t, err, "cache:a invalidation=1")
	require.NoError(t, quiet.Start(g), "no subscriber, no reservation")
	require.Equal(t, 1, p.Stats().Blocking.Reserved)

	testutil.Eventually(t, testutil.Wait, "the subscriber to listen", func() bool { return a.Stats().Subscribed })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
	require.Empty(t, g.Tasks())
	require.False(t, a.Stats().Subscribed)
	require.Zero(t, p.Stats().Blocking.Reserved, "the reservation went back to the pool")
	goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g2 := lifecycle.New()
	require.NoError(t, b.Start(g2), "the connection is free again")
	require.NoError(t, g2.Close(ctx))
}

func TestRedisDownStillOneLoadPerKey(t *testing.T) {
	m, _ := miniPool(t)
	p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
	c := newCache(t, p, "down-sf", Config[item]{})
	m.Close()
	_, err := c.Get(context.Background(), "x")
	require.Error(t, err)
	require.False(t, p.Healthy())

	l := newBlockingLoader(item{ID: 8})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range 50 {
		wg.Go(func() {
			if v, err := c.GetOrLoad(context.Background(), "k", l.load); err != nil || v.ID != 8 {
				bad.Add(1)
			}
		})
	}
	testutil.Recv(t, l.started, "the loader to start")
	close(l.release)
	wg.Wait()
	require.Zero(t, bad.Load())
	require.Equal(t, int32(1), l.calls.Load())
}

// A Set or Delete that lands while a load runs wins: the load may have read
// the data before the change they are about.
func TestWriteDuringLoadWins(t *testing.T) {
	for _, tc := range []struct {
		name   string
		noLock bool
		change func(c *Cache[item]) error
		want   string // what Redis holds after the load, "" for nothing
	}{
		{"set", false, func(c *Cache[item]) error { return c.Set(context.Background(), "k", item{Name: "set"}, time.Minute) }, "set"},
		{"delete", false, func(c *Cache[item]) error { return c.Delete(context.Background(), "k") }, ""},
		{"set without lock", true, func(c *Cache[item]) error { return c.Set(context.Background(), "k", item{Name: "set"}, time.Minute) }, "set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, p := miniPool(t)
			cfg := Config[item]{NoLock: tc.noLock}
			loader := newCache(t, p, "race", cfg)
			writer := newCache(t, p, "race", cfg)
			l := newBlockingLoader(item{Name: "loaded"})
			got := make(chan item, 1)
			go func() {
				v, _ := loader.GetOrLoad(context.Background(), "k", l.load)
				got <- v
			}()
			testutil.Recv(t, l.started, "the loader to start")
			require.NoError(t, tc.change(writer))
			close(l.release)
			require.Equal(t, "loaded", testutil.Recv(t, got, "GetOrLoad to return").Name, "the callers still get what the loader returned")
			if tc.want == "" {
				require.Empty(t, m.Keys(), "no value and no lock")
				require.Zero(t, loader.Stats().LocalEntries)
				return
			}
			raw, err := m.Get("{c:race}:k:k")
			require.NoError(t, err)
			require.Contains(t, raw, tc.want)
			v, err := loader.Get(context.Background(), "k")
			require.NoError(t, err)
			require.Equal(t, tc.want, v.Name, "the loaded value was not kept locally either")
		})
	}
}

// TestEveryMethodAfterCloseReturnsErrClosed: once the group the cache was
// started on has closed, every method that can fail does so with ErrClosed,
// at once, touching neither tier: a local hit does not serve (nobody tells
// the tier about writes any more) and Redis is not asked.
func TestEveryMethodAfterCloseReturnsErrClosed(t *testing.T) {
	m, p := miniPool(t)
	ctx := context.Background()
	c := newCache(t, p, "closed", Config[item]{NoInvalidation: true})
	g := lifecycle.New()
	require.NoError(t, c.Start(g))
	require.NoError(t, c.Set(ctx, "held", item{ID: 1}, time.Minute))
	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, g.Close(closeCtx))

	commands := m.CommandCount()
	loader := func(context.Context) (item, error) {
		t.Error("loader called after Close")
		return item{}, nil
	}
	for name, call := range map[string]func() error{
		"Get local hit":       func() error { _, err := c.Get(ctx, "held"); return err },
		"Get miss":            func() error { _, err := c.Get(ctx, "other"); return err },
		"GetOrLoad local hit": func() error { _, err := c.GetOrLoad(ctx, "held", loader); return err },
		"GetOrLoad miss":      func() error { _, err := c.GetOrLoad(ctx, "other", loader); return err },
		"Set":                 func() error { return c.Set(ctx, "held", item{ID: 2}, time.Minute) },
		"Delete":              func() error { return c.Delete(ctx, "held") },
		"Delete no keys":      func() error { return c.Delete(ctx) },
		"Start":               func() error { return c.Start(lifecycle.New()) },
	} {
		err := call()
		require.ErrorIs(t, err, ErrClosed, name)
		require.ErrorContains(t, err, `cache "closed"`, name)
	}
	require.Equal(t, commands, m.CommandCount(), "no call reached Redis")
	require.Equal(t, int64(1), c.Stats().LocalEntries, "nor changed the local tier")
}

// TestFailedWriteAfterInvalidationKeepsNothingLocally: when the Redis write
// after a load fails, the value is kept locally only if nothing invalidated
// the key while the loader ran; an invalidation then means the loader may
// have read data older than the change it announced.
func TestFailedWriteAfterInvalidationKeepsNothingLocally(t *testing.T) {
	for _, invalidated := range []bool{false, true} {
		t.Run(fmt.Sprint("invalidated=", invalidated), func(t *testing.T) {
			m, p := miniPool(t)
			c := newCache(t, p, "stale", Config[item]{})
			l := newBlockingLoader(item{Name: "loaded"})
			got, errc := make(chan item, 1), make(chan error, 1)
			go func() {
				v, err := c.GetOrLoad(context.Background(), "k", l.load)
				got <- v
				errc <- err
			}()
			testutil.Recv(t, l.started, "the loader to start")
			if invalidated {
				// Another instance changed the key while the loader ran.
				c.apply(keyMessages(c.id+1, opKeys, []string{"k"})[0])
			}
			m.SetError("ERR injected: the write fails")
			close(l.release)
			require.NoError(t, testutil.Recv(t, errc, "GetOrLoad to return"), "the value is good; only caching it failed")
			require.Equal(t, "loaded", testutil.Recv(t, got, "its value").Name)
			m.SetError("")

			v, ok, _ := c.fromLocal("k")
			if invalidated {
				require.False(t, ok, "a value loaded across an invalidation was kept locally: %+v", v)
				_, err := c.Get(context.Background(), "k")
				require.ErrorIs(t, err, ErrNotFound, "the next read goes to Redis")
				return
			}
			require.True(t, ok, "with nothing invalidated, the value is kept locally")
			require.Equal(t, "loaded", v.Name)
		})
	}
}

// TestMaxLoadsBoundsFlights: with Config.MaxLoads loads in progress, a
// GetOrLoad that would load (or wait for another instance's load) fails at
// once with ErrTooManyLoads and calls no loader, whether Redis is up or
// down; a value in Redis still serves; and a slot frees when a load ends.
func TestMaxLoadsBoundsFlights(t *testing.T) {
	for _, down := range []bool{false, true} {
		t.Run(fmt.Sprint("redis down=", down), func(t *testing.T) {
			m, _ := miniPool(t)
			p := newPool(t, pool.Config{Addrs: []string{m.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour})
			ctx := context.Background()
			c := newCache(t, p, "max", Config[item]{MaxLoads: 2})
			if !down {
				// A value in Redis only (another instance wrote it).
				other := newCache(t, p, "max", Config[item]{})
				require.NoError(t, other.Set(ctx, "in-redis", item{ID: 7}, time.Minute))
			} else {
				m.Close()
				_, err := c.Get(ctx, "x")
				require.Error(t, err)
				require.False(t, p.Healthy())
			}

			loaders := []*blockingLoader{newBlockingLoader(item{ID: 1}), newBlockingLoader(item{ID: 2})}
			errs := make(chan error, len(loaders))
			for i, l := range loaders {
				go func() {
					_, err := c.GetOrLoad(ctx, fmt.Sprint("slow-", i), l.load)
					errs <- err
				}()
				testutil.Recv(t, l.started, "the loader to start")
			}
			require.Equal(t, 2, c.Stats().LoadsInFlight)

			var calls atomic.Int32
			load := func(context.Context) (item, error) { calls.Add(1); return item{ID: 3}, nil }
			_, err := c.GetOrLoad(ctx, "third", load)
			require.ErrorIs(t, err, ErrTooManyLoads)
			require.ErrorContains(t, err, `cache "max": GetOrLoad "third"`)
			require.ErrorContains(t, err, "Config.MaxLoads is 2")
			require.Zero(t, calls.Load(), "no loader called")
			require.Equal(t, uint64(1), c.Stats().LoadsRefused)
			if !down {
				v, err := c.GetOrLoad(ctx, "in-redis", load)
				require.NoError(t, err, "a Redis hit needs no load slot")
				require.Equal(t, 7, v.ID)
			}

			close(loaders[0].release)
			require.NoError(t, testutil.Recv(t, errs, "a slow load to end"))
			v, err := c.GetOrLoad(ctx, "third", load)
			require.NoError(t, err, "the finished load gave its slot back")
			require.Equal(t, 3, v.ID)
			close(loaders[1].release)
			require.NoError(t, testutil.Recv(t, errs, "a slow load to end"))
			require.Zero(t, c.Stats().LoadsInFlight)
			require.Zero(t, len(c.loads.slots), "every slot given back")
		})
	}
}
