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

// TestUniqueKeyReleasedOnlyByItsJob: a job whose idempotency key lapsed
// (deleted by hand here, as its UniqueTTL would) while it ran, and whose ID
// a newer job then took, must not free the newer job's key at its ack or
// its death: a third enqueue with the ID is still a duplicate.
func TestUniqueKeyReleasedOnlyByItsJob(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail bool // the first job dies (MaxAttempts 1) instead of succeeding
		part bool // the jobs are partitioned (partEnqueueScript writes the key)
	}{{"ack", false, false}, {"dead", true, false}, {"ack-partitioned", false, true}, {"dead-partitioned", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPool(t, pool.Config{Addrs: []string{redistest.Server(t).Addr()}})
			q := mustQueue(t, p, "uniq-owner-"+tc.name, Config{})
			ctx := context.Background()
			var mu sync.Mutex
			gates := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
			started := make(chan string, 4)
			t.Cleanup(func() {
				mu.Lock()
				defer mu.Unlock()
				for _, g := range gates {
					select {
					case <-g:
					default:
						close(g)
					}
				}
			})
			w := startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
				name := string(j.Payload)
				started <- name
				select {
				case <-gates[name]:
				case <-ctx.Done():
					return ctx.Err()
				}
				if tc.fail && name == "a" {
					return errors.New("a fails")
				}
				return nil
			}, WorkerConfig{Concurrency: 1})
			rdb := p.Client()
			var opts []EnqueueOption
			if tc.part {
				opts = append(opts, Partition("t1"))
			}
			_, err := q.Enqueue(ctx, []byte("a"), append([]EnqueueOption{ID("u1"), MaxAttempts(1)}, opts...)...)
			require.NoError(t, err)
			require.Equal(t, "a", testutil.Recv(t, started, "a started"))
			require.NoError(t, rdb.Del(ctx, q.k.unique("u1")).Err(), "a's key lapses")
			_, err = q.Enqueue(ctx, []byte("b"), append([]EnqueueOption{ID("u1")}, opts...)...)
			require.NoError(t, err, "the ID is free again: b takes it")
			mu.Lock()
			close(gates["a"])
			mu.Unlock()
			require.Equal(t, "b", testutil.Recv(t, started, "b started"))
			testutil.Eventually(t, testutil.Wait, "a's outcome written", func() bool {
				elems, err := rdb.LRange(ctx, w.proc, 0, -1).Result()
				return err == nil && len(elems) == 1 && strings.HasSuffix(elems[0], "b")
			})
			n, err := rdb.Exists(ctx, q.k.unique("u1")).Result()
			require.NoError(t, err)
			require.EqualValues(t, 1, n, "a's outcome freed b's idempotency key")
			_, err = q.Enqueue(ctx, []byte("c"), ID("u1"))
			require.ErrorIs(t, err, ErrDuplicate, "b still holds the ID")
			mu.Lock()
			close(gates["b"])
			mu.Unlock()
		})
	}
}

// TestUniqueKeyOwnStampsFreed: the ack frees the key its own job wrote in
// each form: the enqueue stamp, a debounced job's element, and "1" (a key
// written by a version before the owner check: freed as before, so a
// rolling upgrade keeps freeing IDs at the ack).
func TestUniqueKeyOwnStampsFreed(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{redistest.Server(t).Addr()}})
	q := mustQueue(t, p, "uniq-own", Config{})
	ctx := context.Background()
	rdb := p.Client()
	done := make(chan string, 8)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		done <- j.ID
		return nil
	}, WorkerConfig{Concurrency: 1})
	// A paused queue keeps the jobs waiting while their keys are checked.
	require.NoError(t, q.Pause(ctx))
	_, err := q.Enqueue(ctx, []byte("x"), ID("stamp"))
	require.NoError(t, err)
	v, err := rdb.Get(ctx, q.k.unique("stamp")).Result()
	require.NoError(t, err)
	require.NotEqual(t, "1", v, "the key names its job")
	_, err = q.Enqueue(ctx, []byte("x"), ID("legacy"))
	require.NoError(t, err)
	require.NoError(t, rdb.SetArgs(ctx, q.k.unique("legacy"), "1", redis.SetArgs{KeepTTL: true}).Err())
	_, err = q.Enqueue(ctx, []byte("x"), ID("debounced"), Debounce(), Delay(time.Millisecond))
	require.NoError(t, err)
	v, err = rdb.Get(ctx, q.k.unique("debounced")).Result()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(v, "bq1|"), "a debounced job's key holds its element: %q", v)
	require.NoError(t, q.Resume(ctx))
	seen := map[string]bool{}
	for range 3 {
		seen[testutil.Recv(t, done, "a job run")] = true
	}
	for _, id := range []string{"stamp", "legacy", "debounced"} {
		require.True(t, seen[id], id)
		testutil.Eventually(t, testutil.Wait, id+" freed", func() bool {
			n, err := rdb.Exists(ctx, q.k.unique(id)).Result()
			return err == nil && n == 0
		})
	}
}
