package queue

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func TestCancelledLastAttemptIsDropped(t *testing.T)        { testCancelledLastAttempt(t, miniPools) }
func TestCancelledLastAttemptIsDropped_Server(t *testing.T) { testCancelledLastAttempt(t, serverPools) }

// testCancelledLastAttempt: a cancel recorded while the job's last attempt
// runs, whose message does not reach the handler (a consumer without
// Control), must drop the job as it drops an earlier attempt's retry: "A
// run that ends with an error after its cancel is dropped, never retried
// and not dead-lettered".
func testCancelledLastAttempt(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "last", Config{})
	started := make(chan string, 10)
	release := make(chan struct{})
	onDead := make(chan string, 10)
	w := startWorker(t, pr.g, pr.q, func(_ context.Context, j *Job) error {
		started <- j.ID
		<-release
		return errors.New("failed after its cancel")
	}, WorkerConfig{Concurrency: 1, OnDead: func(o Outcome) { onDead <- o.Job.ID }},
		ConsumerConfig{Namespace: pr.q.cfg.Namespace}) // no Control: the cancel is only recorded
	big := make([]byte, 64<<10) // its payload kept apart
	id, err := pr.q.Enqueue(ctx, big, MaxAttempts(1), ID("last-1"))
	require.NoError(t, err)
	require.Equal(t, id, testutil.Recv(t, started, "the run"))
	n, err := pr.p.Client().HLen(ctx, pr.q.k.payloads).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the payload is kept apart")
	waited := make(chan error, 1)
	go func() { _, err := pr.q.Wait(ctx, id); waited <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return pr.q.room.Load().results.count() == 1 })
	require.NoError(t, pr.q.Cancel(ctx, id))
	close(release) // the last attempt ends with an error after its cancel
	require.ErrorIs(t, testutil.Recv(t, waited, "Wait of the cancelled job"), ErrCancelled)
	var info JobInfo
	testutil.Eventually(t, testutil.Wait, "the run's outcome", func() bool {
		info, err = pr.q.Get(ctx, id)
		return err == nil && info.State != StateRunning
	})
	require.Equal(t, StateCancelled, info.State)
	st, err := pr.q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Ready+st.Delayed+st.InFlight+st.Dead, "dropped, not dead-lettered")
	c := pr.p.Client()
	n, err = c.Exists(ctx, pr.q.k.unique(id)).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the ID is freed")
	n, err = c.HLen(ctx, pr.q.k.payloads).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the payload kept apart is deleted")
	testutil.Eventually(t, testutil.Wait, "the acker to count the outcome", func() bool {
		return w.ctl.cancelled.Load()+w.Stats().Dead > 0
	})
	require.Equal(t, uint64(1), w.ctl.cancelled.Load())
	require.Zero(t, w.Stats().Dead)
	select {
	case id := <-onDead:
		t.Fatalf("OnDead called for the cancelled job %s", id)
	default:
	}
}

func TestPausedTakeLeavesNoWaitingEntry(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) { testPausedTakeLeavesNoWaitingEntry(t, srv.addr(t)) })
	}
}

// testPausedTakeLeavesNoWaitingEntry: a consumer the concurrency limit
// stopped is recorded in the waiting set; a release rings it, and its take
// finds the queue paused. It no longer waits for a slot (Resume rings it),
// so that take must remove its entry: the consumer's next takes say they
// did not wait, and nothing else would remove it while the consumer lives,
// so every release leaving fewer slots than its limit would ring for
// nobody.
func testPausedTakeLeavesNoWaitingEntry(t *testing.T, addr string) {
	ctx := context.Background()
	p := mustPool(t, pool.Config{Addrs: []string{addr}})
	q := mustQueue(t, p, "lim-paused", Config{})
	takes := &countScript{sha: limitTakeScript.Hash()}
	p.Background().AddHook(takes)
	release := make(chan struct{}, 10)
	ran := make(chan string, 10)
	w := startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
		ran <- string(j.Payload)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, WorkerConfig{Concurrency: 2, Limit: Limit{Concurrency: 1}})
	waiting := func() []string {
		m, err := p.Client().ZRange(ctx, q.k.limitWaiting(), 0, -1).Result()
		require.NoError(t, err)
		return m
	}
	_, err := q.Enqueue(ctx, []byte("a"))
	require.NoError(t, err)
	require.Equal(t, "a", testutil.Recv(t, ran, "a to run"))
	_, err = q.Enqueue(ctx, []byte("b"))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "the take of b stopped by the limit", func() bool {
		return len(waiting()) == 1 && w.Stats().FetcherState == "blocking"
	})
	require.NoError(t, q.Pause(ctx))
	before := takes.n.Load()
	release <- struct{}{} // a ends: its release rings, the take finds the queue paused
	testutil.Eventually(t, testutil.Wait, "the take on the paused queue", func() bool {
		n, err := q.LimitInFlight(ctx)
		return err == nil && n == 0 && takes.n.Load() > before && w.Stats().FetcherState == "blocking"
	})
	require.Empty(t, waiting(), "a take on a paused queue waits for no slot")

	require.NoError(t, q.Resume(ctx))
	require.Equal(t, "b", testutil.Recv(t, ran, "b to run once resumed"))
	release <- struct{}{}
	testutil.Eventually(t, testutil.Wait, "b done", func() bool {
		n, err := q.LimitInFlight(ctx)
		return err == nil && n == 0 && w.Stats().Processed == 2
	})
	require.Empty(t, waiting(), "no entry left once the queue drained")
}

// On a real server only: it relies on Redis serving the client blocked the
// longest first, which miniredis does not promise. Which consumer blocked
// last is not fully in the test's hands (a fetcher may block again for
// its own reasons), so it runs the scenario until tight took the ring, at
// most 5 times (in round 1 in 19 of 20 runs, round 2 in the other).
func TestLimitRingPoppedByATighterLimitReachesTheWider(t *testing.T) {
	addr := redistest.Server(t).Addr()
	for i := range 5 {
		if testLimitRingPoppedByATighterLimit(t, addr, fmt.Sprintf("lim-pop-%d", i)) {
			t.Logf("tight took the release's ring in round %d", i+1)
			return
		}
	}
	t.Fatal("tight never took the release's ring: the scenario did not happen")
}

// testLimitRingPoppedByATighterLimit: two processes disagree on a queue's
// concurrency limit: "wide" admits 3, "tight" 1; another consumer
// ("ghost") holds 3 slots. A job is enqueued: wide, blocked the longest,
// takes the ring and is refused by its limit (it waits in the waiting
// set). One of ghost's slots is released: by its limit (3) the set was
// full, so the release rings once. Tight, now blocked the longest, pops
// the ring and is refused by its own limit (2 held); wide could take the
// job, and must: before the fix nobody rang again, and the job waited for
// wide's BlockTimeout (a minute here). It reports whether tight took the
// release's ring.
func testLimitRingPoppedByATighterLimit(t *testing.T, addr, name string) bool {
	ctx := context.Background()
	pWide := mustPool(t, pool.Config{Addrs: []string{addr}})
	pTight := mustPool(t, pool.Config{Addrs: []string{addr}})
	qWide := mustQueue(t, pWide, name, Config{})
	qTight := mustQueue(t, pTight, name, Config{})
	k, c := qWide.k, pWide.Client()
	ghost := slotPrefix("ghost", "t0")
	for _, e := range []string{"g1", "g2", "g3"} {
		require.NoError(t, c.ZAdd(ctx, k.limitHeld(), redis.Z{Member: ghost + "\x00" + e}).Err())
	}
	wideTakes := &countScript{sha: limitTakeScript.Hash()}
	pWide.Background().AddHook(wideTakes)
	tightTakes := &countScript{sha: limitTakeScript.Hash()}
	pTight.Background().AddHook(tightTakes)
	ran := make(chan string, 10)
	h := func(_ context.Context, j *Job) error { ran <- string(j.Payload); return nil }
	const block = time.Minute
	g := group(t)
	wide := startWorker(t, g, qWide, h, WorkerConfig{Concurrency: 3, BlockTimeout: block, Limit: Limit{Concurrency: 3}}, ConsumerConfig{ConsumerID: "wide-" + name})
	testutil.Eventually(t, testutil.Wait, "wide blocked", func() bool {
		return wideTakes.n.Load() >= 1 && wide.Stats().FetcherState == "blocking"
	})
	tight := startWorker(t, group(t), qTight, h, WorkerConfig{Concurrency: 1, BlockTimeout: block, Limit: Limit{Concurrency: 1}}, ConsumerConfig{ConsumerID: "tight-" + name})
	testutil.Eventually(t, testutil.Wait, "tight blocked", func() bool {
		return tightTakes.n.Load() >= 1 && tight.Stats().FetcherState == "blocking"
	})
	wideBefore, tightBefore := wideTakes.n.Load(), tightTakes.n.Load()
	_, err := qWide.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "a take refused by its limit", func() bool {
		n, err := c.ZCard(ctx, k.limitWaiting()).Result()
		return err == nil && n > 0 && wideTakes.n.Load()+tightTakes.n.Load() > wideBefore+tightBefore &&
			wide.Stats().FetcherState == "blocking" && tight.Stats().FetcherState == "blocking"
	})
	if tightTakes.n.Load() != tightBefore {
		return false // tight took the enqueue's ring: not the scenario
	}
	tightBefore = tightTakes.n.Load()

	n, err := limitReleaseScript.Run(ctx, c, append(k.withLevels(append([]string{k.limitHeld(), k.ready, k.bell, k.limitPart()}, k.partKeys()...)...), k.limitWaiting()),
		"members", 3, 0, ghost+"\x00g1").Int()
	require.NoError(t, err)
	require.Equal(t, 1, n)
	select {
	case p := <-ran:
		require.Equal(t, "x", p)
	case <-time.After(testutil.Wait):
		t.Fatalf("the job did not start within %s of the release (wide's BlockTimeout is %s); takes since the enqueue: wide %d, tight %d",
			testutil.Wait, block, wideTakes.n.Load()-wideBefore, tightTakes.n.Load()-tightBefore)
	}
	return tightTakes.n.Load() > tightBefore
}

// TestLimitRefusedTakeRingsForAWiderLimit walks limitTakeLua's ring again:
// a take the concurrency limit stops rings the doorbell when another
// consumer waits whose limit admits a job at the count held, and says at
// which count; the same consumer's next refusal at that count does not
// ring (its ring came back: nobody else blocks), at another count it does,
// and with no wider limit waiting nothing rings.
func TestLimitRefusedTakeRingsForAWiderLimit(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			k := newKeys("bq", "limrering")
			require.NoError(t, rdb.LPush(ctx, k.ready, "a").Err())
			ghost := slotPrefix("ghost", "t0")
			for _, e := range []string{"g1", "g2"} {
				require.NoError(t, rdb.ZAdd(ctx, k.limitHeld(), redis.Z{Member: ghost + "\x00" + e}).Err())
			}
			tight := slotPrefix("tight", "t1")
			take := func(waited, rerang string) string {
				reply, err := limitTakeScript.Run(ctx, rdb,
					append(append(append(append([]string{k.ready, k.proc("c1"), k.bell, k.paused}, k.partKeys()...), k.limitHeld(), k.limitRate(), k.limitPart(), k.limitPartRateOf(0, 0)), k.levels...), k.limitWaiting(), k.partWaiters()),
					1, tight, 1, 0, 0, 0, 0, 0, 0, 0, waited, rerang, k.roomChannel()).StringSlice()
				require.NoError(t, err)
				require.Len(t, reply, 1, "refused: nothing taken")
				return reply[0]
			}
			bell := func() bool {
				n, err := rdb.ZCard(ctx, k.bell).Result()
				require.NoError(t, err)
				require.NoError(t, rdb.Del(ctx, k.bell).Err())
				return n > 0
			}
			require.Equal(t, "c", take("0", ""), "nobody else waits")
			require.False(t, bell())
			require.NoError(t, rdb.ZAdd(ctx, k.limitWaiting(), redis.Z{Score: 2, Member: slotPrefix("same", "t2")}).Err())
			require.Equal(t, "c", take("1", ""), "a limit of 2 admits nothing at 2 held")
			require.False(t, bell())
			require.NoError(t, rdb.ZAdd(ctx, k.limitWaiting(), redis.Z{Score: 3, Member: slotPrefix("wide", "t3")}).Err())
			require.Equal(t, "c2", take("1", ""), "wide's limit admits one at 2 held")
			require.True(t, bell())
			require.Equal(t, "c", take("1", "2"), "it rang at 2 already")
			require.False(t, bell())
			require.NoError(t, rdb.ZRem(ctx, k.limitHeld(), ghost+"\x00g1").Err())
			require.Equal(t, "c1", take("1", "2"), "another count: it rings again")
			require.True(t, bell())
		})
	}
}

// countReads counts the pipelines a client sent that read key, once
// they are answered.
type countReads struct {
	key string
	n   atomic.Int64
}

func (h *countReads) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *countReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *countReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if a := c.Args(); len(a) == 2 && a[0] == "get" && a[1] == h.key {
				h.n.Add(1) // once read
				break
			}
		}
		return err
	}
}

func TestWaitDoesNotReportTheNextJobOfItsID(t *testing.T) {
	t.Run("done", func(t *testing.T) { testWaitPinsItsJob(t, miniPools, false) })
	t.Run("dead", func(t *testing.T) { testWaitPinsItsJob(t, miniPools, true) })
}

func TestWaitDoesNotReportTheNextJobOfItsID_Server(t *testing.T) {
	t.Run("done", func(t *testing.T) { testWaitPinsItsJob(t, serverPools, false) })
	t.Run("dead", func(t *testing.T) { testWaitPinsItsJob(t, serverPools, true) })
}

// testWaitPinsItsJob: a Wait started while job A holds its ID reads A's
// end only after A ended and job B took the ID and ended too (its wake-up
// came late: here A's is never sent, and a resubscription wakes it). B's
// enqueue deleted A's result (a reused ID is the new job's), so Wait
// cannot report A's result, and must not report B's: it says A finished
// and its ID was taken (ErrJobFinished). A's dead letter (aDies) is
// history, kept: Wait reports it.
func testWaitPinsItsJob(t *testing.T, pools poolsFunc, aDies bool) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "waitpin", Config{})
	q, c := pr.q, pr.p.Client()
	reads := &countReads{key: q.k.result("w")}
	c.AddHook(reads)
	started := make(chan string, 10)
	release := make(chan struct{})
	startWorker(t, pr.g, q, func(_ context.Context, j *Job) error {
		started <- string(j.Payload)
		if string(j.Payload) == "a" {
			<-release
			if aDies {
				return Permanent(errors.New("a failed"))
			}
		}
		return j.SetResult(j.Payload)
	}, WorkerConfig{Concurrency: 1, ResultTTL: time.Minute}, ConsumerConfig{Namespace: q.cfg.Namespace})
	_, err := q.Enqueue(ctx, []byte("a"), ID("w"))
	require.NoError(t, err)
	require.Equal(t, "a", testutil.Recv(t, started, "job a"))

	type waited struct {
		res []byte
		err error
	}
	done := make(chan waited, 1)
	wctx, cancel := context.WithTimeout(ctx, 2*testutil.Wait)
	defer cancel()
	go func() { res, err := q.Wait(wctx, "w"); done <- waited{res, err} }()
	testutil.Eventually(t, testutil.Wait, "Wait's first read", func() bool { return reads.n.Load() >= 1 })
	// A's end sends no wake-up (the registration is gone): Wait reads again
	// only when woken below.
	require.NoError(t, c.Del(ctx, q.k.resultWaiters("w")).Err())
	close(release)
	testutil.Eventually(t, testutil.Wait, "job a ended and its ID free", func() bool {
		n, err := c.Exists(ctx, q.k.unique("w")).Result()
		info, gerr := q.Get(ctx, "w")
		return err == nil && n == 0 && gerr == nil && (info.State == StateDone || aDies && info.State == StateDead)
	})
	_, err = q.Enqueue(ctx, []byte("b"), ID("w"))
	require.NoError(t, err)
	require.Equal(t, "b", testutil.Recv(t, started, "job b"))
	testutil.Eventually(t, testutil.Wait, "job b done", func() bool {
		n, err := c.Exists(ctx, q.k.unique("w")).Result()
		v, _ := c.Get(ctx, q.k.result("w")).Result()
		return err == nil && n == 0 && v == "b"
	})
	q.room.Load().results.wakeAll() // as a resubscription does
	got := testutil.Recv(t, done, "Wait")
	require.NotEqual(t, "b", string(got.res), "Wait reported the next job's result")
	if aDies {
		require.ErrorIs(t, got.err, ErrJobDead)
		require.ErrorContains(t, got.err, "a failed")
	} else {
		require.ErrorIs(t, got.err, ErrJobFinished)
	}
}
