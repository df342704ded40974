package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// TestWaitDeadline: a wait that would pass ctx's deadline fails at once,
// with an error matching context.DeadlineExceeded, before the deadline.
func TestWaitDeadline(t *testing.T) { onBoth(t, testWaitDeadline) }

func testWaitDeadline(t *testing.T, b backend) {
	l := newLimiter(t, b.newPool(t), "wait-deadline", Config{Rate: 1, Period: time.Hour})
	require.NoError(t, l.Wait(context.Background(), "k"), "the first is admitted at once")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := l.Wait(ctx, "k")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "would pass the context deadline")
	require.NoError(t, ctx.Err(), "returned before the deadline, not at it")

	require.ErrorIs(t, l.WaitN(ctx, "k", 2), ErrInvalidArgument)
	require.ErrorIs(t, l.Wait(ctx, ""), ErrInvalidArgument)
}

// TestWaitSynctest runs Wait on a fake clock: Redis refuses connections, so
// FailLocal's GCRA decides, and time moves only when every goroutine of the
// bubble waits, so the waits are exact.
func TestWaitSynctest(t *testing.T) {
	port, err := redistest.FreePort()
	require.NoError(t, err)
	synctest.Test(t, func(t *testing.T) {
		p, err := pool.New(pool.Config{Addrs: []string{fmt.Sprintf("127.0.0.1:%d", port)}, FailureThreshold: 1, ProbeInterval: time.Hour})
		require.NoError(t, err)
		defer p.Close()
		l, err := New(p, "wait", Config{Rate: 10, Burst: 1})
		require.NoError(t, err)
		ctx := context.Background()

		r, err := l.Allow(ctx, "k")
		require.NoError(t, err)
		require.True(t, r.Allowed)
		require.Equal(t, SourceFallback, r.Source)

		start := time.Now()
		require.NoError(t, l.Wait(ctx, "k"))
		require.Equal(t, 100*time.Millisecond, time.Since(start), "waited exactly one interval")

		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		start = time.Now()
		err = l.Wait(short, "k")
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, time.Since(start), "a deadline at the admission instant is not enough; no time passed")

		long, cancel := context.WithTimeout(ctx, 100*time.Millisecond+time.Microsecond)
		start = time.Now()
		require.NoError(t, l.Wait(long, "k"), "a deadline after the admission is enough")
		cancel()
		require.Equal(t, 100*time.Millisecond, time.Since(start))

		cancelled, cancel := context.WithCancel(ctx)
		go func() {
			time.Sleep(30 * time.Millisecond)
			cancel()
		}()
		start = time.Now()
		err = l.Wait(cancelled, "k")
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, 30*time.Millisecond, time.Since(start))

		// Two waiters for one slot: one is admitted at once when the slot
		// frees, the other asks again and waits one interval more.
		time.Sleep(time.Second)
		require.NoError(t, l.Wait(ctx, "k"))
		start = time.Now()
		done := make(chan time.Duration, 2)
		for range 2 {
			go func() {
				if err := l.Wait(ctx, "k"); err != nil {
					t.Error(err)
				}
				done <- time.Since(start)
			}()
		}
		var waited []time.Duration
		for range 2 {
			select {
			case d := <-done:
				waited = append(waited, d)
			case <-time.After(time.Hour): // the bubble's clock: fires only if the waiters are stuck
				t.Fatal("waiters did not return")
			}
		}
		require.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, waited)
	})
}
