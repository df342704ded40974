package queue

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// Issue 13 item 2: whatever the public API accepts must decode, or the job
// is dead-lettered as malformed on its first fetch.
func TestExtremeAcceptedOptionsRunAndRetry(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "extreme", Config{})
	ctx := context.Background()
	runs := make(chan int, 4)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		runs <- j.Attempt
		if j.Attempt == 1 {
			return errTestFail
		}
		return nil
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})
	_, err := q.Enqueue(ctx, []byte("x"), MaxAttempts(math.MaxInt32), Timeout(math.MaxInt64))
	require.NoError(t, err)
	for want := 1; want <= 2; want++ {
		select {
		case got := <-runs:
			require.Equal(t, want, got)
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d never came; stats %+v", want, w.Stats())
		}
	}
	eventually(t, 5*time.Second, "processed", func() bool { return w.Stats().Processed == 1 })
	require.Zero(t, w.Stats().Malformed)
	require.Zero(t, w.Stats().Dead)

	// What the decoder cannot hold is refused with a clear error.
	_, err = q.Enqueue(ctx, []byte("x"), MaxAttempts(math.MaxInt32+1))
	require.ErrorContains(t, err, "MaxAttempts(2147483648): must be at most 2147483647")
	_, err = New(p, "x", Config{MaxAttempts: math.MaxInt32 + 1})
	require.ErrorContains(t, err, "Config.MaxAttempts must be at most 2147483647")
	_, err = NewWorker(q, func(context.Context, *Job) error { return nil }, WorkerConfig{MaxDeliveries: math.MaxInt32 + 1})
	require.ErrorContains(t, err, "WorkerConfig.MaxDeliveries must be at most 2147483647")
}

// FuzzEnqueueDecodes: every job Enqueue accepts decodes to what was given,
// and so do its next attempt and its next delivery.
func FuzzEnqueueDecodes(f *testing.F) {
	f.Add(int64(1), int64(0), int64(0), "", []byte("p"), int64(0))
	f.Add(int64(math.MaxInt32), int64(math.MaxInt64), int64(math.MaxInt64), "order-42", []byte{}, int64(-1))
	f.Add(int64(math.MaxInt64), int64(1), int64(-1), "a~b", []byte("x|y"), int64(math.MinInt64))
	f.Add(int64(5), int64(time.Millisecond), int64(time.Hour), "id", make([]byte, 5000), int64(1<<62))
	p, err := pool.New(pool.Config{Addrs: []string{"127.0.0.1:1"}})
	require.NoError(f, err)
	f.Cleanup(func() { _ = p.Close() })
	f.Fuzz(func(t *testing.T, maxAttempts, timeout, delay int64, id string, payload []byte, nowNs int64) {
		now := time.Unix(0, nowNs)
		q, err := New(p, "fz", Config{MaxAttempts: int(maxAttempts), Now: func() time.Time { return now }})
		if err != nil {
			return
		}
		opts := []EnqueueOption{Delay(time.Duration(delay))}
		if timeout != 0 {
			opts = append(opts, Timeout(time.Duration(timeout)))
		}
		if id != "" {
			opts = append(opts, ID(id))
		}
		if maxAttempts%3 == 0 {
			opts = append(opts, MaxAttempts(int(maxAttempts/3)))
		}
		pr, err := q.prepare(payload, opts)
		if err != nil {
			return
		}
		e, err := decodeEnvelope(pr.elem)
		require.NoError(t, err, "an accepted job must decode: %q", preview(pr.elem))
		require.Equal(t, pr.id, e.id)
		require.GreaterOrEqual(t, e.maxAttempts, 1)
		if !pr.due.IsZero() {
			require.Positive(t, q.uniqueTTL(pr.due), "the idempotency key's TTL")
		}
		next := e
		next.attempt = e.maxAttempts - 1
		next.deliveries = math.MaxInt32
		_, err = decodeEnvelope(next.encode())
		require.NoError(t, err, "its last attempt and any delivery count decode")
	})
}

var errTestFail = errors.New("test failure")

// Issue 13 item 9: the idempotency key's TTL never overflows, and a
// UniqueTTL Redis cannot express is refused by New.
func TestUniqueTTLIsValid(t *testing.T) {
	testUniqueTTLIsValid(t, miniPool, false)
}

func TestUniqueTTLIsValid_Server(t *testing.T) {
	testUniqueTTLIsValid(t, serverPool, true)
}

// real: miniredis keeps TTLs as a time.Duration, which overflows beyond
// 292 years; only a real Redis can hold the far key.
func testUniqueTTLIsValid(t *testing.T, np newPoolFunc, real bool) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "ttl", Config{})
	far := time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := q.Enqueue(ctx, []byte("x"), ID("far"), At(far))
	require.NoError(t, err)
	if real {
		ttl, err := p.Client().Do(ctx, "PTTL", q.k.unique("far")).Int64()
		require.NoError(t, err)
		require.Greater(t, ttl, time.Until(far).Milliseconds(), "the key lives until the job is due and beyond")
		_, err = q.Enqueue(ctx, []byte("x"), ID("far"), At(far))
		require.ErrorIs(t, err, ErrDuplicate)
	}

	_, err = q.Enqueue(ctx, []byte("x"), At(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)))
	require.ErrorContains(t, err, "At(10000-01-01 00:00:00 +0000 UTC): must be before the year 10000")
	_, err = New(p, "ttl", Config{UniqueTTL: time.Microsecond})
	require.ErrorContains(t, err, "Config.UniqueTTL must be at least 1ms, got 1µs")
	q2 := mustQueue(t, p, "ttl2", Config{UniqueTTL: math.MaxInt64})
	_, err = q2.Enqueue(ctx, []byte("x"), ID("long"), At(far))
	require.NoError(t, err)
	_, err = q2.Enqueue(ctx, []byte("x"), ID("now"))
	require.NoError(t, err)
}
