package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A panic in OnError or Backoff is recovered like a handler's: the process
// survives, the job is retried with the default delay, and the worker keeps
// running.
func TestPanickingCallbacksAreRecovered(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "callbacks", Config{})
	done := make(chan int, 1)
	var onError, backoff atomic.Int32
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		if j.Attempt < 2 {
			return errors.New("flaky")
		}
		done <- j.Attempt
		return nil
	}, WorkerConfig{
		RetryBase: 10 * time.Millisecond, RetryMax: 10 * time.Millisecond,
		OnError: func(*Job, error) { onError.Add(1); panic("OnError broke") },
		Backoff: func(int, error) time.Duration { backoff.Add(1); panic("Backoff broke") },
	})
	_, err := q.Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	select {
	case attempt := <-done:
		require.Equal(t, 2, attempt)
	case <-time.After(10 * time.Second):
		t.Fatal("the job was not retried")
	}
	require.Equal(t, int32(1), onError.Load())
	require.Equal(t, int32(1), backoff.Load())
	testutil.Eventually(t, 5*time.Second, "counters", func() bool {
		s := w.Stats()
		return s.Processed == 1 && s.Failed == 1 && s.Retried == 1
	})
}
