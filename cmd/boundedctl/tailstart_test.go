package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// --timeout bounds tail's whole start, the subscription included: against
// a Redis whose commands answer (the queue's lookup succeeds) and whose
// SUBSCRIBE is never confirmed, tail fails (exit 1) with an error that
// names the timeout, instead of waiting for ever.
func TestTailTimeoutBoundsSubscribe(t *testing.T) {
	m := redistest.Mini(t)
	_, err := mustQueue(t, mustPool(t, m.Addr()), "q").Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	addr := redistest.BlackHoleAfter(t, m.Addr(), "SUBSCRIBE") // commands work, SUBSCRIBE is never confirmed
	require.Equal(t, exitOK, ctl(t, nil, "--redis", "redis://"+addr, "stats", "q").code, "the proxy forwards commands")

	var stdout, stderr syncBuffer
	done := background(context.Background(), &stdout, &stderr, "--redis", "redis://"+addr, "--timeout", "300ms", "tail", "q")
	require.Equal(t, exitError, testutil.Recv(t, done, "tail to give up on a subscription never confirmed"), stderr.String())
	t.Log(stderr.String())
	require.Contains(t, stderr.String(), "did not start within --timeout 300ms")
	require.Contains(t, stderr.String(), "deadline exceeded")
	require.NotContains(t, stderr.String(), "following 1 queue(s)", "it never followed")
	require.Empty(t, stdout.String())
}

// tail says it follows only once it does: when "following" is written,
// its subscription is confirmed and its registration written.
func TestTailSaysFollowingOnceSubscribed(t *testing.T) {
	m := redistest.Mini(t)
	p := mustPool(t, m.Addr())
	ctx := context.Background()
	_, err := mustQueue(t, p, "q").Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdout, stderr syncBuffer
	done := background(tctx, &stdout, &stderr, "--redis", "redis://"+m.Addr(), "tail", "q")
	testutil.Eventually(t, testutil.Wait, "tail to say it follows", func() bool {
		return strings.Contains(stderr.String(), "following 1 queue(s)")
	})
	subs, err := p.Client().PubSubNumSub(ctx, "{bq:q}:tail").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, subs["{bq:q}:tail"], "subscribed")
	n, err := p.Client().ZCard(ctx, "{bq}:tails").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "registered")
	cancel()
	require.Equal(t, exitOK, testutil.Recv(t, done, "tail to stop"), stderr.String())
}
