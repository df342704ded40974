package queue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// namedHook counts the commands of each name a client sends, pipelined
// ones included.
type namedHook struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *namedHook) count(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[name]
}

func (h *namedHook) add(cmds ...redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	for _, c := range cmds {
		h.n[c.Name()]++
	}
}

func (h *namedHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *namedHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.add(cmd); return next(ctx, cmd) }
}
func (h *namedHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.add(cmds...); return next(ctx, cmds) }
}

// tailer runs Inspector.Tail on its own goroutine and hands its events
// over; stop ends it and returns Tail's error.
type tailer struct {
	events chan TailEvent
	done   chan error
	cancel context.CancelFunc
}

func startTail(in *Inspector, queues ...string) *tailer {
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tailer{events: make(chan TailEvent, 64), done: make(chan error, 1), cancel: cancel}
	go func() {
		tl.done <- in.Tail(ctx, queues, func(ev TailEvent) {
			select {
			case tl.events <- ev:
			default: // the test reads far fewer than 64
			}
		})
	}()
	return tl
}

func (tl *tailer) stop(t *testing.T) error {
	t.Helper()
	tl.cancel()
	return testutil.Recv(t, tl.done, "Tail to return")
}

func TestTailOutcomes(t *testing.T) {
	for name, newPool := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			var hook namedHook
			p := newPool(t, pool.Config{Hooks: []redis.Hook{&hook}})
			ctx := context.Background()
			q := mustQueue(t, p, "tailed", Config{})
			other := mustQueue(t, p, "other", Config{})
			in, err := NewInspector(p, "")
			require.NoError(t, err)
			g := group(t)
			cc := ConsumerConfig{HeartbeatInterval: MinHeartbeatInterval, HeartbeatTTL: time.Second}
			handler := func(_ context.Context, j *Job) error {
				switch string(j.Payload) {
				case "fail":
					return errors.New("it failed <b>")
				case "flaky":
					if j.Attempt == 1 {
						return errors.New("first try")
					}
				}
				return nil
			}
			fast := func(int, error) time.Duration { return time.Millisecond }
			w := startWorker(t, g, q, handler, WorkerConfig{Concurrency: 2, Backoff: fast}, cc)
			wo := startWorker(t, g, other, handler, WorkerConfig{Concurrency: 2})

			// Nobody follows: jobs cost no PUBLISH.
			ids, err := q.EnqueueBatch(ctx, [][]byte{[]byte("a"), []byte("b")})
			require.NoError(t, err)
			require.Len(t, ids, 2)
			testutil.Eventually(t, 10*time.Second, "jobs done", func() bool {
				s, err := q.Stats(ctx)
				return err == nil && s.Ready == 0 && s.InFlight == 0
			})
			require.Zero(t, hook.count("publish"), "no follower, no publish")
			require.False(t, w.tail.on.Load())

			tl := startTail(in, "tailed")
			testutil.Eventually(t, 10*time.Second, "the worker to learn of the follower", w.tail.on.Load)
			require.False(t, wo.tail.on.Load(), "another queue is not followed")

			done, err := q.Enqueue(ctx, []byte("ok"))
			require.NoError(t, err)
			ev := testutil.Recv(t, tl.events, "the done outcome")
			require.Equal(t, TailEvent{Queue: "tailed", ID: done, Outcome: "done", At: ev.At}, ev)
			require.False(t, ev.At.IsZero())

			flaky, err := q.Enqueue(ctx, []byte("flaky"), MaxAttempts(2))
			require.NoError(t, err)
			ev = testutil.Recv(t, tl.events, "the retry outcome")
			require.Equal(t, flaky, ev.ID)
			require.Equal(t, "retry", ev.Outcome)
			require.Equal(t, "first try", ev.Error)
			require.False(t, ev.RetryAt.IsZero())
			ev = testutil.Recv(t, tl.events, "the flaky job's success")
			require.Equal(t, TailEvent{Queue: "tailed", ID: flaky, Outcome: "done", At: ev.At}, ev)

			dead, err := q.Enqueue(ctx, []byte("fail"), MaxAttempts(1))
			require.NoError(t, err)
			ev = testutil.Recv(t, tl.events, "the dead outcome")
			require.Equal(t, dead, ev.ID)
			require.Equal(t, "dead", ev.Outcome)
			require.Contains(t, ev.Error, "it failed <b>")
			require.Equal(t, 1, ev.Attempts)

			// The other queue's outcomes are not published.
			before := hook.count("publish")
			_, err = other.Enqueue(ctx, []byte("ok"))
			require.NoError(t, err)
			testutil.Eventually(t, 10*time.Second, "other's job done", func() bool {
				s, err := other.Stats(ctx)
				return err == nil && s.Ready == 0 && s.InFlight == 0
			})
			require.Equal(t, before, hook.count("publish"))

			require.NoError(t, tl.stop(t))
			n, err := p.Client().ZCard(ctx, tailsKey("bq")).Result()
			require.NoError(t, err)
			require.Zero(t, n, "the follower unregistered")
			testutil.Eventually(t, 10*time.Second, "the worker to learn the follower left", func() bool { return !w.tail.on.Load() })
			before = hook.count("publish")
			_, err = q.Enqueue(ctx, []byte("ok"))
			require.NoError(t, err)
			testutil.Eventually(t, 10*time.Second, "the job done", func() bool {
				s, err := q.Stats(ctx)
				return err == nil && s.Ready == 0 && s.InFlight == 0
			})
			require.Equal(t, before, hook.count("publish"), "no follower left, no publish")
		})
	}
}

func TestTailRegistrationExpires(t *testing.T) {
	p := miniPool(t, pool.Config{})
	clock := testutil.NewClock()
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	in.now = clock.Now
	ctx := context.Background()
	require.NoError(t, in.tailRegister(ctx, []string{"a x"}))
	clock.Advance(tailTTL + time.Millisecond)
	require.NoError(t, in.tailRegister(ctx, []string{"b y"}))
	got, err := p.Client().ZRange(ctx, tailsKey("bq"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"b y"}, got, "an expired registration is dropped by the next one")
}

func TestTailErrors(t *testing.T) {
	p := miniPool(t, pool.Config{})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	ctx := context.Background()
	noop := func(TailEvent) {}
	err = in.Tail(ctx, nil, noop)
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorContains(t, err, "1..100 queues, got 0")
	many := make([]string, MaxTailQueues+1)
	for i := range many {
		many[i] = "q" + strings.Repeat("x", i)
	}
	require.ErrorIs(t, in.Tail(ctx, many, noop), ErrInvalidArgument)
	err = in.Tail(ctx, []string{"ok", "bad name"}, noop)
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorContains(t, err, "bad name")

	// A pool without a blocking lane cannot tail.
	np := mustPool(t, pool.Config{Addrs: []string{redistest.Mini(t).Addr()}, Blocking: pool.BlockingConfig{NoBlocking: true}})
	nin, err := NewInspector(np, "")
	require.NoError(t, err)
	require.Error(t, nin.Tail(ctx, []string{"q"}, noop))

	// Redis that never answers: Tail fails within its context.
	bp := mustPool(t, pool.Config{Addrs: []string{redistest.BlackHole(t)}})
	bin, err := NewInspector(bp, "")
	require.NoError(t, err)
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = bin.Tail(tctx, []string{"q"}, noop)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestTailLost(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	tl := startTail(in, "q")
	testutil.Eventually(t, 10*time.Second, "the follower registered", func() bool {
		n, err := p.Client().ZCard(context.Background(), tailsKey("bq")).Result()
		return err == nil && n == 1
	})
	srv.Kill()
	err = testutil.Recv(t, tl.done, "Tail to end with the server")
	require.ErrorIs(t, err, ErrTailLost)
	tl.cancel()
}
