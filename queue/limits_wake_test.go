package queue

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// countScript counts the calls of one script a client sends (its EVALSHA,
// alone or pipelined).
type countScript struct {
	sha string
	n   atomic.Int64
}

func (h *countScript) count(cmds ...redis.Cmder) {
	for _, c := range cmds {
		if a := c.Args(); len(a) > 1 && a[0] == "evalsha" && a[1] == h.sha {
			h.n.Add(1)
		}
	}
}

func (h *countScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.count(cmd); return next(ctx, cmd) }
}
func (h *countScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.count(cmds...); return next(ctx, cmds) }
}

// TestLimitReleaseWakesTighterLimit: two processes disagree on a queue's
// concurrency limit (a new limit rolling out): "wide" admits 5, "tight"
// admits 1. While wide runs 3 jobs, tight is rung for a new job and refused
// by its own limit, so it waits for a ring. Wide's handlers then finish:
// its own limit was never full, but the release leaves room under tight's,
// so it must ring, and tight runs the job. (Wide cannot take it: its rate
// spent its burst on the 3, and it sleeps to the next allowed instant,
// an hour away.) Before the fix the release rang only when the releasing
// process's own limit was full, and tight waited for good.
func TestLimitReleaseWakesTighterLimit(t *testing.T) {
	addr := redistest.Server(t).Addr()
	pWide := mustPool(t, pool.Config{Addrs: []string{addr}})
	pTight := mustPool(t, pool.Config{Addrs: []string{addr}})
	qWide := mustQueue(t, pWide, "lim-wake", Config{})
	qTight := mustQueue(t, pTight, "lim-wake", Config{})
	ctx := context.Background()

	release := make(chan struct{})
	hold := func(ctx context.Context, j *Job) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	wide := startWorker(t, group(t), qWide, hold, WorkerConfig{Concurrency: 3, Limit: Limit{Concurrency: 5, Rate: 3, Per: time.Hour}}, ConsumerConfig{ConsumerID: "wide"})
	for range 3 {
		_, err := qWide.Enqueue(ctx, []byte("hold"))
		require.NoError(t, err)
	}
	testutil.Eventually(t, testutil.Wait, "wide running 3", func() bool {
		n, err := qWide.LimitInFlight(ctx)
		return err == nil && n == 3 && wide.Stats().Busy == 3
	})

	takes := &countScript{sha: limitTakeScript.Hash()}
	pTight.Background().AddHook(takes)
	ran := make(chan string, 1)
	tight := startWorker(t, group(t), qTight, func(_ context.Context, j *Job) error {
		ran <- string(j.Payload)
		return nil
	}, WorkerConfig{Concurrency: 1, Limit: Limit{Concurrency: 1}}, ConsumerConfig{ConsumerID: "tight"})
	blockedAfter := func(n int64) func() bool {
		return func() bool { return takes.n.Load() >= n && tight.Stats().FetcherState == "blocking" }
	}
	testutil.Eventually(t, testutil.Wait, "tight's first take", blockedAfter(1))
	_, err := qTight.Enqueue(ctx, []byte("a"))
	require.NoError(t, err)
	testutil.Eventually(t, testutil.Wait, "tight refused by its limit", blockedAfter(2))
	n, err := pTight.Client().LLen(ctx, qTight.k.ready).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the job waits in the ready list")

	close(release)
	require.Equal(t, "a", recv(t, ran, 4*time.Second, "tight to run the job once wide's slots are back"))
	require.Zero(t, wide.Stats().Processed-3, "wide ran only its 3")
}

// TestLimitWaitingScript walks the waiting set through the scripts: a take
// the limit stops records its consumer with its limit, its next take
// removes it; a release rings when it leaves fewer slots held than the
// tightest waiting limit, whatever the releaser's own limit, and a drain's
// release ('range') removes its consumer.
func TestLimitWaitingScript(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			k := newKeys("bq", "limwait")
			for _, e := range []string{"a", "b", "c", "d"} {
				require.NoError(t, rdb.LPush(ctx, k.ready, e).Err())
			}
			bell := func() bool {
				n, err := rdb.ZCard(ctx, k.bell).Result()
				require.NoError(t, err)
				require.NoError(t, rdb.Del(ctx, k.bell).Err())
				return n > 0
			}
			waiting := func() []redis.Z {
				z, err := rdb.ZRangeWithScores(ctx, k.limitWaiting(), 0, -1).Result()
				require.NoError(t, err)
				return z
			}
			wide := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("wide", "t1"), conc: 5}
			tight := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("tight", "t2"), conc: 1}
			_, got := wide.take(2, 0)
			require.Equal(t, []string{"a", "b"}, got)
			bell()
			require.Empty(t, waiting(), "not stopped by the limit")
			_, got = tight.take(1, 0)
			require.Empty(t, got, "2 held: tight's limit is full")
			require.Equal(t, []redis.Z{{Score: 1, Member: tight.prefix}}, waiting())
			require.False(t, bell(), "stopped by the limit: no ring")
			require.EqualValues(t, 1, wide.release("a"))
			require.False(t, bell(), "1 held: still no room under tight's limit")
			require.EqualValues(t, 1, wide.release("b"))
			require.True(t, bell(), "0 held: room under tight's limit, though wide's was never full")
			require.EqualValues(t, 0, wide.release("b"))
			require.False(t, bell(), "a release of nothing rings nothing")

			// tight's next take (it says it waited) takes and stops waiting.
			reply, err := limitTakeScript.Run(ctx, rdb,
				append(append(append(append([]string{k.ready, k.proc("c1"), k.bell, k.paused}, k.partKeys()...), k.limitHeld(), k.limitRate(), k.limitPart(), k.limitPartRateOf(0, 0)), k.levels...), k.limitWaiting(), k.partWaiters()),
				1, tight.prefix, 1, 0, 0, 0, 0, 0, 0, 0, "1", k.roomChannel()).StringSlice()
			require.NoError(t, err)
			require.Equal(t, []string{"0", "c"}, reply)
			require.Empty(t, waiting(), "its take removed it")

			// Refused again, then its drain gives its slots back: no longer waiting.
			_, got = tight.take(1, 0)
			require.Empty(t, got)
			require.Len(t, waiting(), 1)
			lo, hi := lexRange(tight.prefix)
			require.NoError(t, limitReleaseScript.Run(ctx, rdb, append(k.withLevels(append([]string{k.limitHeld(), k.ready, k.bell, k.limitPart()}, k.partKeys()...)...), k.limitWaiting()), "range", 1, 0, lo, hi).Err())
			require.Empty(t, waiting(), "the drain's release removed it")
		})
	}
}
