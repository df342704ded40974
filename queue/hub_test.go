package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func bothPools(t *testing.T, f func(t *testing.T, np newPoolFunc)) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { f(t, np) })
	}
}

// twoPools returns two pools on one Redis: two processes' worth.
func twoPools(t *testing.T, np newPoolFunc) (*pool.Pool, *pool.Pool) {
	var addr string
	if fmt.Sprint(np) == fmt.Sprint(newPoolFunc(miniPool)) {
		addr = redistest.Mini(t).Addr()
	} else {
		addr = redistest.Server(t).Addr()
	}
	return mustPool(t, pool.Config{Addrs: []string{addr}}), mustPool(t, pool.Config{Addrs: []string{addr}})
}

// Fifty queues on one consumer hold one reserved blocking connection
// between them, and every queue's jobs run.
func TestManyQueuesShareOneBlockingConnection(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{Blocking: pool.BlockingConfig{Size: 1}})
		ctx := context.Background()
		g := group(t)
		ran := make(chan string, 100)
		qs := make([]*Queue, 50)
		for i := range qs {
			qs[i] = mustQueue(t, p, fmt.Sprint("many", i), Config{})
			startWorker(t, g, qs[i], func(_ context.Context, j *Job) error { ran <- j.Queue; return nil }, WorkerConfig{Concurrency: 2})
		}
		require.Equal(t, 1, p.Stats().Blocking.Reserved, "one connection for 50 queues")
		for _, q := range qs {
			_, err := q.Enqueue(ctx, []byte("x"))
			require.NoError(t, err)
		}
		seen := map[string]bool{}
		for range qs {
			seen[testutil.Recv(t, ran, "a job of each queue")] = true
		}
		require.Len(t, seen, 50)
	})
}

// 1,000 idle queues on one consumer cost Redis what one queue costs: one
// BZPOPMIN per BlockTimeout plus the heartbeat. Both run at once, each on
// its own server, counted with INFO commandstats over the same rounds.
func TestThousandIdleQueuesCostWhatOneCosts(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 15s")
	}
	ctx := context.Background()
	run := func(queues int) (*redistest.Redis, *pool.Pool) {
		srv := redistest.Server(t)
		p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}, Background: pool.LaneConfig{Size: 8}})
		g := group(t)
		c := newConsumer(t, mustQueue(t, p, "x", Config{}))
		for i := range queues {
			w, err := NewWorker(c, mustQueue(t, p, fmt.Sprint("idle", i), Config{}), func(context.Context, *Job) error { return nil },
				WorkerConfig{Concurrency: 1, BlockTimeout: time.Second})
			require.NoError(t, err)
			require.NoError(t, w.Start(g))
		}
		return srv, p
	}
	one, p1 := run(1)
	many, pm := run(1000)
	srvs := []*redistest.Redis{one, many}
	calls := func(srv *redistest.Redis) (total, rounds int64) {
		s, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return redistest.TotalCalls(s, "info"), s["bzpopmin"]
	}
	var t0, b0 [2]int64
	for i, s := range srvs {
		_, b := calls(s)
		testutil.Eventually(t, 30*time.Second, "start-up done: two BZPOPMIN timeouts", func() bool { _, x := calls(s); return x >= b+2 })
		t0[i], b0[i] = calls(s)
	}
	testutil.Eventually(t, 60*time.Second, "ten more BZPOPMIN timeouts on both", func() bool {
		_, a := calls(srvs[0])
		_, b := calls(srvs[1])
		return a >= b0[0]+10 && b >= b0[1]+10
	})
	var per [2]float64
	for i, s := range srvs {
		tot, b := calls(s)
		per[i] = float64(tot-t0[i]) / float64(b-b0[i])
	}
	t.Logf("idle commands per BlockTimeout (1s): 1 queue %.2f, 1,000 queues %.2f", per[0], per[1])
	require.LessOrEqual(t, per[1], per[0]+0.25, "1,000 idle queues cost what one costs")
	require.Equal(t, 1, pm.Stats().Blocking.Reserved)
	require.Equal(t, 1, p1.Stats().Blocking.Reserved)
	require.Equal(t, 1, blockedClients(t, many, "bzpopmin"), "one blocked connection for 1,000 queues")
}

// A job enqueued just as the worker's take finds the queue empty is never
// left waiting: the take always comes before the wait, and the ring stays
// in Redis until a hub pops it. Jobs are enqueued one at a time, each as
// soon as the previous one ran, so each races the worker going back to
// waiting; a lost wake would hang the loop.
func TestNoLostWakeBetweenTakeAndWait(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		g := group(t)
		a := mustQueue(t, p, "race-a", Config{})
		b := mustQueue(t, p, "race-b", Config{})
		ran := make(chan string, 1)
		h := func(_ context.Context, j *Job) error { ran <- string(j.Payload); return nil }
		// BlockTimeout one minute: a wake lost would cost a minute, and
		// the test fails long before.
		startWorker(t, g, a, h, WorkerConfig{Concurrency: 1, BlockTimeout: time.Minute})
		startWorker(t, g, b, h, WorkerConfig{Concurrency: 3, BlockTimeout: time.Minute})
		for i := range 300 {
			q := a
			if i%2 == 1 {
				q = b
			}
			_, err := q.Enqueue(ctx, []byte(fmt.Sprint(i)))
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint(i), recv(t, ran, 10*time.Second, fmt.Sprint("job ", i)))
		}
	})
}

// Two consumers of one queue: the one that pops the ring takes only what it
// has room for (one job) and rings again for the rest, so the other wakes
// and takes the next job while the first still runs.
func TestLeftoversAfterATakeWakeTheOtherConsumer(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		q := mustQueue(t, p, "leftovers", Config{})
		release := make(chan struct{})
		running := make(chan string, 10)
		handler := func(_ context.Context, j *Job) error {
			running <- string(j.Payload)
			<-release
			return nil
		}
		g := group(t)
		releaseAll := sync.OnceFunc(func() { close(release) })
		t.Cleanup(releaseAll) // before the group closes, should the test fail
		wa := startWorker(t, g, q, handler, WorkerConfig{Concurrency: 1, BlockTimeout: time.Minute}, ConsumerConfig{ConsumerID: "pa"})
		wb := startWorker(t, g, q, handler, WorkerConfig{Concurrency: 1, BlockTimeout: time.Minute}, ConsumerConfig{ConsumerID: "pb"})
		testutil.Eventually(t, testutil.Wait, "both waiting for a ring", func() bool {
			return wa.Stats().FetcherState == "blocking" && wb.Stats().FetcherState == "blocking"
		})
		_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("1"), []byte("2"), []byte("3")})
		require.NoError(t, err)
		recv(t, running, 10*time.Second, "a first job")
		recv(t, running, 10*time.Second, "a second job, on the other consumer")
		require.Equal(t, 1, int(wa.Stats().Busy))
		require.Equal(t, 1, int(wb.Stats().Busy))
		releaseAll()
		recv(t, running, 10*time.Second, "the third job")
	})
}

// A consumer killed after it popped a ring, before its take, leaves the
// jobs without one: the sweep of the dead consumer rings again, so they
// wait at most until its heartbeat is seen expired (HeartbeatTTL plus a
// heartbeat interval), not until the next enqueue.
func TestRingLostWithAKilledConsumerIsRungByItsSweep(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		q := mustQueue(t, p, "lostring", Config{})
		c := p.Client()
		ran := make(chan string, 1)
		g := group(t)
		w := startWorker(t, g, q, func(_ context.Context, j *Job) error { ran <- string(j.Payload); return nil },
			WorkerConfig{Concurrency: 1, BlockTimeout: time.Minute}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
		testutil.Eventually(t, testutil.Wait, "the worker waiting for a ring", func() bool { return w.Stats().FetcherState == "blocking" })
		// What a killed consumer leaves: the job in the ready list, its
		// ring popped, and the consumer registered on the queue with an
		// expired heartbeat.
		env := envelope{id: "orphan", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("orphan")}
		require.NoError(t, c.LPush(ctx, q.k.ready, env.encode()).Err())
		require.NoError(t, c.SAdd(ctx, q.k.consumers, "killed").Err())
		require.NoError(t, c.HSet(ctx, q.k.incarnations, "killed", "token").Err())
		require.NoError(t, c.HSet(ctx, liveKey(q.cfg.Namespace), "killed", "token").Err())
		ghost(t, c, q, "killed", time.Now().Add(-time.Second))
		require.Equal(t, "orphan", recv(t, ran, 10*time.Second, "the job, after the sweep rang"))
	})
}

// Pause in one process stops the takes of a worker in another; the queue
// still accepts jobs; Resume rings the doorbell and the worker takes them
// at once (its BlockTimeout is a minute: no polling is involved).
func TestPauseAndResumeAcrossProcesses(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		// The operator's process: another pool on the same Redis.
		p, op := twoPools(t, np)
		testPauseAndResume(t, p, op)
	})
}

func testPauseAndResume(t *testing.T, p, op *pool.Pool) {
	{
		ctx := context.Background()
		q := mustQueue(t, p, "paused", Config{})
		oq := mustQueue(t, op, "paused", Config{})
		ran := make(chan string, 4)
		g := group(t)
		w := startWorker(t, g, q, func(_ context.Context, j *Job) error { ran <- string(j.Payload); return nil },
			WorkerConfig{Concurrency: 2, BlockTimeout: time.Minute})
		_, err := q.Enqueue(ctx, []byte("before"))
		require.NoError(t, err)
		require.Equal(t, "before", recv(t, ran, 10*time.Second, "a job before the pause"))

		require.NoError(t, oq.Pause(ctx))
		paused, err := q.Paused(ctx)
		require.NoError(t, err)
		require.True(t, paused)
		require.NoError(t, oq.Pause(ctx), "pausing twice is no error")
		_, err = q.Enqueue(ctx, []byte("during"))
		require.NoError(t, err, "a paused queue accepts jobs")
		// The ring was popped and the take found the queue paused: the
		// job stays, and the worker waits again.
		testutil.Eventually(t, testutil.Wait, "the ring consumed by a take that took nothing", func() bool {
			n, err := p.Client().Exists(ctx, q.k.bell).Result()
			return err == nil && n == 0 && w.Stats().FetcherState == "blocking"
		})
		require.Equal(t, int64(1), p.Client().LLen(ctx, q.k.ready).Val())
		select {
		case j := <-ran:
			t.Fatalf("job %q ran while the queue was paused", j)
		default:
		}

		require.NoError(t, oq.Resume(ctx))
		require.Equal(t, "during", recv(t, ran, 10*time.Second, "the job, after Resume"))
		paused, err = q.Paused(ctx)
		require.NoError(t, err)
		require.False(t, paused)
		require.NoError(t, oq.Resume(ctx), "resuming a running queue is no error")
	}
}

// The Inspector pauses and resumes by queue name, and lists the state.
func TestInspectorPausesQueues(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "inspected", Config{})
	_, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	in, err := NewInspector(p, "bq")
	require.NoError(t, err)
	require.NoError(t, in.Pause(ctx, "inspected"))
	page, err := in.Queues(ctx, "", 10)
	require.NoError(t, err)
	require.Len(t, page.Queues, 1)
	require.True(t, page.Queues[0].Paused)
	require.NoError(t, in.Resume(ctx, "inspected"))
	page, err = in.Queues(ctx, "", 10)
	require.NoError(t, err)
	require.False(t, page.Queues[0].Paused)
	require.ErrorIs(t, in.Pause(ctx, "bad name!"), ErrInvalidArgument)
}

// A worker that joins while its consumer's hub blocks on other queues is
// watched at once (its join rings the hub's wakeup key), not after the
// hub's BlockTimeout of a minute.
func TestJoinWhileTheHubBlocks(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		g := group(t)
		ran := make(chan string, 1)
		h := func(_ context.Context, j *Job) error { ran <- j.Queue; return nil }
		first := startWorker(t, g, mustQueue(t, p, "first", Config{}), h, WorkerConfig{BlockTimeout: time.Minute})
		testutil.Eventually(t, testutil.Wait, "the hub blocking for the first queue", func() bool {
			first.hub.mu.Lock()
			defer first.hub.mu.Unlock()
			return first.hub.blocked && first.Stats().FetcherState == "blocking"
		})
		late := mustQueue(t, p, "late", Config{})
		w := startWorker(t, g, late, h, WorkerConfig{BlockTimeout: time.Minute})
		require.Same(t, first.hub, w.hub, "one hub for both")
		testutil.Eventually(t, testutil.Wait, "the late worker waiting for a ring", func() bool { return w.Stats().FetcherState == "blocking" })
		_, err := late.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
		require.Equal(t, "late", recv(t, ran, 10*time.Second, "the late queue's job, well within the minute"))
	})
}

// A consumer closed with a ring delivered to a worker that had not acted
// on it (busy: its one slot held by a running job) does not strand the
// job: closing rings the doorbell again (the fetcher's handOnRing, and the
// hub's handOn for the BZPOPMIN it cut), and the other consumer takes it
// at once, not at the next enqueue (its BlockTimeout is a minute).
func TestClosedConsumerHandsItsRingOn(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		q := mustQueue(t, p, "handon", Config{})
		ga := group(t)
		busy := make(chan struct{}, 1)
		wa := startWorker(t, ga, q, func(ctx context.Context, _ *Job) error {
			busy <- struct{}{}
			<-ctx.Done() // cancelled by the drain; done, not put back
			return nil
		}, WorkerConfig{Concurrency: 1, BlockTimeout: time.Minute}, ConsumerConfig{ConsumerID: "pa"})
		_, err := q.Enqueue(ctx, []byte("long"))
		require.NoError(t, err)
		recv(t, busy, 10*time.Second, "A busy")

		ran := make(chan string, 2)
		gb := group(t)
		wb := startWorker(t, gb, q, func(_ context.Context, j *Job) error { ran <- string(j.Payload); return nil },
			WorkerConfig{BlockTimeout: time.Minute}, ConsumerConfig{ConsumerID: "pb"})
		testutil.Eventually(t, testutil.Wait, "B waiting", func() bool { return wb.Stats().FetcherState == "blocking" })
		// The job whose ring A's hub popped and delivered to A.
		env := envelope{id: "pending", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("pending")}
		require.NoError(t, p.Client().LPush(ctx, q.k.ready, env.encode()).Err())
		wa.wakeFetcher()
		closeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		require.NoError(t, ga.Close(closeCtx))
		require.Equal(t, "pending", recv(t, ran, 10*time.Second, "the job, taken by B"))
	})
}

// keySlot is Redis Cluster's HASH_SLOT.
func TestKeySlot(t *testing.T) {
	for key, slot := range map[string]int{
		"123456789": 0x31C3, "foo": 12182, "{foo}:bar": 12182, "a{foo}": 12182,
		"{}foo": keySlot("{}foo"), "x{}{foo}": keySlot("x{}{foo}"),
	} {
		require.Equal(t, slot, keySlot(key), key)
	}
	require.NotEqual(t, keySlot("{}foo"), keySlot("foo"), "an empty tag hashes the whole key")
	require.Equal(t, keySlot("{bq:a}:ready"), keySlot("{bq:a}:bell"))
}

// testOneHubPerSlotGroup: on Redis Cluster one consumer holds one blocking
// connection per hash slot of its queues (a BZPOPMIN names keys of one
// slot), no more: queues on every master, plus one queue that shares the
// first one's slot. Every queue's jobs run, and nothing says CROSSSLOT.
func testOneHubPerSlotGroup(t *testing.T, c *redistest.RedisCluster, np newPoolFunc) {
	ctx := context.Background()
	names := c.OnEveryMaster(func(i int) string { return fmt.Sprint("hub", i) }, func(n string) string { return newKeys("bq", n).ready })
	slot := keySlot(newKeys("bq", names[0]).bell)
	for i := 0; ; i++ {
		n := fmt.Sprint("twin", i)
		if keySlot(newKeys("bq", n).bell) == slot {
			names = append(names, n)
			break
		}
	}
	p := np(t, pool.Config{})
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g := group(t)
	ran := make(chan string, 10)
	cons := newConsumer(t, mustQueue(t, p, names[0], Config{}), ConsumerConfig{Logger: log})
	qs := make([]*Queue, len(names))
	for i, name := range names {
		qs[i] = mustQueue(t, p, name, Config{Logger: log})
		w, err := NewWorker(cons, qs[i], func(_ context.Context, j *Job) error { ran <- j.Queue; return nil }, WorkerConfig{Logger: log})
		require.NoError(t, err)
		require.NoError(t, w.Start(g))
	}
	require.Equal(t, len(names)-1, p.Stats().Blocking.Reserved, "one connection per slot: the twin shares its slot's")
	for _, q := range qs {
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
	}
	seen := map[string]bool{}
	for range qs {
		seen[recv(t, ran, 10*time.Second, "a job of every queue")] = true
	}
	require.Len(t, seen, len(names))
	require.NotContains(t, logs.String(), "CROSSSLOT")
	require.Empty(t, logs.String())
}

// A ring popped by a consumer whose worker has no free slot is rung again
// for the others: with consumer A busy (its one slot held) and B idle,
// every job enqueued one at a time runs on B at once, whichever hub pops
// its ring.
func TestRingOfABusyConsumerGoesToAnother(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		q := mustQueue(t, p, "busy", Config{})
		g := group(t)
		release := make(chan struct{})
		t.Cleanup(sync.OnceFunc(func() { close(release) }))
		busy := make(chan struct{}, 1)
		wa := startWorker(t, g, q, func(context.Context, *Job) error { busy <- struct{}{}; <-release; return nil },
			WorkerConfig{Concurrency: 1, BlockTimeout: time.Minute}, ConsumerConfig{ConsumerID: "pa"})
		_, err := q.Enqueue(ctx, []byte("long"))
		require.NoError(t, err)
		recv(t, busy, 10*time.Second, "A busy")
		ran := make(chan string, 1)
		wb := startWorker(t, g, q, func(_ context.Context, j *Job) error { ran <- string(j.Payload); return nil },
			WorkerConfig{Concurrency: 1, BlockTimeout: time.Minute}, ConsumerConfig{ConsumerID: "pb"})
		testutil.Eventually(t, testutil.Wait, "B waiting", func() bool { return wb.Stats().FetcherState == "blocking" })
		for i := range 50 {
			_, err := q.Enqueue(ctx, []byte(fmt.Sprint(i)))
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint(i), recv(t, ran, 10*time.Second, fmt.Sprint("job ", i, " on B")))
		}
		require.Equal(t, int64(1), wa.Stats().Busy, "A held its slot throughout")
	})
}
