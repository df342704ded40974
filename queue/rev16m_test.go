package queue

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A batch of more jobs than MaxLen can never fit: with WaitForRoom it must
// fail at once, not wait until ctx ends; without, its FullError must not
// promise room (RetryAfter 0).
func TestMaxLenBatchOverTheLimitNeverWaits(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := startedQueue(t, miniPool, Config{}) // MaxLen 2, full
	// A fresh drain sample, so that a RetryAfter would be computed.
	pipe := q.p.Client().Pipeline()
	cmd := q.drainHook(ctx, pipe, 1)
	_, _ = pipe.Exec(ctx)
	q.drainDone(ctx, q.p.Client(), cmd, 1)
	require.NoError(t, q.p.Client().HSet(ctx, q.k.drainKey(), "dn", 10, "dt", 1000, "t", time.Now().UnixMilli()).Err())

	_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	var full *FullError
	require.ErrorAs(t, err, &full)
	require.Zero(t, full.RetryAfter, "a batch over MaxLen was promised room")

	done := make(chan error, 1)
	go func() {
		_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")}, WaitForRoom())
		done <- err
	}()
	err = testutil.Recv(t, done, "a batch over MaxLen with WaitForRoom")
	require.ErrorIs(t, err, ErrQueueFull)
	require.NotErrorIs(t, err, context.Canceled)
}

// A waiter woken when its ctx has ended cannot use the room it was woken
// for: it must pass the wake-up to the next waiter, not lose it (which
// would cost that waiter a recheck).
func TestWaitForRoomPassesOnAWakeItCannotUse(t *testing.T) {
	for range 50 { // the select in wait picks either ready case
		r := &waiters{max: 10, recheck: time.Hour}
		a, _, err := r.add(0)
		require.NoError(t, err)
		b, _, err := r.add(0)
		require.NoError(t, err)
		r.wake(1) // room for one: a
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a's ctx ends at the same time
		require.ErrorIs(t, r.wait(ctx, a), context.Canceled)
		select {
		case <-b.ch:
		default:
			t.Fatal("the wake-up a could not use was lost")
		}
		require.Zero(t, r.count())
	}
}

// A waiter woken and refused again (someone else took the room) keeps its
// place: it is still the oldest, and MaxWaiters, which admitted it, does not
// turn it away for the producers that arrived while it retried.
func TestWaitForRoomRefusedAgainKeepsItsPlace(t *testing.T) {
	q := startedQueue(t, miniPool, Config{MaxWaiters: 1})
	r := q.room.Load()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := waitingEnqueue(q, ctx)
	testutil.Eventually(t, testutil.Wait, "the producer to wait", func() bool { return r.count() == 1 })
	// Room for one is announced and, before the woken producer retries,
	// a newcomer takes the one waiting place; the queue is still full.
	r.mu.Lock()
	close(r.list[0].ch)
	r.seq++
	newcomer := waiter{seq: r.seq, ch: make(chan struct{})}
	r.list = []waiter{newcomer}
	r.mu.Unlock()
	testutil.Eventually(t, testutil.Wait, "the woken producer to wait again or give up", func() bool {
		select {
		case res := <-done:
			t.Fatalf("the woken producer gave up: %v", res.err)
		default:
		}
		return r.count() == 2
	})
	r.mu.Lock()
	require.NotEqual(t, newcomer.ch, r.list[0].ch, "the woken producer lost its place")
	r.mu.Unlock()
	r.remove(newcomer)
	select {
	case res := <-done:
		t.Fatalf("the woken producer gave up: %v", res.err)
	default:
	}
	cancel()
	require.ErrorIs(t, testutil.Recv(t, done, "the producer").err, context.Canceled)
}

// noScriptHook makes a concurrent producer LPUSH right after a MULTI came
// back with NOSCRIPT: between the batch's push and its take-back.
type noScriptHook struct {
	fired atomic.Bool
	push  func()
}

func (h *noScriptHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *noScriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *noScriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") && !h.fired.Swap(true) {
				h.push()
			}
		}
		return err
	}
}

// A large plain batch sent to a Redis that lost its scripts while another
// producer enqueues: the batch is written exactly once, and the caller is
// told the truth (here: it fits, so it is accepted).
func TestMaxLenLargeBatchNoScriptWithAConcurrentProducer(t *testing.T) {
	testLargeBatchNoScript(t, miniPool)
}

func TestMaxLenLargeBatchNoScriptWithAConcurrentProducer_Server(t *testing.T) {
	testLargeBatchNoScript(t, serverPool)
}

func testLargeBatchNoScript(t *testing.T, np newPoolFunc) {
	ctx := context.Background()
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "large", Config{MaxLen: 700})
	job := bytes.Repeat([]byte("z"), 4000)
	batch := make([][]byte, 300)
	for i := range batch {
		batch[i] = job
	}
	_, err := q.EnqueueBatch(ctx, batch) // loads the scripts
	require.NoError(t, err)
	require.NoError(t, p.Client().ScriptFlush(ctx).Err())
	h := &noScriptHook{push: func() {
		if err := p.Client().LPush(ctx, q.k.ready, "other").Err(); err != nil {
			t.Error(err)
		}
	}}
	p.Client().AddHook(h)
	_, err = q.EnqueueBatch(ctx, batch)
	require.NoError(t, err)
	want := int64(600) // the batch twice
	if h.fired.Load() {
		want++ // and the other producer's job, pushed in the window
	}
	require.Equal(t, want, queueLen(t, q), "the batch was written twice, or not at all")
}
