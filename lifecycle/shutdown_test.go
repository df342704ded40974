package lifecycle_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
)

// Issue 14 item 13: a task that closes its own group, passing its context or
// one derived from it, used to wait for itself until the deadline and report
// itself as stuck (or, with its own already-cancelled context, report itself
// stuck at once).
func TestTaskClosingItsOwnGroupDoesNotWaitForItself(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func(task context.Context) (context.Context, context.CancelFunc)
	}{
		{"its own context", func(task context.Context) (context.Context, context.CancelFunc) {
			return task, func() {}
		}},
		{"a deadline derived from it", func(task context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(task, 10*time.Second)
		}},
		{"without its cancellation", func(task context.Context) (context.Context, context.CancelFunc) {
			return context.WithoutCancel(task), func() {}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := lifecycle.New()
				var order []string
				var otherStopped atomic.Bool
				require.NoError(t, g.OnClose("client", func(context.Context) error {
					order = append(order, "closer")
					if !otherStopped.Load() {
						return errors.New("closer ran before the other task returned")
					}
					return nil
				}))
				require.NoError(t, g.Go("other", func(ctx context.Context) error {
					<-ctx.Done()
					time.Sleep(time.Second) // draining
					otherStopped.Store(true)
					return nil
				}))
				type result struct {
					err  error
					took time.Duration
				}
				res := make(chan result, 1)
				require.NoError(t, g.Go("self-closer", func(ctx context.Context) error {
					cctx, cancel := tc.ctx(ctx)
					defer cancel()
					start := time.Now()
					err := g.Close(cctx)
					res <- result{err, time.Since(start)}
					return nil
				}))
				r := testutil.Recv(t, res, "the self-closing task's result")
				require.NoError(t, r.err)
				require.Equal(t, time.Second, r.took, "waits for the other task, not for itself")
				require.Equal(t, []string{"closer"}, order)
				synctest.Wait()
				require.Empty(t, g.Tasks())
				require.NoError(t, g.Close(context.Background()), "the same result for the owner")
			})
		})
	}
}

// Two tasks closing the group at once do not wait for each other.
func TestTwoTasksClosingTheGroupAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		errs := make(chan error, 2)
		release := make(chan struct{})
		for _, name := range []string{"a", "b"} {
			require.NoError(t, g.Go(name, func(ctx context.Context) error {
				<-release
				errs <- g.Close(ctx)
				return nil
			}))
		}
		close(release)
		require.NoError(t, testutil.Recv(t, errs, "a Close by a task"))
		require.NoError(t, testutil.Recv(t, errs, "a Close by a task"))
	})
}

// A task asks for shutdown; Run, blocked in main, closes the group.
func TestShutdownFromATaskEndsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		var closed atomic.Bool
		require.NoError(t, g.OnClose("db", func(context.Context) error { closed.Store(true); return nil }))
		require.NoError(t, g.Go("admin", func(ctx context.Context) error {
			time.Sleep(time.Minute)
			g.Shutdown(nil) // does not block, even from a task
			g.Shutdown(errors.New("a second request changes nothing"))
			<-ctx.Done()
			return nil
		}))
		start := time.Now()
		err := g.Run(context.Background())
		require.NoError(t, err)
		require.Equal(t, time.Minute, time.Since(start))
		require.True(t, closed.Load())
		require.True(t, g.Closing())
		select {
		case <-g.ShutdownRequested():
		default:
			t.Fatal("ShutdownRequested not closed after a shutdown")
		}
	})
}

// A shutdown's cause is part of the group's result, so main exits non-zero.
func TestShutdownCauseIsTheResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		fatal := errors.New("license expired")
		require.NoError(t, g.Go("checker", func(ctx context.Context) error {
			g.Shutdown(fatal)
			return nil
		}))
		err := g.Run(context.Background())
		require.ErrorIs(t, err, fatal)
		require.ErrorContains(t, err, "lifecycle: shutdown requested: license expired")
		require.ErrorIs(t, g.Wait(context.Background()), fatal, "Wait returns the same result")
	})
}

// By default a failing task is reported and the others keep running; with
// StopOnError the first failure stops the group (oklog/run's model).
func TestStopOnError(t *testing.T) {
	for _, stop := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			g := lifecycle.NewWithConfig(lifecycle.Config{StopOnError: stop})
			boom := errors.New("listener died")
			var peerStopped atomic.Bool
			require.NoError(t, g.Go("peer", func(ctx context.Context) error {
				<-ctx.Done()
				peerStopped.Store(true)
				return nil
			}))
			require.NoError(t, g.Go("server", func(ctx context.Context) error {
				time.Sleep(time.Second)
				return boom
			}))
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			start := time.Now()
			err := g.Run(ctx)
			require.ErrorIs(t, err, boom)
			require.ErrorContains(t, err, `task "server"`)
			require.True(t, peerStopped.Load())
			if stop {
				require.Equal(t, time.Second, time.Since(start), "the first failure stopped the group")
			} else {
				require.Equal(t, time.Hour, time.Since(start), "the group ran on until its context ended")
			}
		})
	}
}

// Run closes the group when its context ends, with Config.ShutdownTimeout as
// the deadline; a task that does not stop is named.
func TestRunClosesWithTheShutdownTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.NewWithConfig(lifecycle.Config{ShutdownTimeout: 3 * time.Second})
		release := make(chan struct{})
		var sawDeadline atomic.Bool
		require.NoError(t, g.Go("stubborn", func(ctx context.Context) error {
			<-ctx.Done()
			dl, ok := lifecycle.CloseContext(ctx).Deadline()
			sawDeadline.Store(ok && dl.Equal(time.Now().Add(3*time.Second)))
			<-release
			return nil
		}))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Minute, cancel) // the signal
		start := time.Now()
		err := g.Run(ctx)
		require.Equal(t, time.Minute+3*time.Second, time.Since(start))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "stubborn")
		require.True(t, sawDeadline.Load(), "CloseContext carries Run's shutdown deadline")
		close(release)
		synctest.Wait()
	})
}

func TestRunRejectsANegativeShutdownTimeout(t *testing.T) {
	g := lifecycle.NewWithConfig(lifecycle.Config{ShutdownTimeout: -time.Second})
	err := g.Run(context.Background())
	require.ErrorIs(t, err, lifecycle.ErrInvalidConfig)
	require.ErrorContains(t, err, "lifecycle: invalid config: Config.ShutdownTimeout must not be negative, got -1s")
	require.False(t, g.Closing(), "nothing was started or stopped")
	require.NoError(t, g.Close(context.Background()))
}

// Wait returns the result of a Close someone else made, or gives up with its
// own context.
func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		boom := errors.New("boom")
		require.NoError(t, g.OnClose("c", func(context.Context) error { return boom }))

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := g.Wait(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "lifecycle: waiting for Close")
		require.False(t, g.Closing(), "Wait does not close")

		waited := make(chan error, 1)
		go func() { waited <- g.Wait(context.Background()) }()
		time.Sleep(time.Minute)
		require.ErrorIs(t, g.Close(context.Background()), boom)
		require.ErrorIs(t, testutil.Recv(t, waited, "Wait's result"), boom)
	})
}

// A direct Close that outlasts Config.ShutdownTimeout does not hold Run:
// Run returns at its deadline, with an error saying it was still waiting,
// and the Close goes on to its own result.
func TestRunDoesNotOutwaitItsTimeoutForADirectClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.NewWithConfig(lifecycle.Config{ShutdownTimeout: 3 * time.Second})
		release := make(chan struct{})
		boom := errors.New("boom")
		require.NoError(t, g.Go("slow", func(ctx context.Context) error { <-ctx.Done(); <-release; return boom }))
		closed := make(chan error, 1)
		go func() { closed <- g.Close(context.Background()) }()
		start := time.Now()
		err := g.Run(context.Background())
		require.Equal(t, 3*time.Second, time.Since(start))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "waiting for another Close")
		close(release)
		require.ErrorIs(t, testutil.Recv(t, closed, "the direct Close's result"), boom)
		require.ErrorIs(t, g.Wait(context.Background()), boom)
	})
}
