package queue

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// handlerGoroutines counts the handler goroutines of every worker of the
// process, in its goroutines' stacks.
func handlerGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("queue.(*Worker).handleLoop(")) || bytes.Contains(g, []byte("queue.(*Worker).poolHandler(")) {
			n++
		}
	}
	return n
}

// TestSharedSlotsHandlersBounded: 3 workers sharing 15 slots (Concurrency
// 15 each, the default) run no handler goroutine while idle, at most 15
// while their jobs hold every slot, and none again once the queues are
// drained. Before the fix each ran 15 from Start: 45 goroutines for 15
// slots, idle or not.
func TestSharedSlotsHandlersBounded(t *testing.T) {
	p := serverPool(t, pool.Config{}) // miniredis runs a goroutine per connection
	ctx := context.Background()
	slots := mustSlots(t, 15)
	gate := make(chan struct{})
	h := func(ctx context.Context, _ *Job) error {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil
	}
	c := newConsumer(t, mustQueue(t, p, "x", Config{}))
	g := group(t)
	var ws []*Worker
	qs := make([]*Queue, 3)
	for i := range qs {
		qs[i] = mustQueue(t, p, fmt.Sprint("pooled", i), Config{})
		w, err := NewWorker(c, qs[i], h, WorkerConfig{Slots: slots})
		require.NoError(t, err)
		require.Equal(t, 15, w.cfg.Concurrency)
		require.NoError(t, w.Start(g))
		ws = append(ws, w)
	}
	testutil.Eventually(t, testutil.Wait, "the fetchers wait for a ring", func() bool {
		for _, w := range ws {
			if w.Stats().FetcherState != "blocking" {
				return false
			}
		}
		return true
	})
	require.Zero(t, handlerGoroutines(), "idle: no handler goroutine")

	for _, q := range qs {
		for range 10 {
			_, err := q.Enqueue(ctx, []byte("x"))
			require.NoError(t, err)
		}
	}
	busy := func() int64 {
		n := int64(0)
		for _, w := range ws {
			n += w.Stats().Busy
		}
		return n
	}
	testutil.Eventually(t, testutil.Wait, "every slot running a job", func() bool { return busy() == 15 })
	require.Equal(t, 15, handlerGoroutines(), "one handler goroutine per slot in use")
	n := 0
	for _, w := range ws {
		n += w.handlerCount()
	}
	require.Equal(t, 15, n, "the pools count them")

	close(gate)
	testutil.Eventually(t, testutil.Wait, "every job ran", func() bool {
		done := uint64(0)
		for _, w := range ws {
			done += w.Stats().Processed
		}
		return done == 30
	})
	testutil.Eventually(t, testutil.Wait, "the handlers gone with the jobs", func() bool { return handlerGoroutines() == 0 })
}

// TestStarvedWorkerStateIsItsOwn: a worker with a free slot of its own that
// waits for a shared slot held by a higher Priority says so
// ("waiting for a shared slot"), apart from a worker whose own slots are
// all busy ("waiting for a free slot"). Before the fix both said the latter.
func TestStarvedWorkerStateIsItsOwn(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	slots := mustSlots(t, 1)
	gate := make(chan struct{})
	defer close(gate)
	high, low := mustQueue(t, p, "starve-high", Config{}), mustQueue(t, p, "starve-low", Config{})
	c := newConsumer(t, high)
	g := group(t)
	started := make(chan struct{}, 1)
	wh, err := NewWorker(c, high, func(ctx context.Context, _ *Job) error {
		started <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil
	}, WorkerConfig{Slots: slots, Priority: 1})
	require.NoError(t, err)
	require.NoError(t, wh.Start(g))
	_, err = high.Enqueue(ctx, []byte("h"))
	require.NoError(t, err)
	testutil.Recv(t, started, "the high job holds the slot")
	wl, err := NewWorker(c, low, func(context.Context, *Job) error { return nil }, WorkerConfig{Slots: slots})
	require.NoError(t, err)
	require.NoError(t, wl.Start(g))
	_, err = low.Enqueue(ctx, []byte("l"))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the low worker starved", func() bool {
		return wl.Stats().FetcherState == "waiting for a shared slot"
	})
	require.Equal(t, "waiting for a free slot", wh.Stats().FetcherState, "the high worker: its own slot busy")
	require.True(t, wl.FetcherAlive(0), "a starved fetcher is alive")
	require.Zero(t, wl.Stats().Busy)
}
