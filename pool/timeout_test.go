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
