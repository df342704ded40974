package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestLimitConfig: a Limit that cannot work is refused by NewWorker with
// an error naming the field, and nothing is started.
func TestLimitConfig(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "lim-config", Config{})
	h := func(context.Context, *Job) error { return nil }
	for _, c := range []struct {
		l    Limit
		want string
	}{
		{Limit{Concurrency: -1}, "WorkerConfig.Limit.Concurrency must be in 0..1000000, got -1"},
		{Limit{Concurrency: maxLimitConcurrency + 1}, "WorkerConfig.Limit.Concurrency must be in 0..1000000"},
		{Limit{Rate: -2, Per: time.Second}, "WorkerConfig.Limit.Rate must not be negative, got -2"},
		{Limit{Per: time.Second}, "WorkerConfig.Limit.Per and Burst need a Rate"},
		{Limit{Burst: 3}, "WorkerConfig.Limit.Per and Burst need a Rate"},
		{Limit{Rate: 1}, "WorkerConfig.Limit.Per must be a whole number of µs, at least 1µs, got 0s"},
		{Limit{Rate: 1, Per: 1500 * time.Nanosecond}, "WorkerConfig.Limit.Per must be a whole number of µs"},
		{Limit{Rate: 1, Per: time.Second, Burst: -1}, "WorkerConfig.Limit.Burst must be at least 1, got -1"},
		{Limit{Rate: 1, Per: 1000 * time.Hour, Burst: 1 << 30}, "WorkerConfig.Limit.Burst (1073741824) times the interval between two jobs"},
	} {
		_, err := newWorker(t, q, h, WorkerConfig{Limit: c.l})
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", c.l)
		require.ErrorContains(t, err, c.want, "%+v", c.l)
	}
	w, err := newWorker(t, q, h, WorkerConfig{Limit: Limit{Rate: 5, Per: time.Second}})
	require.NoError(t, err)
	require.Equal(t, 5, w.cfg.Limit.Burst, "Burst defaults to Rate")
}

// limitTake runs the limited take script as a worker would, with a fixed
// instant.
type limitTake struct {
	t      *testing.T
	rdb    *redis.Client
	k      keys
	prefix string // slotPrefix's
	conc   int
	scale  int64
	step   int64
	burst  int64
	pconc  int
	pstep  int64 // the partitions' rate: interval µs (0: none)
	pburst int64
	rate   string // the rate's key; "": k.limitRate()
}

func (l limitTake) take(n int, nowUS int64) (wait int64, elems []string) {
	l.t.Helper()
	w, elems := l.takeRaw(n, nowUS)
	if w == "c" { // stopped by the concurrency limit: waits for a slot
		return 0, elems
	}
	wait, err := strconv.ParseInt(strings.TrimPrefix(w, "p"), 10, 64)
	require.NoError(l.t, err)
	return wait, elems
}

// takeRaw is take with the wait as the script answers it ("p<µs>": the
// partitions' rates).
func (l limitTake) takeRaw(n int, nowUS int64) (wait string, elems []string) {
	l.t.Helper()
	rate := l.rate
	if rate == "" {
		rate = l.k.limitRate()
	}
	reply, err := limitTakeScript.Run(context.Background(), l.rdb,
		append(append(append(append([]string{l.k.ready, l.k.proc("c1"), l.k.bell, l.k.paused}, l.k.partKeys()...), l.k.limitHeld(), rate, l.k.limitPart(), l.k.limitPartRateOf(l.pstep, l.pburst)), l.k.levels...), l.k.limitWaiting(), l.k.partWaiters()),
		n, l.prefix, l.conc, nowUS, l.scale, l.step, l.burst, l.pconc, l.pstep, l.pburst, "0", l.k.roomChannel()).StringSlice()
	require.NoError(l.t, err)
	return reply[0], reply[1:]
}

func (l limitTake) release(elems ...string) int64 {
	args := []any{"elems", l.conc, l.pconc, l.prefix}
	for _, e := range elems {
		args = append(args, e)
	}
	n, err := limitReleaseScript.Run(context.Background(), l.rdb, append(l.k.withLevels(append([]string{l.k.limitHeld(), l.k.ready, l.k.bell, l.k.limitPart()}, l.k.partKeys()...)...), l.k.limitWaiting()), args...).Int64()
	require.NoError(l.t, err)
	return n
}

func scriptServers() []struct {
	name string
	addr func(t *testing.T) string
} {
	return []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"miniredis", func(t *testing.T) string { return redistest.Mini(t).Addr() }},
		{"server", func(t *testing.T) string { return redistest.Server(t).Addr() }},
	}
}

// TestLimitTakeScript walks the limited take through its decisions on
// fixed instants: the concurrency limit admits up to N and a release
// frees one (and rings); a wake marker passes the limit and holds no
// slot; the rate admits a burst, then one job per interval, and names the
// exact µs until the next; a take stopped by a limit does not ring.
func TestLimitTakeScript(t *testing.T) {
	for _, srv := range scriptServers() {
		t.Run(srv.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			k := newKeys("bq", "lim")
			push := func(elems ...string) {
				for _, e := range elems {
					require.NoError(t, rdb.LPush(ctx, k.ready, e).Err())
				}
			}
			bell := func() bool {
				n, err := rdb.ZCard(ctx, k.bell).Result()
				require.NoError(t, err)
				require.NoError(t, rdb.Del(ctx, k.bell).Err())
				return n > 0
			}
			const t0 = 1_767_225_600_000_123

			// Concurrency 2.
			l := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("c1", "tok"), conc: 2}
			push("a", "b", "c", "d")
			wait, got := l.take(1, t0)
			require.Equal(t, []string{"a"}, got)
			require.Zero(t, wait)
			require.True(t, bell(), "left jobs it had no slot for: rings for the others")
			wait, got = l.take(5, t0)
			require.Equal(t, []string{"b"}, got, "the second slot")
			require.Zero(t, wait, "not the rate")
			require.False(t, bell(), "stopped by the limit: no ring")
			_, got = l.take(5, t0)
			require.Empty(t, got)
			require.False(t, bell())
			held, err := rdb.ZRange(ctx, k.limitHeld(), 0, -1).Result()
			require.NoError(t, err)
			require.Equal(t, []string{l.prefix + "\x00a", l.prefix + "\x00b"}, held)
			require.EqualValues(t, 1, l.release("a"))
			require.True(t, bell(), "a freed slot with jobs waiting rings")
			require.EqualValues(t, 0, l.release("a"), "a second release frees nothing")
			require.False(t, bell())
			push(wakeMarker)
			_, got = l.take(5, t0)
			require.Equal(t, []string{"c"}, got)
			push("e")
			// ready (take end first): d, marker, e.
			_, got = l.take(5, t0)
			require.Empty(t, got, "d waits for a slot; the marker behind it too")
			require.EqualValues(t, 2, l.release("b", "c"))
			_, got = l.take(5, t0)
			require.Equal(t, []string{"d", wakeMarker, "e"}, got, "the marker holds no slot")
			require.EqualValues(t, 2, rdb.ZCard(ctx, k.limitHeld()).Val())
			push(wakeMarker, "f")
			_, got = l.take(5, t0)
			require.Equal(t, []string{wakeMarker}, got, "a marker at the take end passes the limit")
			require.NoError(t, rdb.Del(ctx, k.limitHeld(), k.ready, k.bell).Err())

			// Rate: 10 per second (an interval of 100ms), burst 3; no concurrency limit.
			r := limitTake{t: t, rdb: rdb, k: k, prefix: l.prefix, scale: 1, step: 100_000, burst: 3}
			push("1", "2", "3", "4", "5")
			wait, got = r.take(5, t0)
			require.Equal(t, []string{"1", "2", "3"}, got, "the burst")
			require.EqualValues(t, 100_000, wait, "the next in one interval")
			require.False(t, bell(), "stopped by the rate: no ring")
			wait, got = r.take(5, t0+40_000)
			require.Empty(t, got)
			require.EqualValues(t, 60_000, wait, "to the µs")
			wait, got = r.take(5, t0+100_000)
			require.Equal(t, []string{"4"}, got)
			require.EqualValues(t, 100_000, wait)
			wait, got = r.take(5, t0+450_000)
			require.Equal(t, []string{"5"}, got, "the last job: the queue is empty, no wait")
			require.Zero(t, wait)
			wait, got = r.take(5, t0+450_001)
			require.Empty(t, got)
			require.Zero(t, wait, "the rate is closed, but nothing waits for it: no timer")
			require.Zero(t, rdb.Exists(ctx, k.limitHeld()).Val(), "no concurrency limit: no slots")
			pttl, err := rdb.PTTL(ctx, k.limitRate()).Result()
			require.NoError(t, err)
			require.Greater(t, pttl, time.Duration(0), "the rate's state expires by itself")
		})
	}
}

// TestLimitConcurrencyInProcess: 4 consumers (each on a pool of its own,
// as 4 processes) x 10 handlers share a queue limited to 3 in flight;
// every handler start checks the count, and a sampler reads the slots in
// Redis every ms: never more than 3, and the queue drains.
func TestLimitConcurrencyInProcess(t *testing.T) {
	addr := redistest.Server(t).Addr()
	testLimitConcurrency(t, func(t testing.TB, cfg pool.Config) *pool.Pool {
		cfg.Addrs = []string{addr}
		return mustPool(t, cfg)
	})
}

// testLimitConcurrency is TestLimitConcurrencyInProcess on the pools of np
// (all on one Redis or cluster; np may empty it, so every pool is made
// before the jobs are enqueued), with a rate limit too, loose enough not
// to stop the drain.
func testLimitConcurrency(t *testing.T, np newPoolFunc) {
	p0 := np(t, pool.Config{})
	q0 := mustQueue(t, p0, "lim-conc", Config{})
	const jobs, limit = 300, 3
	var running, maxRunning, done atomic.Int64
	h := func(ctx context.Context, j *Job) error {
		n := running.Add(1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Millisecond) // the work
		running.Add(-1)
		done.Add(1)
		return nil
	}
	var ws []*Worker
	for i := range 4 {
		q := mustQueue(t, np(t, pool.Config{}), "lim-conc", Config{})
		lim := Limit{Concurrency: limit, Rate: 100_000, Per: time.Second}
		ws = append(ws, startWorker(t, group(t), q, h, WorkerConfig{Concurrency: 10, Limit: lim}, ConsumerConfig{ConsumerID: fmt.Sprintf("c%d", i)}))
	}
	ctx := context.Background()
	payloads := make([][]byte, jobs)
	for i := range payloads {
		payloads[i] = []byte("x")
	}
	_, err := q0.EnqueueBatch(ctx, payloads)
	require.NoError(t, err)
	smp := sampleInFlight(ctx, q0) // the slots in Redis, every ms
	defer smp.stop()
	testutil.Eventually(t, 30*time.Second, "every job done", func() bool { return done.Load() == jobs })
	smp.stop()
	require.LessOrEqual(t, maxRunning.Load(), int64(limit), "never more than the limit in flight")
	require.LessOrEqual(t, smp.most.Load(), int64(limit))
	require.EqualValues(t, limit, maxRunning.Load(), "the limit is reached")
	testutil.Eventually(t, 5*time.Second, "every slot given back", func() bool {
		n, err := q0.LimitInFlight(ctx)
		return err == nil && n == 0
	})
	t.Logf("max in flight %d (sampled %d times, max %d)", maxRunning.Load(), smp.samples.Load(), smp.most.Load())
	for _, w := range ws {
		require.Zero(t, w.Stats().LostLeases)
	}
}

// TestLimitSlotsGivenBack: every way a job leaves a consumer gives its
// slot back: success, a retry, the dead letters, and the drain's put-back
// of a job whose handler was still running.
func TestLimitSlotsGivenBack(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "lim-back", Config{})
	ctx := context.Background()
	release := make(chan struct{})
	started := make(chan string, 10)
	h := func(ctx context.Context, j *Job) error {
		started <- string(j.Payload)
		switch string(j.Payload) {
		case "fail":
			if j.Attempt == 1 {
				return errors.New("once")
			}
			return nil
		case "dead":
			return Permanent(errors.New("never"))
		case "hold":
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	g := group(t)
	w := startWorker(t, g, q, h, WorkerConfig{Concurrency: 4, RetryBase: time.Millisecond, RetryMax: time.Millisecond, Limit: Limit{Concurrency: 2}})
	inFlight := func() int64 {
		n, err := q.LimitInFlight(ctx)
		require.NoError(t, err)
		return n
	}
	for _, pl := range []string{"ok", "fail", "dead"} {
		_, err := q.Enqueue(ctx, []byte(pl))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 10*time.Second, "done, retried and dead", func() bool {
		s := w.Stats()
		return s.Processed == 2 && s.Dead == 1 && s.Retried == 1
	})
	// Processed counts a run when it ends, before its outcome is written.
	testutil.Eventually(t, 5*time.Second, "every slot back", func() bool { return inFlight() == 0 })
	_, err := q.Enqueue(ctx, []byte("hold"))
	require.NoError(t, err)
	recv(t, started, 5*time.Second, "a job")
	for len(started) > 0 {
		<-started
	}
	testutil.Eventually(t, 5*time.Second, "the held job's slot", func() bool { return inFlight() == 1 })
	closeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.NoError(t, g.Close(closeCtx))
	require.Zero(t, inFlight(), "the drain gave the slot back with the job")
	n, err := p.Client().LLen(ctx, q.k.ready).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the job is back in the ready list")
	close(release)
}

// TestLimitRate: a queue limited to 1 job per 700ms runs its jobs one per
// interval, each on its first attempt (a job the rate forbids waits, it is
// not retried); its fetcher sleeps on one timer per interval, not a poll
// (the take scripts Redis ran are counted: about one per job); and another
// queue of the same consumer is not held up by it.
func TestLimitRate(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	qa := mustQueue(t, p, "lim-rate", Config{})
	qb := mustQueue(t, p, "lim-free", Config{})
	const jobs, interval = 4, 700 * time.Millisecond
	var mu sync.Mutex
	var attempts []int
	var doneA, doneB atomic.Int64
	g := group(t)
	wa := startWorker(t, g, qa, func(_ context.Context, j *Job) error {
		mu.Lock()
		attempts = append(attempts, j.Attempt)
		mu.Unlock()
		doneA.Add(1)
		return nil
	}, WorkerConfig{Concurrency: 4, Limit: Limit{Rate: 1, Per: interval}})
	startWorker(t, g, qb, func(context.Context, *Job) error { doneB.Add(1); return nil }, WorkerConfig{})
	before, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	for range jobs {
		_, err := qa.Enqueue(ctx, []byte("a"))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 5*time.Second, "the first job", func() bool { return doneA.Load() == 1 })
	testutil.Eventually(t, 5*time.Second, "the fetcher sleeping to the next allowed instant", func() bool {
		return wa.Stats().FetcherState == "waiting: the queue's rate limit"
	})
	for range 20 {
		_, err := qb.Enqueue(ctx, []byte("b"))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 5*time.Second, "the other queue's jobs", func() bool { return doneB.Load() == 20 })
	require.Less(t, doneA.Load(), int64(jobs), "the other queue ran while the limited one waited for its rate")
	testutil.Eventually(t, 10*time.Second, "every limited job", func() bool { return doneA.Load() == jobs })
	after, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	mu.Lock()
	require.Equal(t, []int{1, 1, 1, 1}, attempts, "no attempt spent waiting for the rate")
	mu.Unlock()
	// Scripts: the enqueues (jobs + 20), the takes of the free queue (at
	// most one per job), and the limited takes: one that admits and one
	// that finds the rate closed per job, give or take a wake-up.
	scripts := after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"]
	t.Logf("scripts run: %d for %d+20 jobs", scripts, jobs)
	require.LessOrEqual(t, scripts, int64(jobs+20+20+3*jobs+4), "one timer per interval, not a poll")
}

// TestLimitSlotsOfDeadAndPreviousLives: a consumer that died holding slots
// gets them given back by its sweep (its jobs run again, within the
// limit), and a consumer restarted under its stable ID gives back the
// slots of its previous life at its first reconcile; slots of a live
// consumer are left alone.
func TestLimitSlotsOfDeadAndPreviousLives(t *testing.T) {
	for _, c := range []struct {
		name string
		np   newPoolFunc
	}{{"miniredis", miniPool}, {"server", serverPool}} {
		t.Run(c.name, func(t *testing.T) {
			p := c.np(t, pool.Config{})
			ctx := context.Background()
			q := mustQueue(t, p, "lim-dead", Config{})
			rdb := p.Client()
			job := func(id string) string {
				e := envelope{id: id, maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte(id)}
				return string(e.encode())
			}
			slot := func(consumer, token, elem string) string { return slotPrefix(consumer, token) + "\x00" + elem }
			// ghost died holding a job and a slot, under token t1.
			ghostJob := job("ghost-job")
			require.NoError(t, rdb.LPush(ctx, q.k.proc("ghost"), ghostJob).Err())
			require.NoError(t, rdb.SAdd(ctx, q.k.consumers, "ghost").Err())
			require.NoError(t, rdb.HSet(ctx, q.k.incarnations, "ghost", "t1").Err())
			require.NoError(t, rdb.ZAdd(ctx, heartbeatKey("bq"), redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "ghost"}).Err())
			// stable's previous life held a slot (its job was acked, the
			// release lost with the process); alive holds one and lives on.
			alive := slot("alive", "t9", job("alive-job"))
			require.NoError(t, rdb.ZAdd(ctx, q.k.limitHeld(),
				redis.Z{Member: slot("ghost", "t1", ghostJob)},
				redis.Z{Member: slot("stable", "old", job("gone"))},
				redis.Z{Member: alive},
			).Err())
			ran := make(chan string, 4)
			g := group(t)
			startWorker(t, g, q, func(_ context.Context, j *Job) error { ran <- j.ID; return nil },
				WorkerConfig{Limit: Limit{Concurrency: 2}},
				ConsumerConfig{ConsumerID: "stable", HeartbeatInterval: 100 * time.Millisecond})
			require.Equal(t, "ghost-job", recv(t, ran, 10*time.Second, "the dead consumer's job, run again"))
			testutil.Eventually(t, 5*time.Second, "only the live consumer's slot left", func() bool {
				held, err := rdb.ZRange(ctx, q.k.limitHeld(), 0, -1).Result()
				return err == nil && len(held) == 1 && held[0] == alive
			})
		})
	}
}

// TestLimitReleaseFailsIsRetried: an outcome whose slot could not be given
// back (here the set of slots is a foreign key of the wrong type) is
// written again, with its release, until both are: the job counts as done
// once, and no lease is reported lost.
func TestLimitReleaseFailsIsRetried(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "lim-relfail", Config{})
	ctx := context.Background()
	rdb := p.Client()
	proceed := make(chan struct{})
	g := group(t)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		select {
		case <-proceed:
		case <-ctx.Done():
		}
		return nil
	}, WorkerConfig{Limit: Limit{Concurrency: 1}})
	_, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	testutil.Eventually(t, 5*time.Second, "the job running", func() bool { return w.Stats().Busy == 1 })
	require.NoError(t, rdb.Set(ctx, q.k.limitHeld(), "foreign", 0).Err())
	close(proceed)
	testutil.Eventually(t, 5*time.Second, "the release failing", func() bool { return w.Stats().AckErrors > 0 })
	require.Zero(t, w.Stats().Processed-1, "the run counted once")
	require.NoError(t, rdb.Del(ctx, q.k.limitHeld()).Err())
	testutil.Eventually(t, 10*time.Second, "the outcome and release written", func() bool {
		n, err := rdb.LLen(ctx, q.k.proc(w.c.ID())).Result()
		return err == nil && n == 0 && w.Stats().InFlight == 0
	})
	require.Zero(t, w.Stats().LostLeases)
	require.EqualValues(t, 1, w.Stats().Processed)
}

// TestLimitRateInjectedClock: with the rate's clock frozen, a queue
// limited to 1 job an hour with a burst of 2 runs exactly 2 jobs, on their
// first attempt; the others wait in the ready list, and the fetcher sleeps
// to the instant the rate allows the next.
func TestLimitRateInjectedClock(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "lim-frozen", Config{})
	ctx := context.Background()
	var ran atomic.Int64
	g := group(t)
	w, err := NewWorker(consumerFor(t, g, q), q, func(_ context.Context, j *Job) error {
		if j.Attempt != 1 {
			return Permanent(fmt.Errorf("attempt %d", j.Attempt))
		}
		ran.Add(1)
		return nil
	}, WorkerConfig{Limit: Limit{Rate: 1, Per: time.Hour, Burst: 2}})
	require.NoError(t, err)
	frozen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w.limitNow = func() time.Time { return frozen }
	require.NoError(t, w.Start(g))
	for range 5 {
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 5*time.Second, "the burst run, the fetcher asleep", func() bool {
		return ran.Load() == 2 && w.Stats().FetcherState == "waiting: the queue's rate limit"
	})
	n, err := p.Client().LLen(ctx, q.k.ready).Result()
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "the others wait")
	require.Zero(t, w.Stats().Failed)
}
