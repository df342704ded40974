package pool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// TestWithTimeoutCountsTowardHealth: on a Redis too slow to answer, calls
// that run out a component's own bound (WithTimeout) mark it down after
// FailureThreshold of them, while calls that run out the caller's deadline
// (shorter than the bound) never do.
func TestWithTimeoutCountsTowardHealth(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, FailureThreshold: 2, ProbeInterval: time.Hour})
	ctx := context.Background()
	require.NoError(t, p.Ping(ctx))
	// Writes wait: slow, not down. (CLIENT UNPAUSE is no write, so it goes through.)
	_, err := srv.Do(ctx, "CLIENT", "PAUSE", "20000", "WRITE")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := srv.Do(context.Background(), "CLIENT", "UNPAUSE")
		require.NoError(t, err)
	})

	for range 5 { // the caller's deadline comes first: neutral
		caller, cancel := context.WithTimeout(ctx, 3*time.Millisecond)
		c, cancel2 := WithTimeout(caller, time.Minute)
		err := p.Client().Set(c, "k", "v", 0).Err()
		cancel2()
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	require.True(t, p.Healthy())
	require.Zero(t, p.Health().Failures)

	for i := range 2 { // the component's bound comes first: a failure
		caller, cancel := context.WithTimeout(ctx, time.Minute)
		c, cancel2 := WithTimeout(caller, 5*time.Millisecond)
		err := p.Client().Set(c, "k", "v", 0).Err()
		cancel2()
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, i == 0, p.Healthy(), "call %d", i)
	}
	require.Equal(t, uint64(2), p.Health().Failures)
	require.ErrorIs(t, p.Client().Set(ctx, "k", "v", 0).Err(), ErrUnavailable, "marked down: fails fast")
}

// TestWithTimeoutSpentWaitingForAConnection: a command that ran out its
// component's bound after waiting here for a connection for most of it
// says more about this process's queue than about Redis, and must not mark
// Redis down for every component of the pool. (200 callers of a limiter
// with the default 250ms Timeout on an idle local redis-server marked it
// down dozens of times in 3s: each waited up to the lane's 250ms MaxWait,
// then had a few ms for the round trip.) A command that had the bound to
// itself still counts, as TestWithTimeoutCountsTowardHealth checks.
func TestWithTimeoutSpentWaitingForAConnection(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, FailureThreshold: 1, ProbeInterval: time.Hour,
		Request: LaneConfig{Size: 1, MaxWait: time.Minute}})
	ctx := context.Background()
	require.NoError(t, p.Ping(ctx))
	// Writes wait (Redis slow, so the command does run out its bound).
	_, err := srv.Do(ctx, "CLIENT", "PAUSE", "20000", "WRITE")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := srv.Do(context.Background(), "CLIENT", "UNPAUSE")
		require.NoError(t, err)
	})

	const bound = 400 * time.Millisecond
	c, cancel := WithTimeout(ctx, bound)
	defer cancel()
	// This process's only connection is busy for 3/4 of the bound.
	require.NoError(t, p.request.gate.acquire(ctx))
	release := time.AfterFunc(bound*3/4, p.request.gate.release)
	defer release.Stop()
	err = p.Client().Set(c, "k", "v", 0).Err()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, p.Healthy(), "marked down for a bound spent mostly waiting for a connection here")
	require.Zero(t, p.Health().Failures)
}
