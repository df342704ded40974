package queue

import (
	"context"
	"errors"
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
	go func() {
		done <- in.Tail(context.Background(), []string{"q"}, func(TailEvent) {}, TailStartTimeout(200*time.Millisecond))
	}()
	err = testutil.Recv(t, done, "Tail to give up its start")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, errors.Is(err, ErrTailLost), "%v", err)
	require.ErrorContains(t, err, "not following within 200ms")
}
