package queue

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// fillToLimit sets the server's maxmemory a little above what it uses now
// (policy noeviction) and enqueues 1 KB jobs until Redis refuses one with
// its OOM error. It returns how many were enqueued.
func fillToLimit(t *testing.T, srv *redistest.Redis, q *Queue) int {
	t.Helper()
	ctx := context.Background()
	info, err := srv.Do(ctx, "INFO", "memory")
	require.NoError(t, err)
	used := infoField(info, "used_memory")
	require.NotEmpty(t, used)
	n, err := strconv.ParseInt(used, 10, 64)
	require.NoError(t, err)
	_, err = srv.Do(ctx, "CONFIG", "SET", "maxmemory-policy", "noeviction")
	require.NoError(t, err)
	_, err = srv.Do(ctx, "CONFIG", "SET", "maxmemory", strconv.FormatInt(n+2<<20, 10))
	require.NoError(t, err)
	payload := []byte(strings.Repeat("x", 1000))
	for i := 0; ; i++ {
		_, err := q.Enqueue(ctx, payload)
		if err != nil {
			require.True(t, isOOM(err), "enqueue %d failed with %v, want Redis's OOM error", i, err)
			return i
		}
		require.Less(t, i, 1_000_000, "Redis never filled up")
	}
}

// TestDrainAtMemoryLimit: a Redis full under noeviction refuses enqueues, and
// a worker started after it filled still starts, drains every job once,
// promotes due delayed jobs and keeps its heartbeat alive while Redis stays
// at the limit (its handlers hold the first jobs, so nothing is acked and no
// memory is freed until the test lets them go).
func TestDrainAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "oom", Config{})
	ctx := context.Background()

	const delayed = 20
	for i := range delayed {
		_, err := q.Enqueue(ctx, []byte("delayed-"+strconv.Itoa(i)), Delay(300*time.Millisecond))
		require.NoError(t, err)
	}
	ready := fillToLimit(t, srv, q)
	require.Greater(t, ready, 100)
	total := ready + delayed

	gate := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	h := func(ctx context.Context, job *Job) error {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		seen[job.ID]++
		mu.Unlock()
		return nil
	}
	g := group(t)
	logs := &logRecorder{}
	w, err := NewWorker(consumerFor(t, g, q, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTTL: 2 * time.Second}),
		q, h, WorkerConfig{Concurrency: 8, BlockTimeout: time.Second, Logger: slog.New(logs)})
	require.NoError(t, err)
	require.NoError(t, w.Start(g), "Start at the memory limit")

	// Redis stays at the limit while the handlers hold their jobs: the
	// delayed jobs get promoted and the heartbeat beats all the same.
	hb := heartbeatKey(q.cfg.Namespace)
	score := func() float64 {
		s, err := p.Background().ZScore(ctx, hb, w.Stats().ConsumerID).Result()
		require.NoError(t, err)
		return s
	}
	first := score()
	testutil.Eventually(t, testutil.Wait, "delayed jobs promoted at the limit", func() bool {
		n, err := p.Background().ZCard(ctx, q.k.delayed).Result()
		return err == nil && n == 0
	})
	testutil.Eventually(t, testutil.Wait, "three heartbeats at the limit", func() bool {
		return score() >= first+300
	})
	testutil.Eventually(t, testutil.Wait, "every handler holding a job", func() bool {
		return w.Stats().InFlight == 8
	})
	_, err = q.Enqueue(ctx, []byte("more"))
	require.True(t, isOOM(err), "Redis is still at its limit: %v", err)
	mem := w.Memory()
	require.True(t, mem.AtLimit)
	require.Equal(t, uint64(delayed), mem.PromotedAtLimit)
	require.Equal(t, "noeviction", mem.Policy)
	require.False(t, mem.Evicting)
	require.Equal(t, "waiting for a free slot", w.Stats().FetcherState)

	close(gate)
	testutil.Eventually(t, 60*time.Second, fmt.Sprintf("all %d jobs processed", total), func() bool {
		return w.Stats().Processed >= uint64(total)
	})
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, total)
	for id, n := range seen {
		require.Equal(t, 1, n, "job %s ran %d times", id, n)
	}
	st := w.Stats()
	require.Zero(t, st.Recovered)
	require.Zero(t, st.LostLeases)
	require.Zero(t, st.Dead)
	// Processed counts a job when its handler returns, before the acker's
	// pipeline has written its outcome: wait for the last acks to land.
	testutil.Eventually(t, testutil.Wait, "every outcome written", func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Ready+s.Delayed+s.InFlight == 0
	})
	require.Positive(t, w.Memory().FetchedAtLimit)
	require.Equal(t, 1, logs.count("ERROR queue: Redis is at maxmemory"), "said once, however often the fetcher finds Redis at the limit")
	require.Zero(t, logs.count("WARN"), "nothing failed")
}

// rejected returns a command's rejected calls (refused before running, as
// deny-oom commands at the limit are) from INFO commandstats.
func rejected(t *testing.T, srv *redistest.Redis, cmd string) int64 {
	t.Helper()
	info, err := srv.Do(context.Background(), "INFO", "commandstats")
	require.NoError(t, err)
	for _, f := range strings.Split(infoField(info, "cmdstat_"+cmd), ",") {
		if v, ok := strings.CutPrefix(f, "rejected_calls="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

// TestIdleAtMemoryLimit: a worker whose queue is empty while Redis is full
// (of another queue's jobs) waits BlockTimeout between looks instead of
// spinning on the refused BLMOVE, and a delayed job that falls due is
// promoted and run at the limit.
func TestIdleAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	clock := testutil.NewClock()
	q := mustQueue(t, p, "idle", Config{Now: clock.Now})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("later"), Delay(time.Minute))
	require.NoError(t, err)
	fillToLimit(t, srv, mustQueue(t, p, "filler", Config{}))

	done := make(chan string, 1)
	g := group(t)
	w := startWorker(t, g, q, func(_ context.Context, job *Job) error { done <- string(job.Payload); return nil },
		WorkerConfig{BlockTimeout: time.Second})
	// Idle: waiting at the limit, or for a ring (a take that ran while
	// Redis was just under the limit saw no refusal; no producer can add a
	// job at the limit, and a promotion or a sweep rings the doorbell).
	testutil.Eventually(t, testutil.Wait, "fetcher idle at the limit", func() bool {
		st := w.Stats().FetcherState
		return st == "waiting: Redis at maxmemory" || st == "blocking"
	})

	// The window is bounded by events: six BZPOPMIN timeouts of the
	// consumer's fetch hub (BZPOPMIN is not refused at the limit). INFO
	// commandstats counts the commands scripts run as calls, and commands
	// refused at the limit as rejected calls: what the worker sent is every
	// call except those run inside its scripts (at the limit, the direct
	// ZADD is refused), plus the rejected ones.
	inScripts := []string{"info", "lmove", "zrange", "zrangebyscore", "zadd", "lpush", "zrem", "del", "exists", "llen"}
	sent := func() (total, rounds int64) {
		s, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return redistest.TotalCalls(s, inScripts...) + rejected(t, srv, "zadd") + rejected(t, srv, "lmove"), s["bzpopmin"]
	}
	sent0, b0 := sent()
	// Six rounds, not three: a heartbeat pipeline or a script sent once
	// with EVAL (the script cache was cold) inside a short window read as
	// 4.33 per round on a loaded machine.
	testutil.Eventually(t, testutil.Wait, "six more BZPOPMIN timeouts", func() bool {
		_, b := sent()
		return b >= b0+6
	})
	sent1, b1 := sent()
	perRound := float64(sent1-sent0) / float64(b1-b0)
	t.Logf("idle at the limit: %.1f commands per BlockTimeout (BZPOPMIN, take script, promote read, heartbeats); %.2f/s at the default BlockTimeout", perRound, perRound/DefaultBlockTimeout.Seconds())
	require.LessOrEqual(t, perRound, 4.0)

	clock.Advance(2 * time.Minute)
	w.sched.wake(false) // the manual clock does not move the scheduler's real timer
	require.Equal(t, "later", testutil.Recv(t, done, "the delayed job, promoted and run at the limit"))
	require.Equal(t, uint64(1), w.Memory().PromotedAtLimit)
	require.True(t, w.Memory().AtLimit)
}

// TestSweepAtMemoryLimit: the jobs of a consumer that died before Redis
// filled up are recovered by a worker started at the limit (the sweep's
// SET NX lock is deny-oom; sweeping frees memory).
func TestSweepAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "sweep", Config{})
	ctx := context.Background()
	const held = 5
	c := p.Background()
	for i := range held {
		_, err := q.Enqueue(ctx, []byte("held-"+strconv.Itoa(i)))
		require.NoError(t, err)
		require.NoError(t, c.LMove(ctx, q.k.ready, q.k.proc("dead1"), "RIGHT", "LEFT").Err())
	}
	require.NoError(t, c.SAdd(ctx, q.k.consumers, "dead1").Err()) // and no heartbeat: long dead
	fillToLimit(t, srv, mustQueue(t, p, "filler", Config{}))

	ran := make(chan string, held)
	w := startWorker(t, group(t), q, func(_ context.Context, job *Job) error { ran <- string(job.Payload); return nil }, WorkerConfig{})
	got := map[string]bool{}
	for range held {
		got[testutil.Recv(t, ran, "a recovered job")] = true
	}
	require.Len(t, got, held)
	require.Equal(t, uint64(held), w.Stats().Recovered)
	require.True(t, w.Memory().AtLimit)
}

// TestLeaveLimitWhileBacklogged: once memory is freed, Memory().AtLimit
// clears although the fetcher never blocks (its batches stay full while
// there is a backlog): the stats and a health check built on them must not
// report Redis full, and the scripts run at the limit only while it is.
func TestLeaveLimitWhileBacklogged(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	clock := testutil.NewClock()
	q := mustQueue(t, p, "leave", Config{Now: clock.Now})
	ctx := context.Background()
	ready := fillToLimit(t, srv, q)

	next, release := make(chan struct{}), make(chan struct{})
	defer close(release) // before the group closes
	w := startWorker(t, group(t), q, func(ctx context.Context, _ *Job) error {
		select {
		case <-next:
			return nil
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, WorkerConfig{Concurrency: 1, BlockTimeout: time.Second})
	testutil.Eventually(t, testutil.Wait, "a job taken at the limit", func() bool {
		return w.Memory().FetchedAtLimit >= 1 && w.Stats().InFlight == 1
	})
	require.True(t, w.Memory().AtLimit)

	_, err := srv.Do(ctx, "CONFIG", "SET", "maxmemory", "0")
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("accepted again"))
	require.NoError(t, err)
	clock.Advance(atLimitProbe)
	// Each job a handler receives now was taken after the limit was
	// raised; the fifth was taken after four fetches below the limit.
	for i := range 5 {
		select {
		case next <- struct{}{}:
		case <-time.After(testutil.Wait):
			t.Fatalf("handler %d never ran", i)
		}
	}
	require.False(t, w.Memory().AtLimit, "Redis accepts writes again")
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Greater(t, s.Ready, int64(ready/2), "still backlogged: the fetcher never blocked")
}
