package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// startedQueue returns a started bounded queue full to its limit of 2,
// whose waiters never recheck on their own: only a wake-up moves them.
func startedQueue(t *testing.T, np newPoolFunc, cfg Config) *Queue {
	t.Helper()
	ctx := context.Background()
	p := np(t, pool.Config{})
	cfg.MaxLen = 2
	q := mustQueue(t, p, "waiting", cfg)
	q.recheck = time.Hour
	require.NoError(t, q.Start(group(t)))
	testutil.Eventually(t, testutil.Wait, "the room subscriber", func() bool { return q.room.Load().subscribed.Load() })
	for range 2 {
		_, err := q.Enqueue(ctx, []byte("fill"))
		require.NoError(t, err)
	}
	return q
}

type enqueueResult struct {
	id  string
	err error
}

func waitingEnqueue(q *Queue, ctx context.Context) <-chan enqueueResult {
	done := make(chan enqueueResult, 1)
	go func() {
		id, err := q.Enqueue(ctx, []byte("waiter"), WaitForRoom())
		done <- enqueueResult{id, err}
	}()
	return done
}

func TestWaitForRoomIsWokenByAWorkerDraining(t *testing.T) {
	testWaitForRoomIsWoken(t, miniPool)
}

func TestWaitForRoomIsWokenByAWorkerDraining_Server(t *testing.T) {
	testWaitForRoomIsWoken(t, serverPool)
}

func testWaitForRoomIsWoken(t *testing.T, np newPoolFunc) {
	q := startedQueue(t, np, Config{})
	r := q.room.Load()
	done := waitingEnqueue(q, context.Background())
	testutil.Eventually(t, testutil.Wait, "the producer to wait", func() bool { return r.count() == 1 })
	select {
	case res := <-done:
		t.Fatalf("the producer did not wait: %v", res.err)
	default:
	}
	ran := make(chan string, 10)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		ran <- string(j.Payload)
		return nil
	}, WorkerConfig{Concurrency: 1})
	res := testutil.Recv(t, done, "the waiting producer")
	require.NoError(t, res.err)
	require.NotEmpty(t, res.id)
	require.NotZero(t, r.wakes.Load(), "woken by something other than a message")
	for range 3 {
		testutil.Recv(t, ran, "a job to run")
	}
}

func TestWaitForRoomReturnsOnCancel(t *testing.T) {
	q := startedQueue(t, miniPool, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := waitingEnqueue(q, ctx)
	// Registered (count) is not yet waiting: the producer still tries once
	// more, and a cancel that ends that enqueue before it is sent is a plain
	// context error (nothing was refused). Its refusal leaves the waiters
	// mark in Redis; once the mark is there, the producer is refused and
	// waits, and only the cancel ends its wait.
	testutil.Eventually(t, testutil.Wait, "the producer to wait", func() bool {
		n, err := q.p.Client().Exists(context.Background(), q.k.waitersKey()).Result()
		return q.room.Load().count() == 1 && err == nil && n == 1
	})
	cancel()
	res := testutil.Recv(t, done, "the cancelled producer")
	require.ErrorIs(t, res.err, context.Canceled)
	require.ErrorIs(t, res.err, ErrQueueFull)
	require.Zero(t, q.room.Load().count())
	require.Equal(t, int64(2), queueLen(t, q))
}

func TestWaitForRoomBoundsWaiters(t *testing.T) {
	q := startedQueue(t, miniPool, Config{MaxWaiters: 2})
	ctx, cancel := context.WithCancel(context.Background())
	a, b := waitingEnqueue(q, ctx), waitingEnqueue(q, ctx)
	testutil.Eventually(t, testutil.Wait, "two waiters", func() bool { return q.room.Load().count() == 2 })
	_, err := q.Enqueue(context.Background(), []byte("third"), WaitForRoom())
	require.ErrorIs(t, err, ErrTooManyWaiters)
	require.ErrorIs(t, err, ErrQueueFull)
	cancel()
	require.ErrorIs(t, testutil.Recv(t, a, "waiter a").err, context.Canceled)
	require.ErrorIs(t, testutil.Recv(t, b, "waiter b").err, context.Canceled)
}

func TestWaitForRoomNeedsStart(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "unstarted", Config{MaxLen: 1})
	_, err := q.Enqueue(ctx, []byte("j"), WaitForRoom()) // room: no wait needed
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("j"), WaitForRoom())
	require.ErrorIs(t, err, ErrNotStarted)
	require.ErrorIs(t, err, ErrQueueFull)
}

func TestWaitForRoomEndsWhenTheGroupCloses(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "closing", Config{MaxLen: 1})
	q.recheck = time.Hour
	g := group(t)
	require.NoError(t, q.Start(g))
	require.ErrorIs(t, q.Start(g), ErrAlreadyStarted)
	_, err := q.Enqueue(ctx, []byte("j"))
	require.NoError(t, err)
	done := waitingEnqueue(q, ctx)
	testutil.Eventually(t, testutil.Wait, "the producer to wait", func() bool { return q.room.Load().count() == 1 })
	cctx, cancel := context.WithTimeout(ctx, testutil.Wait)
	defer cancel()
	require.NoError(t, g.Close(cctx))
	res := testutil.Recv(t, done, "the producer after close")
	require.True(t, errors.Is(res.err, ErrNotStarted) && errors.Is(res.err, ErrQueueFull), "%v", res.err)
}

// TestWaitForRoomRechecksAfterALostWakeUp: with no consumer to publish, a
// waiter still finds the room a Purge-like deletion made, within the
// recheck.
func TestWaitForRoomRechecksAfterALostWakeUp(t *testing.T) {
	ctx := context.Background()
	q := startedQueue(t, miniPool, Config{})
	q.room.Load().recheck = 20 * time.Millisecond
	done := waitingEnqueue(q, ctx)
	testutil.Eventually(t, testutil.Wait, "the producer to wait", func() bool { return q.room.Load().count() == 1 })
	require.NoError(t, q.p.Client().RPop(ctx, q.k.ready).Err()) // room, and nobody says so
	require.NoError(t, testutil.Recv(t, done, "the producer").err)
	require.Zero(t, q.room.Load().wakes.Load())
}
