package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// poolsFunc gives a test pools on ONE Redis: each pool stands for a
// process.
type poolsFunc func(t testing.TB) func(cfg pool.Config) *pool.Pool

func miniPools(t testing.TB) func(cfg pool.Config) *pool.Pool {
	m := redistest.Mini(t)
	return func(cfg pool.Config) *pool.Pool { cfg.Addrs = []string{m.Addr()}; return mustPool(t, cfg) }
}

func serverPools(t testing.TB) func(cfg pool.Config) *pool.Pool {
	srv := redistest.Server(t)
	return func(cfg pool.Config) *pool.Pool { cfg.Addrs = []string{srv.Addr()}; return mustPool(t, cfg) }
}

func clusterPoolsOf(c *redistest.RedisCluster) poolsFunc {
	return func(t testing.TB) func(cfg pool.Config) *pool.Pool {
		require.NoError(t, c.Flush(context.Background()))
		return func(cfg pool.Config) *pool.Pool {
			cfg.Addrs, cfg.ClusterMode = c.Addrs(), true
			return mustPool(t, cfg)
		}
	}
}

// ctlProcess is one process of a test: a pool, a group, a queue, and a
// consumer with a control channel.
type ctlProcess struct {
	p *pool.Pool
	g *lifecycle.Group
	q *Queue
	c *Consumer
	w *Worker
}

func newCtlProcess(t *testing.T, newPool func(pool.Config) *pool.Pool, name string, cfg Config) *ctlProcess {
	t.Helper()
	p := newPool(pool.Config{})
	pr := &ctlProcess{p: p, g: group(t), q: mustQueue(t, p, name, cfg)}
	require.NoError(t, pr.q.Start(pr.g))
	testutil.Eventually(t, testutil.Wait, "the queue's subscriber", func() bool { return pr.q.room.Load().subscribed.Load() })
	return pr
}

// work starts a worker on a consumer with a control channel.
func (pr *ctlProcess) work(t *testing.T, h Handler, cfg WorkerConfig) *Worker {
	t.Helper()
	c, err := NewConsumer(pr.p, ConsumerConfig{Namespace: pr.q.cfg.Namespace, Control: true, Now: pr.q.cfg.Now})
	require.NoError(t, err)
	w, err := NewWorker(c, pr.q, h, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(pr.g))
	testutil.Eventually(t, testutil.Wait, "the control subscriber", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.node != nil && c.node.ctl.subscribed.Load()
	})
	pr.c, pr.w = c, w
	return w
}

// blocker is a handler that reports each start and waits for its context,
// then reports the cause.
type blocker struct {
	started chan string
	causes  chan error
}

func newBlocker() *blocker {
	return &blocker{started: make(chan string, 100), causes: make(chan error, 100)}
}

func (b *blocker) handle(ctx context.Context, j *Job) error {
	b.started <- j.ID
	<-ctx.Done()
	b.causes <- context.Cause(ctx)
	return ctx.Err()
}

func TestGetStates(t *testing.T)        { testGetStates(t, miniPools) }
func TestGetStates_Server(t *testing.T) { testGetStates(t, serverPools) }

func testGetStates(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "get", Config{})
	q := pr.q

	_, err := q.Get(ctx, "nope")
	require.ErrorIs(t, err, ErrJobNotFound)
	_, err = q.Get(ctx, "bad id")
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrJobNotFound)

	ready, err := q.Enqueue(ctx, []byte("r"))
	require.NoError(t, err)
	big := bytes.Repeat([]byte("b"), inlineMax+1)
	apart, err := q.Enqueue(ctx, big, ID("apart*[x]?"))
	require.NoError(t, err)
	delayed, err := q.Enqueue(ctx, []byte("d"), Delay(time.Hour), MaxAttempts(7))
	require.NoError(t, err)

	info, err := q.Get(ctx, ready)
	require.NoError(t, err)
	require.Equal(t, StateReady, info.State)
	require.Equal(t, "r", string(info.Payload))
	require.Equal(t, q.Name(), info.Queue)
	require.False(t, info.EnqueuedAt.IsZero())

	info, err = q.Get(ctx, apart)
	require.NoError(t, err)
	require.Equal(t, StateReady, info.State)
	require.Equal(t, big, info.Payload, "a payload kept apart is read")

	info, err = q.Get(ctx, delayed)
	require.NoError(t, err)
	require.Equal(t, StateDelayed, info.State)
	require.Equal(t, 7, info.MaxAttempts)
	require.WithinDuration(t, time.Now().Add(time.Hour), info.Due, time.Minute)

	// Running, done with a result, dead. The ready jobs run first.
	release := make(chan struct{})
	running := make(chan string, 10)
	pr.work(t, func(ctx context.Context, j *Job) error {
		switch string(j.Payload) {
		case "hold":
			require.NoError(t, j.Progress(ctx, []byte("half")))
			running <- j.ID
			<-release
			return j.SetResult([]byte("held"))
		case "fail":
			return Permanent(errors.New("boom"))
		}
		return j.SetResult([]byte("ok:" + j.ID))
	}, WorkerConfig{Concurrency: 2, ResultTTL: time.Minute})
	hold, err := q.Enqueue(ctx, []byte("hold"))
	require.NoError(t, err)
	testutil.Recv(t, running, "the held job")
	info, err = q.Get(ctx, hold)
	require.NoError(t, err)
	require.Equal(t, StateRunning, info.State)
	require.Equal(t, pr.c.ID(), info.Consumer)
	require.Equal(t, "half", string(info.Progress))
	close(release)
	res, err := q.Wait(ctx, hold)
	require.NoError(t, err)
	require.Equal(t, "held", string(res))
	// The result is written just before the ack, not atomically with it
	// (see Wait): the ack may land a moment after Wait returned.
	testutil.Eventually(t, testutil.Wait, "the ack after the result", func() bool {
		info, err = q.Get(ctx, hold)
		return err == nil && info.State == StateDone
	})
	require.Equal(t, "held", string(info.Result))
	require.Equal(t, "half", string(info.Progress))

	res, err = q.Wait(ctx, ready)
	require.NoError(t, err)
	require.Equal(t, "ok:"+ready, string(res))

	dead, err := q.Enqueue(ctx, []byte("fail"))
	require.NoError(t, err)
	_, err = q.Wait(ctx, dead)
	require.ErrorIs(t, err, ErrJobDead)
	require.Contains(t, err.Error(), "boom")
	info, err = q.Get(ctx, dead)
	require.NoError(t, err)
	require.Equal(t, StateDead, info.State)
	require.Contains(t, info.LastError, "boom")
	require.Equal(t, "fail", string(info.Payload))
	require.False(t, info.DiedAt.IsZero())
}

// TestGetLookupBounds: a job deeper in the ready list than the lookup
// bound is reported as ErrLookupIncomplete, never as ErrJobNotFound; jobs
// at either end are found.
// On miniredis with smaller bounds: its Lua is slow under -race.
func TestGetLookupBounds(t *testing.T)        { testGetLookupBounds(t, miniPool, 200) }
func TestGetLookupBounds_Server(t *testing.T) { testGetLookupBounds(t, serverPool, 0) }

// testGetLookupBounds runs with the bound given (0: the real ones).
func testGetLookupBounds(t *testing.T, np newPoolFunc, bound int) {
	ctx := context.Background()
	q := mustQueue(t, np(t, pool.Config{}), "deep", Config{})
	q.lookupBound = bound
	if bound == 0 {
		bound = lookupElems
	}
	first, err := q.Enqueue(ctx, []byte("first"))
	require.NoError(t, err)
	payloads := make([][]byte, bound/10)
	for i := range payloads {
		payloads[i] = []byte("x")
	}
	var ids []string
	for range 11 {
		more, err := q.EnqueueBatch(ctx, payloads)
		require.NoError(t, err)
		ids = append(ids, more...)
	}
	last, err := q.Enqueue(ctx, []byte("last"))
	require.NoError(t, err)

	for _, id := range []string{first, last} {
		info, err := q.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StateReady, info.State)
	}
	middle := ids[len(ids)/2]
	_, err = q.Get(ctx, middle)
	require.ErrorIs(t, err, ErrLookupIncomplete)
	require.NotErrorIs(t, err, ErrJobNotFound)
	_, err = q.Get(ctx, "unknown")
	require.ErrorIs(t, err, ErrLookupIncomplete)
	require.ErrorIs(t, q.Cancel(ctx, middle), ErrLookupIncomplete)

	// Below the bound the answer is exact.
	q2 := mustQueue(t, q.p, "shallow", Config{})
	q2.lookupBound = q.lookupBound
	for range 9 {
		_, err = q2.EnqueueBatch(ctx, payloads)
		require.NoError(t, err)
	}
	_, err = q2.Get(ctx, "unknown")
	require.ErrorIs(t, err, ErrJobNotFound)
}

func TestCancelWaiting(t *testing.T)        { testCancelWaiting(t, miniPools) }
func TestCancelWaiting_Server(t *testing.T) { testCancelWaiting(t, serverPools) }

func testCancelWaiting(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "cw", Config{})
	q := pr.q
	c := q.p.Client()

	big := bytes.Repeat([]byte("b"), inlineMax+1)
	ready, err := q.Enqueue(ctx, big, ID("order-1"))
	require.NoError(t, err)
	delayed, err := q.Enqueue(ctx, []byte("d"), Delay(time.Hour))
	require.NoError(t, err)

	waited := make(chan error, 1)
	go func() { _, err := q.Wait(ctx, ready); waited <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return q.room.Load().results.count() == 1 })

	require.NoError(t, q.Cancel(ctx, ready))
	require.ErrorIs(t, testutil.Recv(t, waited, "Wait of the cancelled job"), ErrCancelled)
	require.NoError(t, q.Cancel(ctx, delayed))
	require.NoError(t, q.Cancel(ctx, delayed), "a second cancel is no error")

	for _, id := range []string{ready, delayed} {
		info, err := q.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StateCancelled, info.State)
	}
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Ready)
	n, err := c.ZCard(ctx, q.k.delayed).Result()
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = c.HLen(ctx, q.k.payloads).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the payload kept apart is deleted")
	ttl, err := c.PTTL(ctx, q.k.cancelMarker(ready)).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, time.Duration(0))
	require.LessOrEqual(t, ttl, cancelTTL)
	// The idempotency key is free.
	_, err = q.Enqueue(ctx, []byte("again"), ID("order-1"))
	require.NoError(t, err)

	require.ErrorIs(t, q.Cancel(ctx, "unknown"), ErrJobNotFound)
	require.Error(t, q.Cancel(ctx, "bad id"))
}

// TestCancelCannotRemoveAFetchedJob: the element a lookup found is taken by
// a fetcher before the cancel script runs: the script removes nothing,
// and the job is left in the fetcher's processing list.
func TestCancelCannotRemoveAFetchedJob(t *testing.T) {
	ctx := context.Background()
	q := mustQueue(t, miniPool(t, pool.Config{}), "race", Config{})
	c := q.p.Client()
	id, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	loc, err := q.locate(ctx, id)
	require.NoError(t, err)
	require.Equal(t, locReady, loc.where)
	// A fetcher takes it.
	require.NoError(t, c.LMove(ctx, q.k.ready, q.k.proc("other"), "RIGHT", "LEFT").Err())
	n, err := q.cancelWaiting(ctx, c, loc)
	require.NoError(t, err)
	require.Zero(t, n)
	got, err := c.LRange(ctx, q.k.proc("other"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{loc.elem}, got)
	exists, err := c.Exists(ctx, q.k.cancelMarker(id)).Result()
	require.NoError(t, err)
	require.Zero(t, exists, "nothing recorded")
}

func TestCancelRunningAcrossProcesses(t *testing.T)        { testCancelRunning(t, miniPools) }
func TestCancelRunningAcrossProcesses_Server(t *testing.T) { testCancelRunning(t, serverPools) }

// testCancelRunning: two processes consume the queue; a third cancels a job
// running in one of them. Its handler sees ErrCancelled as the cause, the
// job is not retried, and the other process's job runs on.
func testCancelRunning(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	newPool := pools(t)
	b := newBlocker()
	a := newCtlProcess(t, newPool, "cr", Config{})
	a.work(t, b.handle, WorkerConfig{Concurrency: 1})
	other := newCtlProcess(t, newPool, "cr", Config{})
	other.work(t, b.handle, WorkerConfig{Concurrency: 1})
	producer := newCtlProcess(t, newPool, "cr", Config{})

	id1, err := producer.q.Enqueue(ctx, []byte("1"))
	require.NoError(t, err)
	id2, err := producer.q.Enqueue(ctx, []byte("2"))
	require.NoError(t, err)
	started := map[string]bool{}
	started[testutil.Recv(t, b.started, "a start")] = true
	started[testutil.Recv(t, b.started, "a start")] = true
	require.True(t, started[id1] && started[id2])

	info, err := producer.q.Get(ctx, id1)
	require.NoError(t, err)
	require.Equal(t, StateRunning, info.State)
	waited := make(chan error, 1)
	go func() { _, err := producer.q.Wait(ctx, id1); waited <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return producer.q.room.Load().results.count() == 1 })

	require.NoError(t, producer.q.Cancel(ctx, id1))
	require.ErrorIs(t, testutil.Recv(t, b.causes, "the cancelled handler"), ErrCancelled)
	require.ErrorIs(t, testutil.Recv(t, waited, "Wait of the cancelled job"), ErrCancelled)
	testutil.Eventually(t, testutil.Wait, "the cancelled job dropped", func() bool {
		_, err := producer.q.Get(ctx, id1)
		info, _ := producer.q.Get(ctx, id1)
		return err == nil && info.State == StateCancelled
	})
	require.Equal(t, uint64(1), a.w.ctl.cancelled.Load()+other.w.ctl.cancelled.Load())
	st, err := producer.q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Delayed, "not retried")
	require.Zero(t, st.Dead)
	require.Zero(t, st.Ready)
	require.Equal(t, int64(1), st.InFlight, "the other job runs on")
	select {
	case id := <-b.started:
		t.Fatalf("job %s started again", id)
	default:
	}
	require.NoError(t, producer.q.Cancel(ctx, id2))
	require.ErrorIs(t, testutil.Recv(t, b.causes, "the other cancelled handler"), ErrCancelled)
}

// TestCancelFoundAfterResubscribing: a cancel sent while the control
// subscription was down is found when it subscribes again.
func TestCancelFoundAfterResubscribing(t *testing.T) {
	ctx := context.Background()
	b := newBlocker()
	pr := newCtlProcess(t, miniPools(t), "resub", Config{})
	pr.work(t, b.handle, WorkerConfig{Concurrency: 1})
	id, err := pr.q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	testutil.Recv(t, b.started, "the job")
	loc, err := pr.q.locate(ctx, id)
	require.NoError(t, err)
	require.Equal(t, locRunning, loc.where)
	// The cancel's record, without its message (lost: no subscriber).
	require.NoError(t, pr.q.p.Client().Set(ctx, pr.q.k.cancelMarker(id), markerValue(loc.env), cancelTTL).Err())
	select {
	case err := <-b.causes:
		t.Fatalf("cancelled without a message: %v", err)
	default:
	}
	pr.c.mu.Lock()
	ctl := pr.c.node.ctl
	pr.c.mu.Unlock()
	ctl.drop() // the connection is lost; the subscriber subscribes again
	require.ErrorIs(t, testutil.Recv(t, b.causes, "the cancelled handler"), ErrCancelled)
}

// TestCancelBeforeStart: a cancel that reaches the process before the
// handler starts (the job fetched, not started) cancels it at start.
func TestCancelBeforeStart(t *testing.T) {
	var ctl workerCtl
	now := time.Now()
	ctl.cancel(runKey("a", "1"), now)
	jr := &jobRun{key: runKey("a", "1")}
	require.True(t, ctl.begin(jr, now))
	ctl.end(jr)
	jr2 := &jobRun{key: runKey("a", "2")} // another run of the ID
	require.False(t, ctl.begin(jr2, now))
	ctl.end(jr2)
	// Bounded.
	for i := range ctlRecentMax + 10 {
		ctl.cancel(runKey("x", fmt.Sprint(i)), now)
	}
	require.Len(t, ctl.recent, ctlRecentMax)
	require.Len(t, ctl.order, ctlRecentMax)
	// Expired.
	ctl.cancel(runKey("old", "1"), now.Add(-cancelTTL))
	require.False(t, ctl.begin(&jobRun{key: runKey("old", "1")}, now))
}

func TestCancelDuringRetryDelay(t *testing.T)        { testCancelDuringRetryDelay(t, miniPools) }
func TestCancelDuringRetryDelay_Server(t *testing.T) { testCancelDuringRetryDelay(t, serverPools) }

func testCancelDuringRetryDelay(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "retry", Config{})
	runs := make(chan int, 10)
	pr.work(t, func(_ context.Context, j *Job) error {
		runs <- j.Attempt
		return errors.New("flaky")
	}, WorkerConfig{Concurrency: 1, RetryBase: time.Hour, RetryMax: time.Hour})
	id, err := pr.q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	require.Equal(t, 1, testutil.Recv(t, runs, "the first attempt"))
	testutil.Eventually(t, testutil.Wait, "the retry to wait", func() bool {
		info, err := pr.q.Get(ctx, id)
		return err == nil && info.State == StateDelayed && info.Attempt == 1
	})
	require.NoError(t, pr.q.Cancel(ctx, id))
	info, err := pr.q.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, StateCancelled, info.State)
	n, err := pr.q.p.Client().ZCard(ctx, pr.q.k.delayed).Result()
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestCancelDeadAndDone: a dead job or one that succeeded cannot be
// cancelled.
func TestCancelDeadAndDone(t *testing.T) {
	ctx := context.Background()
	pr := newCtlProcess(t, miniPools(t), "dd", Config{})
	pr.work(t, func(_ context.Context, j *Job) error {
		if string(j.Payload) == "fail" {
			return Permanent(errors.New("no"))
		}
		return nil
	}, WorkerConfig{Concurrency: 1, ResultTTL: time.Minute})
	dead, err := pr.q.Enqueue(ctx, []byte("fail"))
	require.NoError(t, err)
	done, err := pr.q.Enqueue(ctx, []byte("ok"))
	require.NoError(t, err)
	res, err := pr.q.Wait(ctx, done)
	require.NoError(t, err)
	require.Empty(t, res, "no SetResult: an empty result")
	_, err = pr.q.Wait(ctx, dead)
	require.ErrorIs(t, err, ErrJobDead)
	require.ErrorIs(t, pr.q.Cancel(ctx, dead), ErrJobFinished)
	require.ErrorIs(t, pr.q.Cancel(ctx, done), ErrJobFinished)
}

func TestCancelRacingFetches(t *testing.T)        { testCancelRacingFetches(t, miniPools) }
func TestCancelRacingFetches_Server(t *testing.T) { testCancelRacingFetches(t, serverPools) }

// testCancelRacingFetches cancels jobs while workers fetch them: each job
// ends exactly one way (ran to success, or cancelled), none runs twice,
// none is left behind, and every Cancel answers nil, ErrJobFinished or
// ErrJobNotFound (it finished before the cancel found it).
func testCancelRacingFetches(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	const n = 200
	pr := newCtlProcess(t, pools(t), "racing", Config{})
	var mu sync.Mutex
	ran := map[string]int{}
	var cancelledRuns atomic.Int64
	pr.work(t, func(ctx context.Context, j *Job) error {
		mu.Lock()
		ran[j.ID]++
		mu.Unlock()
		select {
		case <-ctx.Done():
			cancelledRuns.Add(1)
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
			return nil
		}
	}, WorkerConfig{Concurrency: 4, ResultTTL: time.Minute})
	ids := make([]string, 0, n)
	toCancel := make(chan string, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range toCancel {
				errs <- pr.q.Cancel(ctx, id)
			}
		}()
	}
	for range n {
		id, err := pr.q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
		ids = append(ids, id)
		toCancel <- id
	}
	close(toCancel)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, ErrJobFinished) && !errors.Is(err, ErrJobNotFound) {
			t.Fatalf("Cancel: %v", err)
		}
	}
	testutil.Eventually(t, testutil.Wait, "every job to end", func() bool {
		st, err := pr.q.Stats(ctx)
		return err == nil && st.Ready == 0 && st.InFlight == 0 && st.Delayed == 0 && st.Dead == 0
	})
	mu.Lock()
	defer mu.Unlock()
	for id, k := range ran {
		require.Equal(t, 1, k, "job %s ran %d times", id, k)
	}
	for _, id := range ids {
		info, err := pr.q.Get(ctx, id)
		require.NoError(t, err)
		require.Contains(t, []JobState{StateDone, StateCancelled}, info.State)
	}
	t.Logf("%d of %d ran, %d of them cancelled while running", len(ran), n, cancelledRuns.Load())
}

func TestProgress(t *testing.T) {
	ctx := context.Background()
	clock := testutil.NewClock()
	pr := newCtlProcess(t, miniPools(t), "progress", Config{Now: clock.Now})
	step := make(chan string)
	stepped := make(chan error)
	var job *Job
	pr.work(t, func(ctx context.Context, j *Job) error {
		job = j
		for s := range step {
			if s == "done" {
				break
			}
			if s == "advance" {
				clock.Advance(progressEvery)
				stepped <- nil
				continue
			}
			stepped <- j.Progress(ctx, []byte(s))
		}
		return nil
	}, WorkerConfig{Concurrency: 1})
	id, err := pr.q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	do := func(s string) error {
		step <- s
		return testutil.Recv(t, stepped, "a step")
	}
	progress := func() string {
		info, err := pr.q.Get(ctx, id)
		require.NoError(t, err)
		return string(info.Progress)
	}
	require.NoError(t, do("1"))
	require.Equal(t, "1", progress())
	require.NoError(t, do("2"))
	require.NoError(t, do("3"))
	require.Equal(t, "1", progress(), "too fast: kept, not written")
	require.ErrorIs(t, do(strings.Repeat("x", MaxProgress+1)), ErrProgressTooLarge)
	require.NoError(t, do(strings.Repeat("x", MaxProgress)))
	require.NoError(t, do("4"))
	require.NoError(t, do("advance"))
	require.NoError(t, do("5"))
	require.Equal(t, "5", progress(), "an interval later: written at once")
	require.NoError(t, do("6"))
	require.Equal(t, "5", progress())
	step <- "done"
	testutil.Eventually(t, testutil.Wait, "the last value flushed with the outcome", func() bool {
		info, err := pr.q.Get(ctx, id)
		return err == nil && string(info.Progress) == "6"
	})
	ttl, err := pr.q.p.Client().PTTL(ctx, pr.q.k.progress(id)).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, time.Duration(0))
	require.LessOrEqual(t, ttl, progressTTL)
	require.Error(t, job.Progress(ctx, []byte("late")), "after the handler returned")
	require.Error(t, job.SetResult([]byte("late")))
	require.Error(t, (&Job{}).Progress(ctx, []byte("x")), "not a worker's job")
	require.Error(t, (&Job{}).SetResult([]byte("x")))
}

// TestProgressWrites counts the SETs a handler that reports progress in a
// tight loop sends: one inline, and the last value with the outcome.
func TestProgressWrites_Server(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "pw", Config{})
	done := make(chan struct{})
	startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
		defer close(done)
		for i := range 1000 {
			if err := j.Progress(ctx, []byte(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return nil
	}, WorkerConfig{Concurrency: 1})
	before, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	id, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	testutil.Recv(t, done, "the handler")
	testutil.Eventually(t, testutil.Wait, "the last value", func() bool {
		info, err := q.Get(ctx, id)
		return err == nil && string(info.Progress) == "999"
	})
	after, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), after["set"]-before["set"])
}

func TestResults(t *testing.T)        { testResults(t, miniPools) }
func TestResults_Server(t *testing.T) { testResults(t, serverPools) }

func testResults(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	newPool := pools(t)
	producer := newCtlProcess(t, newPool, "results", Config{})
	worker := newCtlProcess(t, newPool, "results", Config{})
	gate := make(chan struct{})
	worker.work(t, func(_ context.Context, j *Job) error {
		switch string(j.Payload) {
		case "big":
			err := j.SetResult(make([]byte, 1025))
			if !errors.Is(err, ErrResultTooLarge) {
				return Permanent(fmt.Errorf("SetResult of 1025 bytes: %v", err))
			}
			return j.SetResult(make([]byte, 1024))
		case "gated":
			<-gate
		}
		require.NoError(t, j.SetResult([]byte("first")))
		return j.SetResult([]byte("r:" + string(j.Payload)))
	}, WorkerConfig{Concurrency: 2, ResultTTL: time.Minute, MaxResult: 1024})

	// Wait before the job ends.
	gated, err := producer.q.Enqueue(ctx, []byte("gated"))
	require.NoError(t, err)
	got := make(chan []byte, 1)
	go func() {
		res, err := producer.q.Wait(ctx, gated)
		if err != nil {
			res = []byte("error: " + err.Error())
		}
		got <- res
	}()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return producer.q.room.Load().results.count() == 1 })
	close(gate)
	require.Equal(t, "r:gated", string(testutil.Recv(t, got, "Wait's result")))

	// Wait after the job ended.
	id, err := producer.q.Enqueue(ctx, []byte("later"))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the result", func() bool {
		n, _ := producer.q.p.Client().Exists(ctx, producer.q.k.result(id)).Result()
		return n == 1
	})
	res, err := producer.q.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, "r:later", string(res))
	ttl, err := producer.q.p.Client().PTTL(ctx, producer.q.k.result(id)).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, time.Duration(0))
	require.LessOrEqual(t, ttl, time.Minute)

	// Too large: refused, the handler decides.
	id, err = producer.q.Enqueue(ctx, []byte("big"))
	require.NoError(t, err)
	res, err = producer.q.Wait(ctx, id)
	require.NoError(t, err)
	require.Len(t, res, 1024)

	// A ctx that ends.
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = producer.q.Wait(tctx, "never-enqueued")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Zero(t, producer.q.room.Load().results.count(), "the waiter is gone")
}

func TestWaitNeedsStart(t *testing.T) {
	q := mustQueue(t, miniPool(t, pool.Config{}), "ns", Config{})
	_, err := q.Wait(context.Background(), "x")
	require.ErrorIs(t, err, ErrNotStarted)
	_, err = q.Wait(context.Background(), "bad id")
	require.Error(t, err)
}

func TestResultConfig(t *testing.T) {
	q := mustQueue(t, miniPool(t, pool.Config{}), "cfg", Config{})
	h := func(context.Context, *Job) error { return nil }
	for _, cfg := range []WorkerConfig{{ResultTTL: -time.Second}, {ResultTTL: time.Microsecond}, {MaxResult: -1}, {MaxResult: maxResultLimit + 1}} {
		_, err := newWorker(t, q, h, cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", cfg)
	}
	_, err := newWorker(t, q, h, WorkerConfig{ResultTTL: time.Second, MaxResult: maxResultLimit})
	require.NoError(t, err)
}

// TestSetResultNeedsResultTTL: a worker that keeps no results refuses
// SetResult, and stores none.
func TestSetResultNeedsResultTTL(t *testing.T) {
	ctx := context.Background()
	q := mustQueue(t, miniPool(t, pool.Config{}), "nores", Config{})
	errs := make(chan error, 1)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		errs <- j.SetResult([]byte("x"))
		return nil
	}, WorkerConfig{Concurrency: 1})
	id, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	require.ErrorContains(t, testutil.Recv(t, errs, "SetResult"), "ResultTTL")
	testutil.Eventually(t, testutil.Wait, "the job to end", func() bool {
		_, err := q.Get(ctx, id)
		return errors.Is(err, ErrJobNotFound)
	})
}

// TestControlNeedsABlockingConnection: a Consumer with Control needs one
// more connection of the blocking lane, and a budget without it fails
// Start at once.
func TestControlNeedsABlockingConnection(t *testing.T) {
	p := miniPool(t, pool.Config{Blocking: pool.BlockingConfig{Size: 1}})
	q := mustQueue(t, p, "budget", Config{})
	c, err := NewConsumer(p, ConsumerConfig{Control: true})
	require.NoError(t, err)
	w, err := NewWorker(c, q, func(context.Context, *Job) error { return nil }, WorkerConfig{})
	require.NoError(t, err)
	err = w.Start(group(t))
	require.ErrorIs(t, err, pool.ErrOverBudget)
	require.Contains(t, err.Error(), "queue control")
	require.Empty(t, p.Stats().Blocking.Reservations, "nothing is left reserved")
}

// TestWaitForAJobPastItsDeadline: a job the fetcher sends to the dead
// letters (not started by its Deadline) wakes the producer waiting for it.
func TestWaitForAJobPastItsDeadline(t *testing.T) {
	ctx := context.Background()
	clock := testutil.NewClock()
	pr := newCtlProcess(t, miniPools(t), "deadline", Config{Now: clock.Now})
	id, err := pr.q.Enqueue(ctx, []byte("late"), Deadline(clock.Now().Add(time.Second)))
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() { _, err := pr.q.Wait(ctx, id); waited <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return pr.q.room.Load().results.count() == 1 })
	clock.Advance(2 * time.Second)
	pr.work(t, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 1})
	err = testutil.Recv(t, waited, "Wait of the expired job")
	require.ErrorIs(t, err, ErrJobDead)
	require.ErrorContains(t, err, "deadline exceeded")
}
