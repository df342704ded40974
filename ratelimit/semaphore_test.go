package ratelimit

import (
	"context"
	"errors"
	"fmt"
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

// newSem builds a Semaphore and starts it on a group of its own, closed
// at the end of the test (the returned close closes it sooner: a crash of
// its process, as far as renewals go). A zero Timeout becomes LeaseTTL/3:
// a loaded machine must not turn Redis's answers into errors.
func newSem(t *testing.T, p *pool.Pool, name string, cfg SemaphoreConfig) (*Semaphore, func()) {
	t.Helper()
	if cfg.Timeout == 0 {
		ttl := cfg.LeaseTTL
		if ttl == 0 {
			ttl = DefaultLeaseTTL
		}
		cfg.Timeout = ttl / 3
	}
	s, err := NewSemaphore(p, name, cfg)
	require.NoError(t, err)
	g := lifecycle.New()
	require.NoError(t, s.Start(g))
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
			defer cancel()
			require.NoError(t, g.Close(ctx))
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// holders returns the leases in key's set, expired ones included.
func holders(t *testing.T, p *pool.Pool, s *Semaphore, key string) []string {
	t.Helper()
	v, err := p.Client().ZRange(context.Background(), s.Key(key), 0, -1).Result()
	require.NoError(t, err)
	return v
}

// acquireAsync runs Acquire on its own goroutine; the result arrives on
// the channel.
type acquired struct {
	release func()
	err     error
}

func acquireAsync(ctx context.Context, s *Semaphore, key string) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		r, err := s.Acquire(ctx, key)
		ch <- acquired{r, err}
	}()
	return ch
}

func TestSemaphoreConfigErrors(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	for _, c := range []struct {
		name string
		cfg  SemaphoreConfig
		want string
	}{
		{"sem", SemaphoreConfig{}, "SemaphoreConfig.Limit must be between 1 and 1000000, got 0"},
		{"sem", SemaphoreConfig{Limit: -1}, "SemaphoreConfig.Limit must be between 1 and 1000000, got -1"},
		{"sem", SemaphoreConfig{Limit: MaxSemaphoreLimit + 1}, "got 1000001"},
		{"sem", SemaphoreConfig{Limit: 1, LeaseTTL: -time.Second}, "SemaphoreConfig.LeaseTTL must not be negative, got -1s"},
		{"sem", SemaphoreConfig{Limit: 1, LeaseTTL: time.Millisecond, Timeout: -1}, "SemaphoreConfig.Timeout must not be negative, got -1ns"},
		{"sem", SemaphoreConfig{Limit: 1, LeaseTTL: 99 * time.Millisecond}, "SemaphoreConfig.LeaseTTL must be at least 100ms, got 99ms"},
		{"sem", SemaphoreConfig{Limit: 1, MaxWaiters: -1}, "SemaphoreConfig.MaxWaiters must not be negative, got -1"},
		{"sem", SemaphoreConfig{Limit: 1, WaitRecheck: -1}, "SemaphoreConfig.WaitRecheck must not be negative"},
		{"sem", SemaphoreConfig{Limit: 1, WaitRecheck: time.Millisecond}, "SemaphoreConfig.WaitRecheck must be at least 10ms, got 1ms"},
		{"sem", SemaphoreConfig{Limit: 1, Timeout: time.Microsecond}, "SemaphoreConfig.Timeout must be at least 1ms, got 1µs"},
		{"sem", SemaphoreConfig{Limit: 1, LeaseTTL: time.Second, Timeout: 334 * time.Millisecond},
			"SemaphoreConfig.Timeout must be at most LeaseTTL/3 (333.333333ms), got 334ms"},
		{"", SemaphoreConfig{Limit: 1}, "semaphore name must not be empty"},
		{"a{b}", SemaphoreConfig{Limit: 1}, "must not contain '{' or '}'"},
		{"a:b", SemaphoreConfig{Limit: 1}, `semaphore name "a:b" must not contain ':'`},
		{strings.Repeat("n", 101), SemaphoreConfig{Limit: 1}, "is 101 bytes, the limit is 100"},
	} {
		_, err := NewSemaphore(p, c.name, c.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", c.cfg)
		require.ErrorContains(t, err, c.want)
	}
	_, err := NewSemaphore(nil, "sem", SemaphoreConfig{Limit: 1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "nil pool")

	// Defaults.
	s, err := NewSemaphore(p, "sem", SemaphoreConfig{Limit: 1})
	require.NoError(t, err)
	require.Equal(t, DefaultLeaseTTL, s.cfg.LeaseTTL)
	require.Equal(t, DefaultTimeout, s.cfg.Timeout)
	require.Equal(t, DefaultMaxWaiters, s.cfg.MaxWaiters)
	require.Equal(t, DefaultWaitRecheck, s.cfg.WaitRecheck)
	s, err = NewSemaphore(p, "sem", SemaphoreConfig{Limit: 1, LeaseTTL: MinLeaseTTL})
	require.NoError(t, err)
	require.Equal(t, MinLeaseTTL/3, s.cfg.Timeout, "the default Timeout fits in a third of a short LeaseTTL")

	// Not started, bad keys, bad Start.
	_, err = s.Acquire(context.Background(), "k")
	require.ErrorIs(t, err, ErrSemaphoreNotStarted)
	_, err = s.TryAcquire(context.Background(), "k")
	require.ErrorIs(t, err, ErrSemaphoreNotStarted)
	require.ErrorIs(t, s.Start(nil), ErrInvalidArgument)
	g := lifecycle.New()
	require.NoError(t, s.Start(g))
	require.ErrorIs(t, s.Start(g), ErrAlreadyStarted)
	for _, key := range []string{"", strings.Repeat("k", MaxSemaphoreKeyBytes+1)} {
		_, err = s.Acquire(context.Background(), key)
		require.ErrorIs(t, err, ErrInvalidArgument)
		_, err = s.TryAcquire(context.Background(), key)
		require.ErrorIs(t, err, ErrInvalidArgument)
	}
	require.NoError(t, g.Close(context.Background()))
	_, err = s.Acquire(context.Background(), "k")
	require.ErrorIs(t, err, ErrSemaphoreClosed)
}

// semaphoreSuite is the Redis-semantics tests of the Semaphore, run on
// miniredis, a real server and a Redis Cluster.
var semaphoreSuite = []struct {
	name string
	test func(t *testing.T, b backend)
}{
	{"LimitNeverExceeded", testSemaphoreLimitNeverExceeded},
	{"CrashedHolderFreedAfterLeaseTTL", testSemaphoreCrashedHolder},
	{"CrashedHolderWakesWaiter", testSemaphoreCrashWakesWaiter},
	{"ReleaseWakesWaiter", testSemaphoreReleaseWakesWaiter},
	{"ReleaseTwice", testSemaphoreReleaseTwice},
	{"WaitersCancelled", testSemaphoreWaitersCancelled},
	{"WaitersInOrder", testSemaphoreWaitersInOrder},
	{"CloseWithHolders", testSemaphoreCloseWithHolders},
}

func TestSemaphore(t *testing.T) {
	for _, c := range semaphoreSuite {
		t.Run(c.name, func(t *testing.T) { onBoth(t, c.test) })
	}
}

func TestSemaphoreCluster(t *testing.T) {
	b := clusterBackend(redistest.Cluster(t))
	for _, c := range semaphoreSuite {
		t.Run(c.name, func(t *testing.T) { c.test(t, b) })
	}
}

// testSemaphoreLimitNeverExceeded: 24 goroutines over three Semaphores
// (three pools, as three processes) take and give back two keys' slots;
// every holder checks, while it holds, that no more than Limit hold it
// (counted here, and in Redis), and every Acquire succeeds.
func testSemaphoreLimitNeverExceeded(t *testing.T, b backend) {
	const limit, workers, rounds = 3, 24, 15
	var sems []*Semaphore
	for range 3 {
		s, _ := newSem(t, b.newPool(t), "fleet", SemaphoreConfig{Limit: limit})
		sems = append(sems, s)
	}
	keys := []string{"a", "b"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Every slot is usable, from any process, and no more.
	var releases []func()
	for i := range limit {
		r, err := sems[i%len(sems)].TryAcquire(ctx, "a")
		require.NoError(t, err)
		releases = append(releases, r)
	}
	for _, s := range sems {
		_, err := s.TryAcquire(ctx, "a")
		require.ErrorIs(t, err, ErrSemaphoreFull)
	}
	for _, r := range releases {
		r()
	}

	var inflight [2]atomic.Int64
	var maxSeen [2]atomic.Int64
	var failures atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		if failures.Add(1) == 1 {
			firstErr.Store(err)
		}
	}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			s := sems[i%len(sems)]
			for r := range rounds {
				k := (i + r) % 2
				release, err := s.Acquire(ctx, keys[k])
				if err != nil {
					fail(err)
					return
				}
				n := inflight[k].Add(1)
				for {
					m := maxSeen[k].Load()
					if n <= m || maxSeen[k].CompareAndSwap(m, n) {
						break
					}
				}
				if n > limit {
					fail(fmt.Errorf("%d holders of %q", n, keys[k]))
				}
				{ // a round trip while holding: holders overlap
					if c, err := sems[0].p.Client().ZCard(ctx, s.Key(keys[k])).Result(); err != nil || c > limit {
						fail(fmt.Errorf("ZCARD %d, %v", c, err))
					}
				}
				inflight[k].Add(-1)
				release()
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		t.Fatalf("%d failures, the first: %v", failures.Load(), e)
	}
	for k := range keys {
		t.Logf("%q: at most %d holders at once", keys[k], maxSeen[k].Load())
		require.Empty(t, holders(t, sems[0].p, sems[0], keys[k]))
	}
	var st SemaphoreStats
	for _, s := range sems {
		x := s.Stats()
		st.Acquired += x.Acquired
		st.Released += x.Released
		st.Waited += x.Waited
		st.Held += x.Held
		st.Waiting += x.Waiting
	}
	require.Equal(t, uint64(workers*rounds+limit), st.Acquired)
	require.Equal(t, uint64(workers*rounds+limit), st.Released)
	require.Zero(t, st.Held)
	require.Zero(t, st.Waiting)
	t.Logf("%d acquisitions, %d of them waited", st.Acquired, st.Waited)
}

// testSemaphoreCrashedHolder, on fixed instants: a holder renews its lease
// while it lives, so its slot outlives LeaseTTL; once it stops (its process
// died: its group closed without a release) the slot is free exactly
// LeaseTTL after its last renewal, not a µs sooner. Its late release then
// removes nothing of the new holder's.
func testSemaphoreCrashedHolder(t *testing.T, b backend) {
	// LeaseTTL is real time for the renewal timer and the set's PEXPIRE:
	// 1.5s leaves a loaded machine room between the crash and the checks.
	const ttl = 1500 * time.Millisecond
	clk := testutil.NewClock()
	a, crash := newSem(t, b.newPool(t), "crash", SemaphoreConfig{Limit: 1, LeaseTTL: ttl, Now: clk.Now})
	bs, _ := newSem(t, b.newPool(t), "crash", SemaphoreConfig{Limit: 1, LeaseTTL: time.Hour, Now: clk.Now}) // never renews here
	ctx := context.Background()

	releaseA, err := a.TryAcquire(ctx, "k")
	require.NoError(t, err)
	// Renewed while alive: past its first lease's end, still held.
	clk.Advance(ttl * 2 / 3)
	r0 := a.Stats().Renewals
	testutil.Eventually(t, testutil.Wait, "two renewals", func() bool { return a.Stats().Renewals >= r0+2 })
	// The renewals after the one in flight at the Advance read the new
	// instant; the crash waits for the last one.
	crash()
	renewedAt := clk.Now()
	clk.Advance(ttl * 2 / 3)
	_, err = bs.TryAcquire(ctx, "k")
	require.ErrorIs(t, err, ErrSemaphoreFull, "the renewed lease outlives its first LeaseTTL")

	clk.Set(renewedAt.Add(ttl - time.Microsecond))
	_, err = bs.TryAcquire(ctx, "k")
	require.ErrorIs(t, err, ErrSemaphoreFull, "a µs before the lease ends")
	clk.Set(renewedAt.Add(ttl))
	releaseB, err := bs.TryAcquire(ctx, "k")
	require.NoError(t, err, "the lease ended LeaseTTL after the last renewal")
	require.Len(t, holders(t, bs.p, bs, "k"), 1)

	releaseA() // after its lease ended and b took the slot
	require.Len(t, holders(t, bs.p, bs, "k"), 1, "a's late release left b's lease")
	_, err = bs.TryAcquire(ctx, "k")
	require.ErrorIs(t, err, ErrSemaphoreFull)
	releaseB()
	require.Empty(t, holders(t, bs.p, bs, "k"))
}

// testSemaphoreCrashWakesWaiter, on the real clock: a waiter of a key whose
// holder died takes the slot when the lease ends, woken by the wait timer
// at the earliest lease end the denied attempt reported, not by polling
// (WaitRecheck is a minute): a handful of attempts in all.
func testSemaphoreCrashWakesWaiter(t *testing.T, b backend) {
	a, crash := newSem(t, b.newPool(t), "crashwait", SemaphoreConfig{Limit: 1, LeaseTTL: 300 * time.Millisecond})
	bs, _ := newSem(t, b.newPool(t), "crashwait", SemaphoreConfig{Limit: 1, LeaseTTL: 300 * time.Millisecond, WaitRecheck: time.Minute})
	ctx := context.Background()
	_, err := a.TryAcquire(ctx, "k")
	require.NoError(t, err)
	crash()
	start := time.Now()
	got := testutil.Recv(t, acquireAsync(ctx, bs, "k"), "the waiter's Acquire")
	require.NoError(t, got.err)
	waited := time.Since(start)
	got.release()
	calls := bs.Stats().RedisCalls
	t.Logf("took the dead holder's slot after %s, %d attempts", waited, calls)
	require.LessOrEqual(t, calls, uint64(4), "woken at the lease's end, not polling")
	require.Less(t, waited, 5*time.Second)
}

// testSemaphoreReleaseWakesWaiter: a release in one process wakes a waiter
// in another through Pub/Sub; the waiter asked Redis twice in all (denied,
// then admitted) and nothing polled meanwhile.
func testSemaphoreReleaseWakesWaiter(t *testing.T, b backend) {
	cfg := SemaphoreConfig{Limit: 1, LeaseTTL: time.Minute, WaitRecheck: time.Minute}
	a, _ := newSem(t, b.newPool(t), "wake", cfg)
	bs, _ := newSem(t, b.newPool(t), "wake", cfg)
	ctx := context.Background()
	release, err := a.TryAcquire(ctx, "k")
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "b subscribed", func() bool { return bs.Stats().Subscribed })
	ch := acquireAsync(ctx, bs, "k")
	testutil.Eventually(t, testutil.Wait, "b waiting", func() bool { return bs.Stats().Waiting == 1 && bs.Stats().RedisCalls == 1 })
	release()
	got := testutil.Recv(t, ch, "the waiter's Acquire")
	require.NoError(t, got.err)
	st := bs.Stats()
	require.Equal(t, uint64(2), st.RedisCalls, "denied once, admitted once")
	require.Equal(t, uint64(1), st.Waited)
	require.GreaterOrEqual(t, st.Wakes, uint64(1))
	got.release()
	require.Empty(t, holders(t, bs.p, bs, "k"))
}

// testSemaphoreReleaseTwice: a second call of release does nothing, and in
// particular frees no other holder's slot.
func testSemaphoreReleaseTwice(t *testing.T, b backend) {
	s, _ := newSem(t, b.newPool(t), "twice", SemaphoreConfig{Limit: 2})
	ctx := context.Background()
	r1, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	r2, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	_, err = s.TryAcquire(ctx, "k")
	require.ErrorIs(t, err, ErrSemaphoreFull)
	require.ErrorContains(t, err, `twice "k": 2 of 2 held`)
	r1()
	r1()
	require.Len(t, holders(t, s.p, s, "k"), 1)
	require.Equal(t, uint64(1), s.Stats().Released)
	require.Equal(t, 1, s.Stats().Held)
	r3, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	_, err = s.TryAcquire(ctx, "k")
	require.ErrorIs(t, err, ErrSemaphoreFull, "r1's second release freed nothing")
	r2()
	r3()
	r3()
	require.Empty(t, holders(t, s.p, s, "k"))
	require.Zero(t, s.Stats().Held)
}

// testSemaphoreWaitersCancelled: a waiter whose ctx ends returns its
// error (a deadline matching context.DeadlineExceeded) and leaves the
// queue; the waiter behind it becomes the head and gets the next slot;
// past MaxWaiters an Acquire fails at once.
func testSemaphoreWaitersCancelled(t *testing.T, b backend) {
	s, _ := newSem(t, b.newPool(t), "cancel", SemaphoreConfig{Limit: 1, MaxWaiters: 2, WaitRecheck: time.Minute})
	ctx := context.Background()
	release, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)

	dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer dcancel()
	_, err = s.Acquire(dctx, "k")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Zero(t, s.Stats().Waiting)

	cctx, cancel := context.WithCancel(ctx)
	first := acquireAsync(cctx, s, "k")
	testutil.Eventually(t, testutil.Wait, "first waiting", func() bool { return s.Stats().Waiting == 1 })
	second := acquireAsync(ctx, s, "k")
	testutil.Eventually(t, testutil.Wait, "second waiting", func() bool { return s.Stats().Waiting == 2 })
	_, err = s.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrTooManyWaiters)
	require.ErrorIs(t, err, ErrSemaphoreFull)

	cancel()
	got := testutil.Recv(t, first, "the cancelled waiter")
	require.ErrorIs(t, got.err, context.Canceled)
	testutil.Eventually(t, testutil.Wait, "one waiting", func() bool { return s.Stats().Waiting == 1 })
	release()
	got = testutil.Recv(t, second, "the second waiter")
	require.NoError(t, got.err)
	got.release()
	require.Zero(t, s.Stats().Waiting)
}

// testSemaphoreCloseWithHolders: closing the group ends the waits
// (ErrSemaphoreClosed) and refuses new calls; a holder's lease stays until
// it releases it, which still works, or until LeaseTTL.
func testSemaphoreCloseWithHolders(t *testing.T, b backend) {
	s, stop := newSem(t, b.newPool(t), "close", SemaphoreConfig{Limit: 1})
	ctx := context.Background()
	release, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	waiter := acquireAsync(ctx, s, "k")
	testutil.Eventually(t, testutil.Wait, "waiting", func() bool { return s.Stats().Waiting == 1 })
	stop()
	got := testutil.Recv(t, waiter, "the waiter")
	require.ErrorIs(t, got.err, ErrSemaphoreClosed)
	_, err = s.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrSemaphoreClosed)
	_, err = s.TryAcquire(ctx, "other")
	require.ErrorIs(t, err, ErrSemaphoreClosed)
	require.Len(t, holders(t, s.p, s, "k"), 1, "the holder keeps its slot")
	release()
	require.Empty(t, holders(t, s.p, s, "k"))
}

// TestSemaphoreRedisDown: with Redis stopped a Semaphore fails closed, at
// once once the pool has marked Redis down; a release that cannot reach
// Redis is retried by the renewal. Redis restarted empty (no persistence)
// has lost every lease: the renewal gives the live holder its slot back,
// and the released lease stays gone.
func TestSemaphoreRedisDown(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, pool.Config{Addrs: []string{srv.Addr()}, FailureThreshold: 1, ProbeInterval: 20 * time.Millisecond})
	s, _ := newSem(t, p, "down", SemaphoreConfig{Limit: 2, LeaseTTL: 300 * time.Millisecond})
	ctx := context.Background()
	keep, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	drop, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)

	require.NoError(t, srv.Stop())
	testutil.Eventually(t, testutil.Wait, "fails fast", func() bool {
		_, err := s.TryAcquire(ctx, "other")
		require.ErrorIs(t, err, ErrSemaphoreUnavailable)
		return errors.Is(err, pool.ErrUnavailable)
	})
	_, err = s.Acquire(ctx, "other")
	require.ErrorIs(t, err, ErrSemaphoreUnavailable, "Acquire fails closed too, without waiting")
	drop() // cannot reach Redis: left to the renewal
	require.Equal(t, uint64(1), s.Stats().ReleaseErrors)

	srv.Start()
	testutil.Eventually(t, testutil.Wait, "the live lease taken back", func() bool { return s.Stats().Readmitted >= 1 })
	require.Len(t, holders(t, p, s, "k"), 1, "only the live holder's lease")
	release, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	_, err = s.TryAcquire(ctx, "k")
	require.ErrorIs(t, err, ErrSemaphoreFull)
	release()
	keep()
	require.Empty(t, holders(t, p, s, "k"))
	require.Zero(t, s.Stats().Lost)
}

// TestSemaphoreLostLease: a holder whose lease was taken while it could not
// renew (here: deleted, and the slot given to another) is told by the
// renewal (Stats.Lost), and its late release frees nothing of the other's.
func TestSemaphoreLostLease(t *testing.T) {
	_, p := mini(t)
	a, _ := newSem(t, p, "lost", SemaphoreConfig{Limit: 1, LeaseTTL: 300 * time.Millisecond})
	ctx := context.Background()
	release, err := a.TryAcquire(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, p.Client().Del(ctx, a.Key("k")).Err())
	require.NoError(t, p.Client().ZAdd(ctx, a.Key("k"), redisZ(time.Now().Add(time.Hour), "other")).Err())
	testutil.Eventually(t, testutil.Wait, "the loss seen", func() bool { return a.Stats().Lost >= 1 })
	release()
	require.Equal(t, []string{"other"}, holders(t, p, a, "k"))
}

func redisZ(expires time.Time, member string) redis.Z {
	return redis.Z{Score: float64(expires.UnixMicro()), Member: member}
}

// testSemaphoreWaitersInOrder: a process's waiters of one key get its
// slots oldest first.
func testSemaphoreWaitersInOrder(t *testing.T, b backend) {
	s, _ := newSem(t, b.newPool(t), "order", SemaphoreConfig{Limit: 1, WaitRecheck: time.Minute})
	ctx := context.Background()
	release, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	var waiters []<-chan acquired
	for i := range 3 {
		waiters = append(waiters, acquireAsync(ctx, s, "k"))
		testutil.Eventually(t, testutil.Wait, "queued", func() bool { return s.Stats().Waiting == i+1 })
	}
	for i, w := range waiters {
		release()
		got := testutil.Recv(t, w, fmt.Sprint("waiter ", i))
		require.NoError(t, got.err)
		release = got.release
		for _, later := range waiters[i+1:] {
			select {
			case got := <-later:
				t.Fatalf("a later waiter went first: %v", got.err)
			default:
			}
		}
	}
	release()
	require.Empty(t, holders(t, s.p, s, "k"))
}

// TestSemaphoreScriptFlush: a Redis that lost its scripts (SCRIPT FLUSH, as
// after a restart or a failover) gets their bodies again: acquiring,
// releasing and the renewal pipeline go on without an error.
func TestSemaphoreScriptFlush(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	s, _ := newSem(t, p, "flush", SemaphoreConfig{Limit: 1, LeaseTTL: 300 * time.Millisecond})
	ctx := context.Background()
	release, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	r0 := s.Stats().Renewals
	testutil.Eventually(t, testutil.Wait, "a renewal", func() bool { return s.Stats().Renewals > r0 })
	_, err = srv.Do(ctx, "SCRIPT", "FLUSH")
	require.NoError(t, err)
	r1 := s.Stats().Renewals
	testutil.Eventually(t, testutil.Wait, "two renewals after the flush", func() bool { return s.Stats().Renewals >= r1+2 })
	release()
	_, err = srv.Do(ctx, "SCRIPT", "FLUSH")
	require.NoError(t, err)
	release, err = s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	release()
	require.Zero(t, s.Stats().RedisErrors)
	require.Empty(t, holders(t, p, s, "k"))
}

// TestSemaphoreReleaseRetriedByRenewal: a release that cannot reach Redis
// is not lost: Redis restarted with its data (append-only) still holds
// the lease, and the next renewal removes it, while the other holder's
// lease is renewed.
func TestSemaphoreReleaseRetriedByRenewal(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true})
	p := newPool(t, pool.Config{Addrs: []string{srv.Addr()}, FailureThreshold: 1, ProbeInterval: 20 * time.Millisecond})
	s, _ := newSem(t, p, "retry", SemaphoreConfig{Limit: 2, LeaseTTL: 3 * time.Second})
	ctx := context.Background()
	keep, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	drop, err := s.TryAcquire(ctx, "k")
	require.NoError(t, err)
	require.Len(t, holders(t, p, s, "k"), 2)

	require.NoError(t, srv.Stop())
	drop()
	require.Equal(t, uint64(1), s.Stats().ReleaseErrors)
	srv.Start()
	testutil.Eventually(t, testutil.Wait, "the renewal removed the released lease", func() bool {
		v, err := p.Background().ZCard(ctx, s.Key("k")).Result()
		return err == nil && v == 1
	})
	require.Zero(t, s.Stats().Readmitted, "the restart kept the live lease")
	keep()
	require.Empty(t, holders(t, p, s, "k"))
}
