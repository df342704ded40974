package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
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
		a, _, err := r.add(0, roomLen)
		require.NoError(t, err)
		b, _, err := r.add(0, roomLen)
		require.NoError(t, err)
		r.wake(roomLen, 1) // room for one: a
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

// The room subscriber outlives a Redis restart: a waiter waiting through it
// is woken (the resubscription wakes everyone), and afterwards a new waiter
// is woken by a message from a draining worker, not by the recheck.
func TestWaitForRoomSurvivesARedisRestart(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "restart", Config{MaxLen: 2})
	q.recheck = time.Hour
	require.NoError(t, q.Start(group(t)))
	r := q.room.Load()
	testutil.Eventually(t, testutil.Wait, "the room subscriber", func() bool { return r.subscribed.Load() })
	fill := func() {
		t.Helper()
		testutil.Eventually(t, testutil.Wait, "the queue full", func() bool {
			_, err := q.Enqueue(ctx, []byte("fill"))
			return errors.Is(err, ErrQueueFull)
		})
	}
	fill()
	done := waitingEnqueue(q, ctx)
	testutil.Eventually(t, testutil.Wait, "the producer to wait", func() bool { return r.count() == 1 })
	srv.Restart() // no persistence: the queue comes back empty
	require.NoError(t, testutil.Recv(t, done, "the producer waiting through the restart").err)
	testutil.Eventually(t, testutil.Wait, "the room subscriber again", func() bool { return r.subscribed.Load() })

	fill()
	before := r.wakes.Load()
	done = waitingEnqueue(q, ctx)
	testutil.Eventually(t, testutil.Wait, "the producer to wait", func() bool { return r.count() == 1 })
	startWorker(t, group(t), q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 1})
	require.NoError(t, testutil.Recv(t, done, "the producer woken after the restart").err)
	require.Greater(t, r.wakes.Load(), before, "woken by something other than a message")
}

// A job with an ID refused as full leaves no idempotency key: once there is
// room, the same ID is accepted, not refused as a duplicate. Same for a
// large payload: no payload stays behind.
func TestMaxLenRefusedIDIsNotADuplicateLater(t *testing.T) {
	ctx := context.Background()
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "ids", Config{MaxLen: 1})
	_, err := q.Enqueue(ctx, []byte("fill"))
	require.NoError(t, err)
	large := bytes.Repeat([]byte("x"), 5000)
	_, err = q.Enqueue(ctx, large, ID("a"))
	require.ErrorIs(t, err, ErrQueueFull)
	_, err = q.Enqueue(ctx, []byte("d"), ID("b"), Delay(time.Hour))
	require.ErrorIs(t, err, ErrQueueFull)
	n, err := p.Client().Exists(ctx, q.k.unique("a"), q.k.unique("b"), q.k.payloads).Result()
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, p.Client().RPop(ctx, q.k.ready).Err())
	_, err = q.Enqueue(ctx, large, ID("a"))
	require.NoError(t, err)
}

// MaxLen at the int64 edge: nothing is refused, and Lua's doubles do not
// turn the limit into something smaller.
func TestMaxLenAtInt64Max(t *testing.T) {
	ctx := context.Background()
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "huge", Config{MaxLen: math.MaxInt64})
	_, err := q.Enqueue(ctx, []byte("a"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("b"), Delay(time.Hour), ID("x"))
	require.NoError(t, err)
	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("c"), []byte("d")})
	require.NoError(t, err)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.False(t, s.Full)
	require.Equal(t, int64(math.MaxInt64), s.MaxLen)
}

// An unbounded queue's Enqueue is one call of pushScript: an LPUSH and the
// ring of the queue's doorbell (one ZADD) in one atomic script, and nothing
// else (three commands as INFO commandstats counts them).
func TestUnboundedEnqueueCommandsUnchanged(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "free", Config{})
	_, err := q.Enqueue(ctx, []byte("warm"))
	require.NoError(t, err)
	require.NoError(t, p.Client().ConfigResetStat(ctx).Err())
	for range 10 {
		_, err := q.Enqueue(ctx, []byte("j"))
		require.NoError(t, err)
	}
	info, err := p.Client().Info(ctx, "commandstats").Result()
	require.NoError(t, err)
	require.Contains(t, info, "cmdstat_lpush:calls=10,")
	require.Contains(t, info, "cmdstat_zadd:calls=10,")
	require.Contains(t, info, "cmdstat_evalsha:calls=10,")
	require.NotContains(t, info, "cmdstat_eval:")
	stats := redistest.ParseCommandStats(info)
	require.Equal(t, int64(30), redistest.TotalCalls(stats, "config|resetstat", "info"), "three commands per job: %v", stats)
}

// A worker's clock stepped back (NTP) must not freeze the drain sample: the
// sample taken before the step would otherwise be in the future, never
// stale and never replaced, until the clock caught up.
func TestFullErrorRetryAfterAfterTheClockStepsBack(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	clk := testutil.NewClock()
	q := mustQueue(t, p, "step", Config{MaxLen: 5, Now: clk.Now})
	drain := func(gone int) {
		pipe := p.Client().Pipeline()
		cmd := q.drainHook(ctx, pipe, gone)
		_, _ = pipe.Exec(ctx)
		q.drainDone(ctx, p.Client(), cmd, gone)
	}
	for range 5 {
		_, err := q.Enqueue(ctx, []byte("j"))
		require.NoError(t, err)
	}
	drain(1)
	clk.Advance(time.Second)
	drain(10) // 10 jobs/s
	clk.Set(clk.Now().Add(-time.Hour))
	drain(1)
	clk.Advance(time.Second)
	drain(5) // 6 jobs in the 1s since the step
	q2 := mustQueue(t, p, "step", Config{MaxLen: 2, Now: clk.Now})
	_, err := q2.Enqueue(ctx, []byte("j"))
	var full *FullError
	require.ErrorAs(t, err, &full)
	require.Equal(t, 667*time.Millisecond, full.RetryAfter, "4 jobs to go at 6 jobs/s (the window counts the call that opened it)")
}

// With no consumer to take them, wake markers pile up at the tail of the
// ready list (one each time the wake flag has expired and a delayed job
// becomes the earliest); the bound must not count them as jobs, or a queue
// whose Stats show room refuses enqueues, with a FullError.Len above the
// jobs it holds.
func TestMaxLenDoesNotCountPiledUpWakeMarkers(t *testing.T) {
	ctx := context.Background()
	m := redistest.Mini(t)
	p := mustPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := mustQueue(t, p, "markers", Config{MaxLen: 3})
	for i := range 2 {
		_, err := q.Enqueue(ctx, []byte("d"), Delay(time.Hour-time.Duration(i)*time.Minute)) // each the new earliest
		require.NoError(t, err)
		m.FastForward(wakeTTL + time.Second) // the wake flag expires; no consumer took the marker
	}
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), s.Ready+s.Delayed)
	require.False(t, s.Full)
	_, err = q.Enqueue(ctx, []byte("fits"))
	require.NoError(t, err, "2 jobs of 3: there is room")
}

// Many waiters and a small room, woken by messages only (no recheck): every
// one of them gets in, and the queue never holds more than MaxLen.
func TestWaitForRoomManyWaitersSmallRoom(t *testing.T) {
	testManyWaiters(t, miniPool)
}

func TestWaitForRoomManyWaitersSmallRoom_Server(t *testing.T) {
	testManyWaiters(t, serverPool)
}

func testManyWaiters(t *testing.T, np newPoolFunc) {
	q := startedQueue(t, np, Config{}) // MaxLen 2, full, recheck an hour
	r := q.room.Load()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 20
	dones := make([]<-chan enqueueResult, n)
	for i := range dones {
		dones[i] = waitingEnqueue(q, ctx)
	}
	testutil.Eventually(t, testutil.Wait, "every producer to wait", func() bool { return r.count() == n })
	var over atomic.Bool
	startWorker(t, group(t), q, func(ctx context.Context, _ *Job) error {
		if s, err := q.Stats(ctx); err == nil && s.Ready+s.Delayed > 2 {
			over.Store(true)
		}
		return nil
	}, WorkerConfig{Concurrency: 1})
	for i, d := range dones {
		res := recv(t, d, 30*time.Second, fmt.Sprintf("waiter %d", i))
		require.NoError(t, res.err)
	}
	require.False(t, over.Load(), "the queue went over MaxLen")
}
