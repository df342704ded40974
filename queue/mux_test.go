package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func TestMuxRoutes(t *testing.T) {
	var m Mux // the zero value is ready
	ctx := context.Background()
	err := m.Run(ctx, &Job{ID: "j1", Type: "a"})
	require.True(t, IsPermanent(err), "an empty Mux refuses, permanently")
	require.ErrorIs(t, err, ErrUnknownType)
	require.EqualError(t, err, `queue: no handler for the job's type "a": job j1 (the Mux has no handler for the type and no fallback)`)

	var got []string
	route := func(name string) Handler {
		return func(_ context.Context, j *Job) error { got = append(got, name+":"+j.ID); return nil }
	}
	m.Handle("a", route("A"))
	m.Handle("b|c", route("BC"))
	require.NoError(t, m.Run(ctx, &Job{ID: "1", Type: "a"}))
	require.NoError(t, m.Run(ctx, &Job{ID: "2", Type: "b|c"}))
	require.Equal(t, []string{"A:1", "BC:2"}, got)

	err = m.Run(ctx, &Job{ID: "3"})
	require.True(t, IsPermanent(err))
	require.ErrorIs(t, err, ErrUnknownType)
	require.ErrorContains(t, err, "job 3 has no type, and the Mux has no fallback")
	err = m.Run(ctx, &Job{ID: "4", Type: "A"}) // types are case-sensitive
	require.ErrorContains(t, err, `"A": job 4`)

	m.Fallback(route("fallback"))
	require.NoError(t, m.Run(ctx, &Job{ID: "3"}))
	require.NoError(t, m.Run(ctx, &Job{ID: "4", Type: "A"}))
	require.NoError(t, m.Run(ctx, &Job{ID: "5", Type: "a"}))
	require.Equal(t, []string{"A:1", "BC:2", "fallback:3", "fallback:4", "A:5"}, got)
	m.Fallback(nil)
	require.ErrorIs(t, m.Run(ctx, &Job{ID: "6", Type: "zz"}), ErrUnknownType)

	// A handler's error is the run's, as it is.
	boom := errors.New("boom")
	m.Handle("fails", func(context.Context, *Job) error { return boom })
	require.Same(t, boom, m.Run(ctx, &Job{Type: "fails"}))
}

func TestMuxHandleRefusesMistakes(t *testing.T) {
	var m Mux
	ok := func(context.Context, *Job) error { return nil }
	m.Handle("a", ok)
	for _, c := range []struct {
		name, want string
		f          func()
	}{
		{"twice", `queue: Mux.Handle("a"): the type has a handler already`, func() { m.Handle("a", ok) }},
		{"nil", `queue: Mux.Handle("b"): nil handler`, func() { m.Handle("b", nil) }},
		{"empty", `queue: Mux.Handle: queue: Type(""): a job type must not be empty`, func() { m.Handle("", ok) }},
		{"space", `queue: Mux.Handle: queue: Type("a b"): byte " " at 1: use printable ASCII without spaces`, func() { m.Handle("a b", ok) }},
		{"long", "129 bytes, the limit is 128", func() { m.Handle(strings.Repeat("x", MaxTypeLen+1), ok) }},
	} {
		msg := func() (msg string) {
			defer func() { msg = fmt.Sprint(recover()) }()
			c.f()
			return "no panic"
		}()
		require.Contains(t, msg, c.want, c.name)
	}
	require.NoError(t, m.Run(context.Background(), &Job{Type: "a"}), "a refused Handle changed nothing")
	require.ErrorIs(t, m.Run(context.Background(), &Job{Type: "b"}), ErrUnknownType)
}

// Routes may be added while handlers run (under -race): runs see either
// no route or the handler, never anything else.
func TestMuxHandleWhileRunning(t *testing.T) {
	var m Mux
	const types = 200
	var refused, ran, wrong atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				switch err := m.Run(context.Background(), &Job{Type: fmt.Sprint("t", i%types)}); {
				case err == nil:
					ran.Add(1)
				case errors.Is(err, ErrUnknownType):
					refused.Add(1)
				default:
					wrong.Add(1)
				}
			}
		})
	}
	testutil.Eventually(t, 10*time.Second, "runs before any route", func() bool { return refused.Load() > 0 })
	for i := range types {
		m.Handle(fmt.Sprint("t", i), func(context.Context, *Job) error { return nil })
	}
	after := ran.Load()
	testutil.Eventually(t, 10*time.Second, "runs after every route exists", func() bool { return ran.Load() > after+types })
	close(stop)
	wg.Wait()
	require.Zero(t, wrong.Load())
	for i := range types {
		require.NoError(t, m.Run(context.Background(), &Job{Type: fmt.Sprint("t", i)}))
	}
}

func TestChainOrder(t *testing.T) {
	var log []string
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return func(ctx context.Context, j *Job) error {
				log = append(log, name+" before")
				err := next(ctx, j)
				log = append(log, name+" after")
				return err
			}
		}
	}
	h := Chain(func(context.Context, *Job) error { log = append(log, "handler"); return nil }, mw("a"), nil, mw("b"))
	require.NoError(t, h(context.Background(), &Job{}))
	require.Equal(t, []string{"a before", "b before", "handler", "b after", "a after"}, log)

	ok := func(context.Context, *Job) error { return nil }
	require.NotNil(t, Chain(ok))
	msg := func() (msg string) {
		defer func() { msg = fmt.Sprint(recover()) }()
		Chain(ok, mw("a"), func(Handler) Handler { return nil })
		return "no panic"
	}()
	require.Equal(t, "queue: Chain: middleware 1 returned a nil Handler", msg)
}

// Through a worker: a Mux with middleware routes by type; an unknown type
// goes to the dead letters at once (one attempt, its type in the reason);
// a middleware's panic, before or after the handler, is a failed attempt
// like a handler's (retried, counted), and the worker runs on.
func TestMuxAndMiddlewareInAWorker(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testMuxInWorker(t, np) })
	}
}

func testMuxInWorker(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "muxw", Config{})
	runs := make(chan string, 16)
	var m Mux
	m.Handle("greet", func(_ context.Context, j *Job) error { runs <- "greet " + string(j.Payload); return nil })
	m.Handle("panics", func(_ context.Context, j *Job) error { runs <- fmt.Sprint("panics ", j.Attempt); return nil })
	var seen atomic.Int64
	count := func(next Handler) Handler {
		return func(ctx context.Context, j *Job) error { seen.Add(1); return next(ctx, j) }
	}
	panicky := func(next Handler) Handler {
		return func(ctx context.Context, j *Job) error {
			if j.Type == "panics" && j.Attempt == 1 {
				panic("middleware, before")
			}
			err := next(ctx, j)
			if j.Type == "panics" && j.Attempt == 2 {
				panic("middleware, after")
			}
			return err
		}
	}
	g := group(t)
	w := startWorker(t, g, q, Chain(m.Run, count, panicky),
		WorkerConfig{Concurrency: 2, RetryBase: time.Millisecond, RetryMax: time.Millisecond})

	_, err := q.Enqueue(ctx, []byte("world"), Type("greet"))
	require.NoError(t, err)
	require.Equal(t, "greet world", recv(t, runs, 10*time.Second, "the routed job"))

	unknown, err := q.Enqueue(ctx, []byte("?"), Type("nobody.handles"))
	require.NoError(t, err)
	var dead []DeadJob
	testutil.Eventually(t, 10*time.Second, "the unknown type's dead letter", func() bool {
		dead, err = q.Dead(ctx, 0, 10)
		require.NoError(t, err)
		return len(dead) == 1
	})
	require.Equal(t, unknown, dead[0].ID)
	require.Equal(t, 1, dead[0].Attempts, "not retried")
	require.Equal(t, "nobody.handles", dead[0].Type)
	require.Contains(t, dead[0].Reason, `failed permanently: queue: no handler for the job's type "nobody.handles": job `+unknown)

	_, err = q.Enqueue(ctx, nil, Type("panics"))
	require.NoError(t, err)
	require.Equal(t, "panics 2", recv(t, runs, 10*time.Second, "the run after the middleware panicked before the handler"))
	require.Equal(t, "panics 3", recv(t, runs, 10*time.Second, "the run after the middleware panicked after the handler"))
	testutil.Eventually(t, 10*time.Second, "the third run's ack", func() bool { return w.Stats().Processed == 2 })
	st := w.Stats()
	require.Equal(t, uint64(2), st.Panics)
	require.Equal(t, uint64(2), st.Retried)
	require.Equal(t, uint64(1), st.Dead)
	require.Equal(t, int64(5), seen.Load(), "the middleware saw every run")
}
