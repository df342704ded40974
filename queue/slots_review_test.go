package queue

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// A fetched job still waiting in the jobs channel when its worker drains
// (its handler went on to stop instead) goes back to the ready list: its
// shared slot must go back to the Slots, which outlive the worker and
// serve other workers (of other lifecycle groups, or started later).
func TestDrainFreesSharedSlotsOfUnstartedJobs(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "drainslots", Config{})
	slots := mustSlots(t, 2)
	w, err := NewWorker(newConsumer(t, q), q, func(context.Context, *Job) error { return nil }, WorkerConfig{Slots: slots, Concurrency: 1})
	require.NoError(t, err)
	// What the fetcher does for one job: a slot of its own, a shared one,
	// the job in the channel; then the worker drains before a handler
	// took it.
	w.slots <- struct{}{}
	require.True(t, w.lane.acquire(context.Background(), nil))
	w.jobs <- delivery{elem: "x"}
	w.lane.stop()
	close(w.stopping)
	w.handlersLeft.Store(1)
	require.NoError(t, w.handleLoop(context.Background()))
	require.Equal(t, SlotStats{Size: 2, Free: 2}, slots.Stats(), "the unstarted job's shared slot is back")
}

// The ring that wakes a worker which then finds every shared slot taken
// (a higher Priority holds them) is handed on: an idle consumer of the
// queue in another process runs the job, rather than it waiting for the
// starved worker.
func TestStarvedWorkerHandsOnTheRingThatWokeIt(t *testing.T) {
	pa, pb := twoPools(t, serverPool)
	ctx := context.Background()
	ga, gb := group(t), group(t)
	high := mustQueue(t, pa, "high", Config{})
	lowA, lowB := mustQueue(t, pa, "low", Config{}), mustQueue(t, pb, "low", Config{})
	slots := mustSlots(t, 1)
	ca := newConsumer(t, high)
	// A long BlockTimeout: A's hub stays blocked from before B's, so A's
	// hub is the one that pops the low queue's ring (Redis serves the
	// longest-blocked client first).
	const block = 30 * time.Second
	ranOnA := make(chan string, 10)
	wa, err := NewWorker(ca, lowA, func(_ context.Context, j *Job) error { ranOnA <- j.ID; return nil }, WorkerConfig{Slots: slots, BlockTimeout: block})
	require.NoError(t, err)
	require.NoError(t, wa.Start(ga))
	testutil.Eventually(t, 5*time.Second, "the low worker waits for a ring, asking for no slot", func() bool {
		return wa.Stats().FetcherState == "blocking" && !wa.lane.isAsking()
	})

	gate := make(chan struct{})
	defer close(gate)
	highStarted := make(chan struct{}, 10)
	_, err = high.Enqueue(ctx, []byte("h"))
	require.NoError(t, err)
	wh, err := NewWorker(ca, high, func(ctx context.Context, _ *Job) error {
		highStarted <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil
	}, WorkerConfig{Slots: slots, Priority: 1, BlockTimeout: block})
	require.NoError(t, err)
	require.NoError(t, wh.Start(ga))
	testutil.Recv(t, highStarted, "the high job holds the only slot")
	testutil.Eventually(t, 5*time.Second, "A's hub blocks on the low queue's bell", func() bool {
		h := wa.hub
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.blocked && slices.Contains(h.watching, lowA.k.bell)
	})

	ranOnB := make(chan string, 10)
	wb := startWorker(t, gb, lowB, func(_ context.Context, j *Job) error { ranOnB <- j.ID; return nil }, WorkerConfig{Concurrency: 1})
	testutil.Eventually(t, 5*time.Second, "B waits for a ring", func() bool { return wb.Stats().FetcherState == "blocking" })

	id, err := lowA.Enqueue(ctx, []byte("l"))
	require.NoError(t, err)
	require.Equal(t, id, testutil.Recv(t, ranOnB, "the low job on the idle process"))
	require.Empty(t, ranOnA)
}

// Free slots go by priority too: a worker that begins to ask while
// another (which found the slots free) has not yet taken the rest for its
// batch gets them first when its Priority is higher. Else a low queue
// woken at the same moment as a high one runs a whole batch ahead of the
// high queue's jobs, which then wait for the low ones to end.
func TestFreeSlotsGoByPriority(t *testing.T) {
	l := mustSlots(t, 4)
	low := l.join(WorkerConfig{Concurrency: 4, Weight: 1})
	high := l.join(WorkerConfig{Concurrency: 4, Priority: 1, Weight: 1})
	require.True(t, low.acquire(context.Background(), nil), "the slots are free")
	require.True(t, high.acquire(context.Background(), nil))
	require.Equal(t, 0, low.more(3), "the two slots left are the high worker's")
	require.Equal(t, 2, high.more(3))
	require.Equal(t, SlotStats{Size: 4, Free: 0, Asking: 2}, l.Stats())

	// Equal priorities share the free slots by weight.
	l = mustSlots(t, 5)
	a, b := l.join(WorkerConfig{Concurrency: 5, Weight: 1}), l.join(WorkerConfig{Concurrency: 5, Weight: 1})
	require.True(t, a.acquire(context.Background(), nil))
	require.True(t, b.acquire(context.Background(), nil))
	require.Equal(t, 2, a.more(4), "a's share of the 4 free when b began to ask")
	require.Equal(t, 1, b.more(4), "b's, less the one it took")
}

// Slots not made by NewSlots (the zero value, which is not usable) are
// refused by NewWorker, rather than giving a worker that never runs a job.
func TestZeroSlotsRefused(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "zeroslots", Config{})
	w, err := NewWorker(newConsumer(t, q), q, func(context.Context, *Job) error { return nil }, WorkerConfig{Slots: &Slots{}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "NewSlots")
	require.Nil(t, w)
}

// Workers of two lifecycle groups share Slots; each group is closed while
// its worker drains a backlog, again and again: after every round every
// shared slot is free again, whatever the close interrupted (a take, a
// wait for a slot, jobs fetched and not started, running handlers).
func TestSharedSlotsSurviveCloses(t *testing.T) {
	p := serverPool(t, pool.Config{})
	ctx := context.Background()
	slots := mustSlots(t, 3)
	qs := []*Queue{mustQueue(t, p, "churn-a", Config{}), mustQueue(t, p, "churn-b", Config{})}
	h := func(ctx context.Context, j *Job) error {
		if j.Attempt%3 == 0 {
			panic("a handler panic frees its slot too")
		}
		return nil
	}
	for round := range 15 {
		var gs []*lifecycle.Group
		var ws []*Worker
		for i, q := range qs {
			batch := make([][]byte, 200)
			for k := range batch {
				batch[k] = []byte("x")
			}
			_, err := q.EnqueueBatch(ctx, batch)
			require.NoError(t, err)
			g := lifecycle.New()
			w, err := NewWorker(newConsumer(t, q), q, h, WorkerConfig{Slots: slots, Concurrency: 3 - i, Priority: i, RetryBase: time.Millisecond, RetryMax: time.Millisecond})
			require.NoError(t, err)
			require.NoError(t, w.Start(g))
			gs, ws = append(gs, g), append(ws, w)
		}
		testutil.Eventually(t, 5*time.Second, "both workers ran jobs", func() bool {
			return ws[0].Stats().Processed > uint64(round%4) && ws[1].Stats().Processed > uint64(round%4)
		})
		for _, g := range gs {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			require.NoError(t, g.Close(cctx))
			cancel()
		}
		require.Equal(t, SlotStats{Size: 3, Free: 3}, slots.Stats(), "round %d", round)
	}
}

// Random acquires, batches, releases and stops, as fetchers and handlers
// make them: the slots are never lost nor made (free + held + granted is
// the size), a worker never holds or is granted more than its
// Concurrency, and a slot is free only when no asking worker could use it
// (beyond the one that found the slots free and has yet to batch).
func TestSlotsAccountingRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		size := 1 + rng.IntN(8)
		l := mustSlots(t, size)
		var ms []*lane
		for range 1 + rng.IntN(4) {
			ms = append(ms, l.join(WorkerConfig{Concurrency: 1 + rng.IntN(size), Priority: rng.IntN(2), Weight: 1 + rng.IntN(3)}))
		}
		done, cancel := context.WithCancel(context.Background())
		cancel()
		for step := range 300 {
			m := ms[rng.IntN(len(ms))]
			switch rng.IntN(4) {
			case 0: // the fetcher wants one (without waiting)
				if m.held < m.max {
					m.acquire(done, nil)
				}
			case 1: // its batch
				if m.isAsking() && m.held < m.max {
					m.more(rng.IntN(m.max - m.held + 1))
				}
			case 2: // a take that came short
				m.stop()
			case 3: // a handler ends
				if m.held > 0 {
					m.release(1)
				}
			}
			l.mu.Lock()
			sum := l.free
			for _, a := range ms {
				sum += a.held + a.granted
				require.LessOrEqual(t, a.held+a.granted, a.max, "round %d step %d", round, step)
				require.GreaterOrEqual(t, a.granted, 0)
			}
			require.Equal(t, size, sum, "round %d step %d: slots lost or made", round, step)
			if l.free > 0 {
				withRoom := 0
				for _, a := range l.asking {
					if a.room() {
						withRoom++
					}
				}
				require.LessOrEqual(t, withRoom, 1, "round %d step %d: free slots while asking workers could use them", round, step)
			}
			l.mu.Unlock()
		}
		for _, m := range ms {
			m.stop()
			m.release(m.held)
		}
		require.Equal(t, SlotStats{Size: size, Free: size}, l.Stats())
	}
}
