package pool

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// A command sent again (the same Cmder, as a caller's retry loop does)
// still carries the error of its last call while it runs: go-redis sets a
// command's error only once the hooks have returned. What the health state
// counts is the outcome of this call, not that stale error: a probe that
// finds Redis back with a Nil reply marks it up.
func TestResentCommandProbeCountsThisCall(t *testing.T) {
	m, p, clock := downOnAManualClock(t)
	ctx := context.Background()
	cmd := redis.NewStringCmd(ctx, "get", "missing")
	require.ErrorIs(t, p.Client().Process(ctx, cmd), ErrUnavailable)

	require.NoError(t, m.Restart())
	clock.Advance(time.Second)
	require.ErrorIs(t, p.Client().Process(ctx, cmd), redis.Nil, "the probe reaches Redis")
	require.True(t, p.Healthy(), "the probe's Nil reply says Redis is back")
}

// Nor does a stale connection error count as a failure of a call Redis
// answered: with FailureThreshold 2, one failure and then an answered
// resend leave Redis up.
func TestResentCommandStaleErrorIsNotAFailure(t *testing.T) {
	m := redistest.Mini(t)
	p := newPool(t, Config{Addrs: []string{m.Addr()}, FailureThreshold: 2})
	ctx := context.Background()
	cmd := redis.NewStringCmd(ctx, "get", "missing")

	m.Close()
	require.Error(t, p.Client().Process(ctx, cmd))
	require.NotErrorIs(t, cmd.Err(), redis.Nil)
	require.NoError(t, m.Restart())
	require.ErrorIs(t, p.Client().Process(ctx, cmd), redis.Nil)
	require.True(t, p.Healthy(), "an answered call is not the second failure in a row")
	require.Equal(t, uint64(1), p.Health().Failures)
}
