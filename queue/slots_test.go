package queue

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// The arbiter alone: strict priority, weights, no starvation, and a
// worker is never granted more than its Concurrency.
func TestLanesArbiter(t *testing.T) {
	grants := func(l *Slots, ms []*lane, n int) []int {
		counts := make([]int, len(ms))
		l.mu.Lock()
		defer l.mu.Unlock()
		for range n {
			m := l.pick()
			for i := range ms {
				if ms[i] == m {
					counts[i]++
				}
			}
		}
		return counts
	}
	ask := func(l *Slots, ms ...*lane) {
		for _, m := range ms {
			m.asking = true
			l.asking = append(l.asking, m)
		}
	}
	t.Run("strict", func(t *testing.T) {
		l := mustSlots(t, 4)
		low, high := l.join(WorkerConfig{Concurrency: 4, Weight: 1}), l.join(WorkerConfig{Concurrency: 4, Priority: 1, Weight: 1})
		ask(l, low, high)
		require.Equal(t, []int{0, 100}, grants(l, []*lane{low, high}, 100))
	})
	t.Run("weighted 3:1, exact over every 4 grants", func(t *testing.T) {
		l := mustSlots(t, 4)
		a, b := l.join(WorkerConfig{Concurrency: 4, Weight: 3}), l.join(WorkerConfig{Concurrency: 4, Weight: 1})
		ask(l, a, b)
		for range 25 {
			require.Equal(t, []int{3, 1}, grants(l, []*lane{a, b}, 4))
		}
	})
	t.Run("no starvation at the largest weight ratio", func(t *testing.T) {
		l := mustSlots(t, 4)
		a, b := l.join(WorkerConfig{Concurrency: 4, Weight: MaxWeight}), l.join(WorkerConfig{Concurrency: 4, Weight: 1})
		ask(l, a, b)
		require.Equal(t, []int{MaxWeight, 1}, grants(l, []*lane{a, b}, MaxWeight+1))
	})
	t.Run("a full worker is passed over", func(t *testing.T) {
		l := mustSlots(t, 4)
		high, low := l.join(WorkerConfig{Concurrency: 1, Priority: 1, Weight: 1}), l.join(WorkerConfig{Concurrency: 4, Weight: 1})
		ask(l, high, low)
		high.held = 1
		require.Equal(t, []int{0, 3}, grants(l, []*lane{high, low}, 3))
	})
	t.Run("a worker that stops asking gives its grants on", func(t *testing.T) {
		l := mustSlots(t, 2)
		a, b := l.join(WorkerConfig{Concurrency: 2, Weight: 1}), l.join(WorkerConfig{Concurrency: 2, Weight: 1})
		require.True(t, a.acquire(context.Background(), nil))
		require.Equal(t, 1, a.more(5), "one free slot left")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.False(t, b.acquire(ctx, nil), "none free")
		require.True(t, b.isAsking())
		a.stop()
		a.release(1) // b is asking: the slot is granted to it
		require.True(t, b.acquire(context.Background(), nil))
		b.stop()
		b.release(1)
		a.release(1)
		require.Equal(t, SlotStats{Size: 2, Free: 2}, l.Stats())
	})
}

// Bad shared-slot settings fail with ErrInvalidConfig naming the field,
// and nothing is built.
func TestSharedSlotsConfig(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "cfg", Config{})
	h := func(context.Context, *Job) error { return nil }
	for _, size := range []int{-1, 0, MaxSlots + 1} {
		s, err := NewSlots(size)
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.ErrorContains(t, err, "NewSlots: size must be in 1..10000")
		require.Nil(t, s)
	}
	c := newConsumer(t, q)
	slots := mustSlots(t, 4)
	for _, tc := range []struct {
		cfg  WorkerConfig
		want string
	}{
		{WorkerConfig{Priority: 1}, "set WorkerConfig.Slots"},
		{WorkerConfig{Weight: 2}, "set WorkerConfig.Slots"},
		{WorkerConfig{Slots: slots, Concurrency: 5}, "WorkerConfig.Concurrency (5) must not exceed"},
		{WorkerConfig{Slots: slots, Weight: -1}, "WorkerConfig.Weight"},
		{WorkerConfig{Slots: slots, Weight: MaxWeight + 1}, "WorkerConfig.Weight"},
		{WorkerConfig{Slots: slots, Priority: -1}, "WorkerConfig.Priority"},
		{WorkerConfig{Slots: slots, Priority: MaxPriority + 1}, "WorkerConfig.Priority"},
	} {
		w, err := NewWorker(c, q, h, tc.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", tc.cfg)
		require.ErrorContains(t, err, tc.want)
		require.Nil(t, w)
	}
	require.Equal(t, SlotStats{Size: 4, Free: 4}, slots.Stats(), "nothing taken")
	w, err := NewWorker(c, q, h, WorkerConfig{Slots: slots})
	require.NoError(t, err)
	require.Equal(t, 4, w.cfg.Concurrency, "Concurrency defaults to the shared slots")
	require.Equal(t, 1, w.cfg.Weight)
}

// With a low-priority backlog holding every shared slot, high-priority
// jobs start at the next free slots, ahead of the low backlog.
func TestStrictPriorityAcrossQueues(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		g := group(t)
		low, high := mustQueue(t, p, "low", Config{}), mustQueue(t, p, "high", Config{})
		c, slots := newConsumer(t, low), mustSlots(t, 2)
		started := make(chan string, 100)
		gate := make(chan struct{})
		defer close(gate)
		for range 20 {
			_, err := low.Enqueue(ctx, []byte("l"))
			require.NoError(t, err)
		}
		wl, err := NewWorker(c, low, func(ctx context.Context, j *Job) error {
			started <- "low"
			select {
			case <-gate:
			case <-ctx.Done():
			}
			return nil
		}, WorkerConfig{Slots: slots})
		require.NoError(t, err)
		wh, err := NewWorker(c, high, func(ctx context.Context, j *Job) error { started <- "high"; return nil }, WorkerConfig{Slots: slots, Priority: 1})
		require.NoError(t, err)
		require.NoError(t, wl.Start(g))
		require.NoError(t, wh.Start(g))
		require.Equal(t, "low", testutil.Recv(t, started, "a low job"))
		require.Equal(t, "low", testutil.Recv(t, started, "a second low job"))

		for range 3 {
			_, err := high.Enqueue(ctx, []byte("h"))
			require.NoError(t, err)
		}
		testutil.Eventually(t, 5*time.Second, "the high worker asks for a slot", wh.lane.isAsking)
		require.Empty(t, started, "both slots run low jobs: the high ones wait")
		require.Equal(t, SlotStats{Size: 2, Free: 0, Asking: 2}, slots.Stats())

		gate <- struct{}{} // one low job ends: its slot, and the next ones, go to the high queue
		for i := range 3 {
			require.Equal(t, "high", testutil.Recv(t, started, "a high job"), "start %d after the low job ended", i)
		}
		require.Equal(t, "low", testutil.Recv(t, started, "the low backlog again"))
	})
}

// Two saturated queues of weights 3 and 1 share the slots 3:1, and the
// light one is never starved.
func TestWeightedSlotsAcrossQueues(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		g := group(t)
		const n = 400 // starts counted
		heavy, light := mustQueue(t, p, "heavy", Config{}), mustQueue(t, p, "light", Config{})
		for _, q := range []*Queue{heavy, light} {
			batch := make([][]byte, n)
			for i := range batch {
				batch[i] = []byte("x")
			}
			_, err := q.EnqueueBatch(ctx, batch)
			require.NoError(t, err)
		}
		c, slots := newConsumer(t, heavy), mustSlots(t, 4)
		started := make(chan string, 2*n)
		h := func(_ context.Context, j *Job) error { started <- j.Queue; return nil }
		for q, weight := range map[*Queue]int{heavy: 3, light: 1} {
			w, err := NewWorker(c, q, h, WorkerConfig{Slots: slots, Weight: weight})
			require.NoError(t, err)
			require.NoError(t, w.Start(g))
		}
		// The workers start one after the other: the shares are counted
		// from the first start that follows one of each queue (under load
		// the first worker ran 21 jobs over its share before the second
		// one fetched), over n starts (each queue has n jobs: enough).
		seen, skipped := map[string]bool{}, 0
		for len(seen) < 2 {
			seen[testutil.Recv(t, started, "a job")] = true
			skipped++
		}
		require.Less(t, skipped, n/4, "both queues started early on")
		counts := map[string]int{}
		for range n {
			counts[testutil.Recv(t, started, "a job")]++
		}
		t.Logf("%d starts after the first %d: %v", n, skipped, counts)
		require.InDelta(t, 3*n/4, counts["heavy"], n/20, "3:1 within 5%% of %d starts", n)
		require.InDelta(t, n/4, counts["light"], n/20)
	})
}

// Shared slots cost no goroutine and no connection: a consumer with shared
// slots runs the goroutines of one without (same Concurrency) but its
// handlers, which start with the jobs (handlers.go), holds one blocking
// connection, and once its jobs ran both counts are back where they were.
func TestSharedSlotsGoroutinesAndConnections(t *testing.T) {
	p1, p2 := serverPool(t, pool.Config{}), serverPool(t, pool.Config{}) // miniredis runs a goroutine per connection
	ctx := context.Background()
	h := func(context.Context, *Job) error { return nil }
	var ws []*Worker
	start := func(p *pool.Pool, slots *Slots) ([]*Queue, int) {
		before := runtime.NumGoroutine()
		g := group(t)
		ws = ws[:0]
		qs := make([]*Queue, 3)
		c := newConsumer(t, mustQueue(t, p, "x", Config{}))
		for i := range qs {
			qs[i] = mustQueue(t, p, fmt.Sprint("g", i), Config{})
			w, err := NewWorker(c, qs[i], h, WorkerConfig{Concurrency: 4})
			if slots != nil {
				w, err = NewWorker(c, qs[i], h, WorkerConfig{Concurrency: 4, Slots: slots, Priority: i})
			}
			require.NoError(t, err)
			require.NoError(t, w.Start(g))
			ws = append(ws, w)
		}
		// The count is read once it held for 20 polls in a row: a
		// goroutine of the pool's that is ending (a dial, a reader) must
		// not count on one side only (13 against 12 once under load).
		last, same := -1, 0
		testutil.Eventually(t, 5*time.Second, "the fetchers wait for a ring and the goroutines are steady", func() bool {
			for _, w := range ws {
				if w.Stats().FetcherState != "blocking" {
					same = 0
					return false
				}
			}
			if n := runtime.NumGoroutine(); n != last {
				last, same = n, 0
				return false
			}
			same++
			return same >= 20
		})
		return qs, last - before
	}
	_, separate := start(p1, nil)
	qs, shared := start(p2, mustSlots(t, 4))
	require.Equal(t, separate-3*4, shared, "goroutines: separate slots vs shared, whose 3x4 handlers are not started while idle")
	require.Equal(t, 1, p2.Stats().Blocking.Reserved, "one blocking connection")
	before := runtime.NumGoroutine()
	for _, q := range qs {
		for range 50 {
			_, err := q.Enqueue(ctx, []byte("x"))
			require.NoError(t, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "every job ran", func() bool {
		done := uint64(0)
		for _, w := range ws {
			done += w.Stats().Processed
		}
		return done == 150
	})
	testutil.Eventually(t, 5*time.Second, "goroutines back to what they were", func() bool { return runtime.NumGoroutine() == before })
	require.Equal(t, 1, p2.Stats().Blocking.Reserved)
}

func mustSlots(t testing.TB, size int) *Slots {
	t.Helper()
	s, err := NewSlots(size)
	require.NoError(t, err)
	return s
}

// A worker starved of shared slots by a higher Priority does not sit on
// the rings of its queue: another process's idle consumer of the queue
// runs its jobs at once.
func TestStarvedWorkerHandsRingsOn(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		pa, pb := twoPools(t, np)
		ctx := context.Background()
		ga, gb := group(t), group(t)
		high := mustQueue(t, pa, "high", Config{})
		lowA, lowB := mustQueue(t, pa, "low", Config{}), mustQueue(t, pb, "low", Config{})
		slots := mustSlots(t, 2) // the low worker has room of its own: only the shared slots are taken
		gate := make(chan struct{})
		defer close(gate)
		highStarted := make(chan struct{}, 10)
		for range 3 {
			_, err := high.Enqueue(ctx, []byte("h"))
			require.NoError(t, err)
		}
		ca := newConsumer(t, high)
		wh, err := NewWorker(ca, high, func(ctx context.Context, _ *Job) error {
			highStarted <- struct{}{}
			select {
			case <-gate:
			case <-ctx.Done():
			}
			return nil
		}, WorkerConfig{Slots: slots, Priority: 1})
		require.NoError(t, err)
		require.NoError(t, wh.Start(ga))
		testutil.Recv(t, highStarted, "the high backlog holds a slot")
		testutil.Recv(t, highStarted, "the high backlog holds both slots")
		ranOnA := make(chan string, 10)
		wa, err := NewWorker(ca, lowA, func(_ context.Context, j *Job) error { ranOnA <- j.ID; return nil }, WorkerConfig{Slots: slots})
		require.NoError(t, err)
		require.NoError(t, wa.Start(ga))
		testutil.Eventually(t, 5*time.Second, "the low worker asks for a slot", wa.lane.isAsking)

		ranOnB := make(chan string, 10)
		startWorker(t, gb, lowB, func(_ context.Context, j *Job) error { ranOnB <- j.ID; return nil }, WorkerConfig{Concurrency: 1})
		for i := range 6 {
			id, err := lowA.Enqueue(ctx, []byte("l"))
			require.NoError(t, err)
			require.Equal(t, id, testutil.Recv(t, ranOnB, fmt.Sprint("low job ", i, " on the idle process")))
		}
		require.Empty(t, ranOnA)
	})
}
