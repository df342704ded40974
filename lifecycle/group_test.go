package lifecycle_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGoTaskStopsOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		started := make(chan struct{})
		require.NoError(t, g.Go("worker", func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return ctx.Err() // the cancellation Close caused is not a failure
		}))
		testutil.Recv(t, started, "the task to start")
		tasks := g.Tasks()
		require.Len(t, tasks, 1)
		require.Equal(t, "worker", tasks[0].Name)
		require.Equal(t, lifecycle.KindGo, tasks[0].Kind)

		require.NoError(t, g.Close(context.Background()))
		require.Empty(t, g.Tasks())
	})
}

func TestEveryRunsOnScheduleWithoutOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		var runs, active, maxActive atomic.Int32
		require.NoError(t, g.Every("slow", 10*time.Millisecond, func(ctx context.Context) {
			n := active.Add(1)
			if n > maxActive.Load() {
				maxActive.Store(n)
			}
			runs.Add(1)
			time.Sleep(25 * time.Millisecond) // fake time: longer than the interval
			active.Add(-1)
		}))
		require.NoError(t, g.Every("fast", 10*time.Millisecond, func(ctx context.Context) {}))

		// Runs start at 10ms, 40ms, 70ms, 100ms: a run that overruns drops the
		// ticks that fell due meanwhile instead of queueing them.
		time.Sleep(105 * time.Millisecond)
		synctest.Wait()
		require.Equal(t, int32(4), runs.Load())
		require.Equal(t, int32(1), maxActive.Load())

		require.NoError(t, g.Close(context.Background()))
		stopped := runs.Load()
		time.Sleep(time.Second)
		require.Equal(t, stopped, runs.Load(), "no run after Close")
	})
}

func TestEveryFirstRunAfterOneInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		start := time.Now()
		ran := make(chan time.Duration, 1)
		require.NoError(t, g.Every("tick", time.Second, func(ctx context.Context) {
			select {
			case ran <- time.Since(start):
			default:
			}
		}))
		require.Equal(t, time.Second, testutil.Recv(t, ran, "the first run"))
		require.NoError(t, g.Close(context.Background()))
	})
}

func TestClosersRunInReverseOrderEvenAfterFailure(t *testing.T) {
	g := lifecycle.New()
	var order []string
	add := func(name string, err error) {
		require.NoError(t, g.OnClose(name, func(ctx context.Context) error {
			order = append(order, name)
			return err
		}))
	}
	boom := errors.New("boom")
	add("pool", nil)
	add("cache", boom)
	add("queue", nil)
	require.Len(t, g.Tasks(), 3)

	err := g.Close(context.Background())
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, `closer "cache"`)
	require.Equal(t, []string{"queue", "cache", "pool"}, order)
	require.Empty(t, g.Tasks())
}

func TestClosersRunAfterTasksReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		var taskDone atomic.Bool
		require.NoError(t, g.Go("slow-drain", func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // finishing in-flight work
			taskDone.Store(true)
			return nil
		}))
		var sawDone bool
		require.NoError(t, g.OnClose("client", func(ctx context.Context) error {
			sawDone = taskDone.Load()
			return nil
		}))
		require.NoError(t, g.Close(context.Background()))
		require.True(t, sawDone, "closer ran before the task returned")
	})
}

func TestCloseNamesStuckTasksAndMatchesDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		release := make(chan struct{})
		require.NoError(t, g.Go("obedient", func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		}))
		require.NoError(t, g.Go("stubborn", func(ctx context.Context) error {
			<-release // ignores ctx
			return nil
		}))
		var closerRan bool
		require.NoError(t, g.OnClose("client", func(ctx context.Context) error {
			closerRan = true
			return nil
		}))

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err := g.Close(ctx)
		require.Equal(t, time.Second, time.Since(start), "Close returns at the deadline")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var stuck *lifecycle.StuckError
		require.ErrorAs(t, err, &stuck)
		require.Len(t, stuck.Tasks, 1)
		require.Equal(t, "stubborn", stuck.Tasks[0].Name)
		require.Contains(t, err.Error(), "stubborn")
		require.NotContains(t, err.Error(), "obedient")
		require.True(t, closerRan, "closers run even when tasks are stuck")

		close(release)
		synctest.Wait()
		require.Empty(t, g.Tasks())
	})
}

func TestTaskErrorsAreReportedAndReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		reported := map[string]error{}
		g := lifecycle.NewWithConfig(lifecycle.Config{OnError: func(task string, err error) {
			mu.Lock()
			reported[task] = err
			mu.Unlock()
		}})
		bad := errors.New("redis gone")
		require.NoError(t, g.Go("fails", func(ctx context.Context) error { return bad }))
		require.NoError(t, g.Go("cancelled", func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}))
		synctest.Wait()
		mu.Lock()
		require.ErrorIs(t, reported["fails"], bad, "reported as it happens, before Close")
		mu.Unlock()

		err := g.Close(context.Background())
		require.ErrorIs(t, err, bad)
		require.ErrorContains(t, err, `task "fails"`)
		require.NotErrorIs(t, err, context.Canceled)
		mu.Lock()
		require.NotContains(t, reported, "cancelled")
		mu.Unlock()
	})
}

func TestRegisterAfterCloseStartsNothing(t *testing.T) {
	g := lifecycle.New()
	require.NoError(t, g.Close(context.Background()))
	var ran atomic.Bool
	err := g.Go("late", func(ctx context.Context) error { ran.Store(true); return nil })
	require.ErrorIs(t, err, lifecycle.ErrClosed)
	require.ErrorContains(t, err, "late")
	require.ErrorIs(t, g.Every("late", time.Millisecond, func(context.Context) { ran.Store(true) }), lifecycle.ErrClosed)
	require.ErrorIs(t, g.OnClose("late", func(context.Context) error { ran.Store(true); return nil }), lifecycle.ErrClosed)
	require.Empty(t, g.Tasks())
	require.NoError(t, g.Close(context.Background()), "second Close returns the first result")
	require.False(t, ran.Load())
	require.True(t, g.Closing())
}

func TestConcurrentCloseReturnsSameResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		boom := errors.New("boom")
		var closes atomic.Int32
		require.NoError(t, g.OnClose("once", func(ctx context.Context) error {
			closes.Add(1)
			time.Sleep(10 * time.Millisecond)
			return boom
		}))
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() { errs[i] = g.Close(context.Background()) })
		}
		wg.Wait()
		require.Equal(t, int32(1), closes.Load())
		for _, err := range errs {
			require.ErrorIs(t, err, boom)
		}
	})
}

func TestBadRegistrations(t *testing.T) {
	g := lifecycle.New()
	defer func() { require.NoError(t, g.Close(context.Background())) }()
	noop := func(context.Context) error { return nil }
	require.ErrorContains(t, g.Go("", noop), "name must not be empty")
	require.ErrorContains(t, g.Go("x", nil), "nil function")
	require.ErrorContains(t, g.Every("x", 0, func(context.Context) {}), "interval must be positive, got 0s")
	require.ErrorContains(t, g.Every("x", -time.Second, func(context.Context) {}), "interval must be positive")
	require.ErrorContains(t, g.Every("x", time.Second, nil), "nil function")
	require.ErrorContains(t, g.OnClose(" ", noop), "name must not be empty")
	require.ErrorContains(t, g.OnClose("x", nil), "nil function")
	require.Empty(t, g.Tasks())
}

func TestCloseContextCarriesShutdownDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := lifecycle.New()
		require.Equal(t, context.Background(), lifecycle.CloseContext(context.Background()))
		// The task reports what it saw; the assertions stay on the test
		// goroutine.
		type seen struct {
			before      context.Context
			deadline    time.Time
			hasDeadline bool
		}
		got := make(chan seen, 1)
		require.NoError(t, g.Go("drainer", func(ctx context.Context) error {
			before := lifecycle.CloseContext(ctx)
			<-ctx.Done()
			dl, ok := lifecycle.CloseContext(ctx).Deadline()
			got <- seen{before, dl, ok}
			return nil
		}))
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		want, _ := ctx.Deadline()
		require.NoError(t, g.Close(ctx))
		s := testutil.Recv(t, got, "what the task saw")
		require.Equal(t, context.Background(), s.before, "before Close")
		require.True(t, s.hasDeadline)
		require.Equal(t, want, s.deadline)
	})
}

func TestZeroValueGroup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g lifecycle.Group
		require.NoError(t, g.Go("x", func(ctx context.Context) error { <-ctx.Done(); return nil }))
		require.Len(t, g.Tasks(), 1)
		require.NoError(t, g.Close(context.Background()))
	})
}

func TestTaskSinceUsesInjectedClock(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	g := lifecycle.NewWithConfig(lifecycle.Config{Now: func() time.Time { return at }})
	require.NoError(t, g.OnClose("c", func(context.Context) error { return nil }))
	require.Equal(t, at, g.Tasks()[0].Since)
	require.NoError(t, g.Close(context.Background()))
}

func TestTaskString(t *testing.T) {
	require.Equal(t, "beat (every 1s)", lifecycle.Task{Name: "beat", Kind: lifecycle.KindEvery, Interval: time.Second}.String())
	require.Equal(t, "worker (go)", lifecycle.Task{Name: "worker", Kind: lifecycle.KindGo}.String())
	require.Equal(t, "pool (onclose)", lifecycle.Task{Name: "pool", Kind: lifecycle.KindOnClose}.String())
}

// A Close after one that finished returns that result even when its own ctx
// is already done.
func TestCloseAfterCloseReturnsFirstResultEvenWithDoneCtx(t *testing.T) {
	g := lifecycle.New()
	if err := g.Close(context.Background()); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 100 {
		if err := g.Close(ctx); err != nil {
			t.Fatalf("Close #%d after a clean Close returned %v, want nil", i+2, err)
		}
	}
}
