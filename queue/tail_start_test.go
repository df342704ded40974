package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TailStartTimeout bounds the subscription: against a Redis that accepts
// connections and never answers (with socket timeouts of a minute), Tail
// fails within the start timeout, matching context.DeadlineExceeded and
// naming it; without it, ctx alone would bound the start.
func TestTailStartTimeout(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{redistest.BlackHole(t)}, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		DialTimeout: time.Minute})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	done := make(chan error, 1)
	var started atomic.Bool
	go func() {
		done <- in.Tail(context.Background(), []string{"q"}, func(TailEvent) {}, TailStartTimeout(200*time.Millisecond),
			TailStarted(func() { started.Store(true) }))
	}()
	err = testutil.Recv(t, done, "Tail to give up its start")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, errors.Is(err, ErrTailLost), "%v", err)
	require.ErrorContains(t, err, "not following within 200ms")
	require.False(t, started.Load(), "TailStarted's fn runs only for a start that succeeded")
}

// TailStarted's fn runs once Tail follows: subscribed and registered.
func TestTailStarted(t *testing.T) {
	p := miniPool(t, pool.Config{})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- in.Tail(ctx, []string{"q"}, func(TailEvent) {}, TailStarted(func() { close(started) }))
	}()
	testutil.Recv(t, started, "Tail to start")
	subs, err := p.Client().PubSubNumSub(ctx, "{bq:q}:tail").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, subs["{bq:q}:tail"], "subscribed")
	n, err := p.Client().ZCard(ctx, "{bq}:tails").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "registered")
	cancel()
	require.NoError(t, testutil.Recv(t, done, "Tail to end"))
}
