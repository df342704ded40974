package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func TestNewRejectsBadConfig(t *testing.T) {
	_, p := mini(t)
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"rate", Config{}, []string{"Config.Rate must be positive, got 0"}},
		{"rate", Config{Rate: -3}, []string{"Config.Rate must be positive, got -3"}},
		{"rate", Config{Rate: 1, Burst: -1}, []string{"Config.Burst must be at least 1, got -1"}},
		{"rate", Config{Rate: 1, Period: -time.Second}, []string{"Config.Period must not be negative, got -1s"}},
		{"rate", Config{Rate: 1, Period: 1500 * time.Nanosecond}, []string{"Config.Period must be a whole number of microseconds, got 1.5µs"}},
		{"rate", Config{Rate: 1, OnRedisError: FailClosed + 1}, []string{"Config.OnRedisError must be FailLocal, FailOpen or FailClosed, got Policy(3)"}},
		{"rate", Config{Rate: 1, DeniedKeys: -1, LocalKeys: -2}, []string{
			"Config.DeniedKeys must not be negative, got -1", "Config.LocalKeys must not be negative, got -2"}},
		{"rate", Config{Rate: 1, Timeout: -time.Second}, []string{"Config.Timeout must be at least 1ms, got -1s"}},
		{"rate", Config{Rate: 1, Timeout: time.Microsecond}, []string{"Config.Timeout must be at least 1ms, got 1µs"}},
		{"rate", Config{Rate: 1, Period: 24 * time.Hour * 1000, Burst: 1_000_000}, []string{"Config.Burst (1000000) times the emission interval"}},
		{"", Config{Rate: 1}, []string{"name must not be empty"}},
		{"a{b", Config{Rate: 1}, []string{`name "a{b" must not contain '{' or '}'`}},
		{"a}", Config{Rate: 1}, []string{`name "a}" must not contain '{' or '}'`}},
		{"a b", Config{Rate: 1}, []string{`name "a b" must not contain spaces or control characters`}},
		{strings.Repeat("n", 101), Config{Rate: 1}, []string{"is 101 bytes, the limit is 100"}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.want), func(t *testing.T) {
			l, err := New(p, c.name, c.cfg)
			require.Nil(t, l)
			require.ErrorIs(t, err, ErrInvalidConfig)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	l, err := New(nil, "x", Config{Rate: 1})
	require.Nil(t, l)
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "nil pool")
}

func TestDefaults(t *testing.T) {
	_, p := mini(t)
	l, err := New(p, "defaults", Config{Rate: 5})
	require.NoError(t, err)
	require.Equal(t, time.Second, l.cfg.Period)
	require.Equal(t, 5, l.cfg.Burst)
	require.Equal(t, FailLocal, l.cfg.OnRedisError)
	require.Equal(t, 250*time.Millisecond, l.cfg.Timeout)
	require.Equal(t, 200*time.Millisecond, l.Interval())
	require.Equal(t, "defaults", l.Name())
	require.NotNil(t, l.denied)
	require.NotNil(t, l.local)
	require.Equal(t, DefaultDeniedKeys, shardCaps(l.denied))
	require.Equal(t, DefaultLocalKeys, shardCaps(l.local))

	l = newLimiter(t, p, "no-cache", Config{Rate: 5, NoDeniedCache: true, OnRedisError: FailOpen})
	require.Nil(t, l.denied)
	require.Nil(t, l.local)
}

func shardCaps[V any](e *expiring[V]) int {
	n := 0
	for i := range e.shards {
		n += e.shards[i].cap
	}
	return n
}

// TestBadArguments: refused with ErrInvalidArgument before Redis is asked.
func TestBadArguments(t *testing.T) { onBoth(t, testBadArguments) }

func testBadArguments(t *testing.T, b backend) {
	p := b.newPool(t)
	l := newLimiter(t, p, "bad", Config{Rate: 10, Burst: 3})
	before := b.commands(t)
	for _, c := range []struct {
		key  string
		n    int
		want string
	}{
		{"", 1, "empty key"},
		{"k", 0, "n must be at least 1, got 0"},
		{"k", -1, "n must be at least 1, got -1"},
		{"k", 4, "n=4 exceeds the burst of 3"},
	} {
		r, err := l.AllowN(context.Background(), c.key, c.n)
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, c.want)
		require.Equal(t, Result{}, r)
	}
	require.Equal(t, before, b.commands(t), "bad arguments reached Redis")
	require.Equal(t, Stats{}, l.Stats())
}

// TestContextEnded: a caller whose context ended gets its error, not a
// policy's answer.
func TestContextEnded(t *testing.T) {
	_, p := mini(t)
	l := newLimiter(t, p, "ctx", Config{Rate: 10, OnRedisError: FailOpen})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := l.Allow(ctx, "k")
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, l.Stats().Fallback)
}

func TestStats(t *testing.T) {
	_, p := mini(t)
	clk := testutil.NewClock()
	l := newLimiter(t, p, "stats", Config{Rate: 2, Now: clk.Now})
	ctx := context.Background()
	for range 5 {
		_, err := l.Allow(ctx, "k")
		require.NoError(t, err)
	}
	require.Equal(t, Stats{Allowed: 2, Denied: 3, DeniedCache: 2, RedisCalls: 3, DeniedKeys: 1,
		RedisAllowed: 2, RedisDenied: 1}, l.Stats())
}

// TestRedisReplyError: a key holding something else is a bug, not an
// outage; the policy answers, the error is counted and is in the Result.
func TestRedisReplyError(t *testing.T) {
	m, p := mini(t)
	l := newLimiter(t, p, "wrongtype", Config{Rate: 2})
	_, err := m.Lpush(l.Key("k"), "x")
	require.NoError(t, err)
	r, err := l.Allow(context.Background(), "k")
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, SourceFallback, r.Source)
	require.ErrorContains(t, r.Err, "WRONGTYPE")
	require.False(t, errors.Is(r.Err, pool.ErrUnavailable))
	require.Equal(t, uint64(1), l.Stats().RedisErrors)
	require.True(t, p.Healthy(), "a reply error says Redis is up")
}

// TestPoolClosed: calls after the service closed the pool are errors, not
// policy answers that would hide the shutdown order being wrong.
func TestPoolClosed(t *testing.T) {
	m := redistest.Mini(t)
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	require.NoError(t, err)
	l := newLimiter(t, p, "closed", Config{Rate: 1, OnRedisError: FailOpen})
	require.NoError(t, p.Close())
	_, err = l.Allow(context.Background(), "k")
	require.ErrorIs(t, err, redis.ErrClosed)
	require.Zero(t, l.Stats().Fallback)
}

// TestDeadlineMidCall: a caller whose deadline passes while Redis has not
// answered gets an error matching context.DeadlineExceeded, every time; not,
// now and then, a policy's answer counted as a Redis error (the socket's
// deadline is the context's, and its I/O timeout can come back a moment
// before the context reports its own error).
func TestDeadlineMidCall(t *testing.T) {
	p := newPool(t, pool.Config{Addrs: []string{redistest.BlackHole(t)}})
	l := newLimiter(t, p, "deadline", Config{Rate: 10, OnRedisError: FailOpen})
	for i := range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		r, err := l.Allow(ctx, "k")
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "call %d: %+v", i, r)
		require.Equal(t, Result{}, r)
	}
	s := l.Stats()
	require.Zero(t, s.Fallback)
	require.Zero(t, s.RedisErrors)
	require.True(t, p.Healthy(), "the caller's deadline says nothing about Redis")
}

// TestTimeoutCountsTowardHealth: on a Redis that is slow rather than down
// (writes paused, so the script waits), calls with a generous deadline of
// their own are answered by the policy after Config.Timeout, and
// FailureThreshold of them mark Redis down in the pool, after which calls
// fail fast without waiting; the probe finds Redis again once it is fast.
// Before Config.Timeout each call waited for its own deadline (or the 3s
// read timeout) and the pool stayed healthy.
func TestTimeoutCountsTowardHealth(t *testing.T) {
	srv := redistest.Server(t)
	pclk := testutil.NewClock()
	p := newPool(t, pool.Config{Addrs: []string{srv.Addr()}, ProbeInterval: time.Minute, Now: pclk.Now})
	clk := testutil.NewClock()
	l := newLimiter(t, p, "slow", Config{Rate: 10, Now: clk.Now, Timeout: 20 * time.Millisecond, NoDeniedCache: true})
	keepState(t, l)
	// The same limit with a Timeout no busy machine misses, to load the
	// script and to probe when Redis is fast again.
	patient := newLimiter(t, p, "slow", Config{Rate: 10, Now: clk.Now, NoDeniedCache: true})
	keepState(t, patient)
	ctx := context.Background()
	r, err := patient.Allow(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, SourceRedis, r.Source)

	// EVALSHA waits while writes are paused; CLIENT UNPAUSE is no write.
	_, err = srv.Do(ctx, "CLIENT", "PAUSE", "60000", "WRITE")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := srv.Do(context.Background(), "CLIENT", "UNPAUSE")
		require.NoError(t, err)
	})
	for i := range pool.DefaultFailures {
		require.True(t, p.Healthy(), "call %d", i)
		caller, cancel := context.WithTimeout(ctx, time.Second)
		r, err := l.Allow(caller, "k")
		cancel()
		require.NoError(t, err, "the caller's deadline was not reached")
		require.Equal(t, SourceFallback, r.Source)
		require.True(t, r.Allowed, "FailLocal")
		require.ErrorIs(t, r.Err, context.DeadlineExceeded)
		require.ErrorContains(t, r.Err, "no answer within Config.Timeout 20ms")
	}
	require.False(t, p.Healthy(), "%d timeouts in a row mark Redis down", pool.DefaultFailures)
	require.Equal(t, uint64(pool.DefaultFailures), l.Stats().RedisErrors)
	r, err = l.Allow(ctx, "k")
	require.NoError(t, err)
	require.ErrorIs(t, r.Err, pool.ErrUnavailable, "fails fast now")

	_, err = srv.Do(ctx, "CLIENT", "UNPAUSE")
	require.NoError(t, err)
	pclk.Advance(time.Minute)
	r, err = patient.Allow(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, SourceRedis, r.Source, "the probe: %v", r.Err)
	require.True(t, p.Healthy())
}
