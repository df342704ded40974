package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// queueLen is what MaxLen bounds: ready (wake markers aside) plus delayed.
func queueLen(t *testing.T, q *Queue) int64 {
	t.Helper()
	s, err := q.Stats(context.Background())
	require.NoError(t, err)
	return s.Ready + s.Delayed
}

func TestMaxLenConcurrentProducersNeverOvershoot(t *testing.T) {
	testMaxLenNeverOvershoots(t, miniPool)
}

func TestMaxLenConcurrentProducersNeverOvershoot_Server(t *testing.T) {
	testMaxLenNeverOvershoots(t, serverPool)
}

// testMaxLenNeverOvershoots races 16 producers (the pool's request lane
// has 20 connections), each enqueueing plain,
// delayed, idempotent and large jobs and batches, against a limit of 50:
// exactly 50 jobs get in, every refusal is a *FullError, and no payload of
// a refused job stays behind.
func testMaxLenNeverOvershoots(t *testing.T, np newPoolFunc) {
	ctx := context.Background()
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "bounded", Config{MaxLen: 50})
	large := bytes.Repeat([]byte("x"), 5000)
	var mu sync.Mutex
	accepted := 0
	var wg sync.WaitGroup
	errs := make(chan error, 16*40)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				var err error
				n := 1
				switch i % 5 {
				case 0:
					_, err = q.Enqueue(ctx, []byte("plain"))
				case 1:
					_, err = q.Enqueue(ctx, []byte("later"), Delay(time.Hour))
				case 2:
					_, err = q.Enqueue(ctx, []byte("unique"), ID(fmt.Sprintf("job-%d-%d", g, i)))
				case 3:
					_, err = q.Enqueue(ctx, large)
				case 4:
					n = 2
					_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("b1"), large})
				}
				if err == nil {
					mu.Lock()
					accepted += n
					mu.Unlock()
				} else if !errors.Is(err, ErrQueueFull) {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("an enqueue failed otherwise than full: %v", err)
	}
	require.LessOrEqual(t, accepted, 50)
	require.GreaterOrEqual(t, accepted, 49, "a batch of 2 may not fit in the last slot")
	require.Equal(t, int64(accepted), queueLen(t, q))
	// Payloads kept apart: exactly those of accepted jobs.
	elems, err := p.Client().LRange(ctx, q.k.ready, 0, -1).Result()
	require.NoError(t, err)
	refs := 0
	for _, e := range elems {
		if e == wakeMarker {
			continue
		}
		env, err := decodeEnvelope([]byte(e))
		require.NoError(t, err)
		if env.ref != "" {
			refs++
		}
	}
	n, err := p.Client().HLen(ctx, q.k.payloads).Result()
	require.NoError(t, err)
	require.Equal(t, int64(refs), n, "payloads of refused jobs were left behind")
}

func TestMaxLenBatchIsAllOrNoneAtTheEdge(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "edge", Config{MaxLen: 10})
	for range 6 {
		_, err := q.Enqueue(ctx, []byte("j"))
		require.NoError(t, err)
	}
	_, err := q.Enqueue(ctx, []byte("d"), Delay(time.Minute)) // delayed jobs count
	require.NoError(t, err)
	large := bytes.Repeat([]byte("y"), 5000)
	ids, err := q.EnqueueBatch(ctx, [][]byte{[]byte("a"), large, []byte("c"), large})
	require.ErrorIs(t, err, ErrQueueFull)
	require.Nil(t, ids)
	var full *FullError
	require.ErrorAs(t, err, &full)
	require.Equal(t, FullError{Queue: "edge", Len: 7, Limit: 10}, *full)
	require.Equal(t, int64(7), queueLen(t, q), "a refused batch wrote jobs")
	n, err := p.Client().HLen(ctx, q.k.payloads).Result()
	require.NoError(t, err)
	require.Zero(t, n, "a refused batch left its payloads")

	ids, err = q.EnqueueBatch(ctx, [][]byte{[]byte("a"), large, []byte("c")}, Delay(time.Minute))
	require.NoError(t, err)
	require.Len(t, ids, 3)
	require.Equal(t, int64(10), queueLen(t, q))
	_, err = q.Enqueue(ctx, []byte("one more"))
	require.ErrorAs(t, err, &full)
	require.Equal(t, int64(10), full.Len)

	// A duplicate ID on a full queue is a duplicate, not a refusal.
	q2 := mustQueue(t, p, "dup", Config{MaxLen: 1})
	_, err = q2.Enqueue(ctx, []byte("x"), ID("same"))
	require.NoError(t, err)
	_, err = q2.Enqueue(ctx, []byte("x"), ID("same"))
	require.ErrorIs(t, err, ErrDuplicate)

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(10), s.MaxLen)
	require.True(t, s.Full)
	require.Equal(t, int64(2), s.Refused)
	require.Equal(t, uint64(2), s.RefusedLocal)
}

func TestMaxLenRejectsNegative(t *testing.T) {
	p := miniPool(t, pool.Config{})
	_, err := New(p, "q", Config{MaxLen: -1})
	require.ErrorContains(t, err, "MaxLen")
}

// TestFullErrorRetryAfterFromDrainRate feeds the drain counters through the
// acker's hook on a manual clock: 10 jobs gone in the last 1s window is 10
// jobs/s, so a queue 3 over its limit has room in 400ms (4 jobs: 3 over,
// plus the one being enqueued); a sample older than drainStale gives no
// estimate.
func TestFullErrorRetryAfterFromDrainRate(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	clk := testutil.NewClock()
	q := mustQueue(t, p, "rate", Config{MaxLen: 5, Now: clk.Now})
	drain := func(gone int) {
		pipe := p.Client().Pipeline()
		cmd := q.drainHook(ctx, pipe, gone)
		_, _ = pipe.Exec(ctx)
		q.drainDone(ctx, p.Client(), cmd, gone) // runs it again on a NOSCRIPT
	}
	for range 5 {
		_, err := q.Enqueue(ctx, []byte("j"))
		require.NoError(t, err)
	}
	_, err := q.Enqueue(ctx, []byte("j"))
	var full *FullError
	require.ErrorAs(t, err, &full)
	require.Zero(t, full.RetryAfter, "no drain seen yet")

	drain(3) // the first sample starts the window
	clk.Advance(time.Second)
	drain(10)
	clk.Advance(time.Second)
	drain(10) // the last window: 10 jobs in 1s
	// Over the limit by 3: MaxLen lowered on a second Queue value.
	q8 := mustQueue(t, p, "rate", Config{MaxLen: 2, Now: clk.Now})
	_, err = q8.Enqueue(ctx, []byte("j"))
	require.ErrorAs(t, err, &full)
	require.Equal(t, FullError{Queue: "rate", Len: 5, Limit: 2, RetryAfter: 400 * time.Millisecond}, *full)
	require.Contains(t, err.Error(), "retry after 400ms")

	clk.Advance(drainStale + time.Second)
	_, err = q8.Enqueue(ctx, []byte("j"))
	require.ErrorAs(t, err, &full)
	require.Zero(t, full.RetryAfter, "a stale sample gave an estimate")
}

// TestFullErrorRetryAfterFromWorkers: with a worker draining a full queue
// through the real acker, a refusal soon carries an estimate.
func TestFullErrorRetryAfterFromWorkers(t *testing.T) {
	ctx := context.Background()
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "workers", Config{MaxLen: 20})
	g := group(t)
	slow := make(chan struct{})
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		select {
		case <-slow:
		case <-time.After(5 * time.Millisecond):
		}
		return nil
	}, WorkerConfig{Concurrency: 2})
	var full *FullError
	testutil.Eventually(t, 20*time.Second, "a refusal with a RetryAfter", func() bool {
		_, err := q.Enqueue(ctx, []byte("j"))
		if err == nil || !errors.As(err, &full) {
			return false
		}
		return full.RetryAfter > 0
	})
	close(slow)
	require.Equal(t, int64(20), full.Limit)
	require.Less(t, full.RetryAfter, time.Minute)
}

// A Durable enqueue on a bounded queue goes through the bound too, and is
// on the replica when it returns.
func TestMaxLenDurableEnqueue(t *testing.T) {
	master, replica := replicated(t)
	p := mustPool(t, pool.Config{Addrs: []string{master.Addr()}, ReadTimeout: 15 * time.Second})
	q := mustQueue(t, p, "durable", Config{MaxLen: 2})
	ctx := context.Background()
	// WAIT returns as soon as the replica has the write: its timeout only
	// bounds a replica that never acknowledges, and 1s was missed on a
	// loaded 2-core machine (ErrNotReplicated), as in
	// TestDurableEnqueueReturnsWhenTheReplicaHasTheJob. The pool's
	// ReadTimeout must exceed it (Durable's doc).
	dur := Durable(1, 10*time.Second)
	_, err := q.Enqueue(ctx, []byte("a"), dur)
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("b"), dur, ID("b"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("b"), dur, ID("b"))
	require.ErrorIs(t, err, ErrDuplicate)
	v, err := replica.Do(ctx, "LLEN", q.k.ready)
	require.NoError(t, err)
	require.Equal(t, "2", v)
	_, err = q.Enqueue(ctx, []byte("c"), dur, Delay(time.Hour))
	var full *FullError
	require.ErrorAs(t, err, &full)
	require.Equal(t, int64(2), full.Len)
	require.Equal(t, int64(2), queueLen(t, q))
}

// A plain batch over maxLuaBytes is pushed with a plain LPUSH and taken back
// when it does not fit: all or none still, with no element through Lua.
func TestMaxLenLargeBatchIsAllOrNone(t *testing.T) {
	testLargeBatch(t, miniPool)
}

func TestMaxLenLargeBatchIsAllOrNone_Server(t *testing.T) {
	testLargeBatch(t, serverPool)
}

func testLargeBatch(t *testing.T, np newPoolFunc) {
	ctx := context.Background()
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "large", Config{MaxLen: 600})
	job := bytes.Repeat([]byte("z"), 4000) // inline: at most 4 KiB
	batch := make([][]byte, 300)           // 1.2 MB of elements
	for i := range batch {
		batch[i] = job
	}
	_, err := q.Enqueue(ctx, []byte("first"))
	require.NoError(t, err)
	_, err = q.EnqueueBatch(ctx, batch)
	require.NoError(t, err)
	// A Redis that lost its scripts: the batch is taken back and sent again.
	require.NoError(t, p.Client().ScriptFlush(ctx).Err())
	_, err = q.EnqueueBatch(ctx, batch)
	var full *FullError
	require.ErrorAs(t, err, &full)
	require.Equal(t, int64(301), full.Len)
	require.Equal(t, int64(301), queueLen(t, q))
	last, err := p.Client().LIndex(ctx, q.k.ready, -1).Result()
	require.NoError(t, err)
	env, err := decodeEnvelope([]byte(last))
	require.NoError(t, err)
	require.Equal(t, "first", string(env.payload), "the take-back trimmed the wrong end")
	_, err = q.EnqueueBatch(ctx, batch[:299])
	require.NoError(t, err)
	require.Equal(t, int64(600), queueLen(t, q))
}
