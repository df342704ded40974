package queue

// Review of the Inspector, the outcome hooks and the last error (issue 18):
// each test here failed on the code as merged.

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
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

// Consumer IDs may contain '|' (check.Name allows it): the running state's
// cursor must still page past such a consumer's jobs.
func TestInspectorRunningCursorOfAConsumerIDWithABar(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "barred", Config{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, WorkerConfig{Concurrency: 3}, ConsumerConfig{ConsumerID: "pod|7"})
	for i := range 3 {
		_, err := q.Enqueue(ctx, []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	testutil.Eventually(t, testutil.Wait, "the consumer holds 3 jobs", func() bool { return w.Stats().Busy == 3 })
	got := allPages(t, mustInspector(t, p, ""), "barred", StateRunning, 2, nil)
	require.Len(t, got, 3)
	for _, j := range got {
		require.Equal(t, "pod|7", j.Consumer)
	}
}

// A cursor whose score is not a finite number is not a cursor of Jobs: it
// fails with ErrInvalidArgument, not with whatever Redis answers.
func TestInspectorCursorWithANonFiniteScore(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "odd", Config{})
	_, err := q.Enqueue(ctx, []byte("x"), Delay(time.Hour))
	require.NoError(t, err)
	in := mustInspector(t, p, "")
	for _, score := range []string{"NaN", "nan", "Inf", "-inf", "+Inf", "1e400"} {
		for _, st := range []JobState{StateDelayed, StateDead} {
			_, err := in.Jobs(ctx, "odd", st, encodeCursor(st, score, "x"), 10)
			require.ErrorIs(t, err, ErrInvalidArgument, "%s cursor with score %q", st, score)
		}
	}
}

// deadWithID writes a dead letter of a job with the given ID, as the
// workers do, at q's clock, and returns its dead letter ID.
func deadWithID(t testing.TB, q *Queue, id string, payload []byte) string {
	t.Helper()
	pr, err := q.prepare(payload, []EnqueueOption{ID(id)})
	require.NoError(t, err)
	ks, args := q.deadAddArgs(pr.elem, deadLetter{id: pr.id, reason: "boom", attempts: 1})
	require.NoError(t, deadScript.Run(context.Background(), q.p.Client(), ks, args...).Err())
	return pr.id
}

// A dead letter's handle names the dead letter the listing saw, not any
// later one that took the same ID: after the listed one was requeued and
// the ID died again (an ID option reused for a new job), a stale handle
// deletes nothing.
func TestInspectorStaleDeadHandleDeletesNoLaterDeadLetter(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			clock := testutil.NewClock()
			q := mustQueue(t, p, "reused", Config{Now: clock.Now})
			deadWithID(t, q, "order-1", []byte("first"))
			in := mustInspector(t, p, "")
			page, err := in.Jobs(ctx, "reused", StateDead, "", 10)
			require.NoError(t, err)
			require.Len(t, page.Jobs, 1)
			stale := page.Jobs[0].Handle

			// The listed dead letter is requeued (and runs); a new job
			// with the same ID dies later.
			n, err := in.Requeue(ctx, "reused", "order-1")
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.NoError(t, p.Client().Del(ctx, q.k.ready).Err())
			clock.Advance(time.Second)
			require.Equal(t, "order-1", deadWithID(t, q, "order-1", []byte("second")))

			err = in.Delete(ctx, "reused", stale)
			require.ErrorIs(t, err, ErrJobGone, "the stale handle names the first dead letter, which is gone")
			dead, err := q.Dead(ctx, 0, 10)
			require.NoError(t, err)
			require.Len(t, dead, 1, "the later dead letter is still there")
			require.Equal(t, "second", string(dead[0].Payload))

			// A fresh listing's handle deletes it.
			page, err = in.Jobs(ctx, "reused", StateDead, "", 10)
			require.NoError(t, err)
			require.NoError(t, in.Delete(ctx, "reused", page.Jobs[0].Handle))
		})
	}
}

// A listing script reads at most about a page's byte budget of elements:
// with elements of 1 MiB (Durable jobs keep their payload inline whatever
// its size), one page of ready or delayed jobs must not pull 32 of them
// into Lua to return 4. Measured on a real server by the Lua VM's memory
// right after the call (the script cache flushed before, so nothing else
// is in it; Redis collects Lua garbage only every 50 scripts).
func TestInspectorPageReadsAtMostItsBudgetInLua(t *testing.T) {
	ctx := context.Background()
	p := serverPool(t, pool.Config{})
	c := p.Client()
	q := mustQueue(t, p, "heavy", Config{MaxPayload: 2 << 20})
	const n, size = 40, 1 << 20
	var elems []any
	for i := range n {
		e := envelope{id: "big" + strconv.Itoa(i), maxAttempts: 1, enqueuedAt: time.Now(), payload: bytes.Repeat([]byte{'x'}, size)}
		elems = append(elems, e.encode())
	}
	require.NoError(t, c.LPush(ctx, q.k.ready, elems...).Err())
	for i, e := range elems {
		require.NoError(t, c.ZAdd(ctx, q.k.delayed, redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli() + int64(i)), Member: e}).Err())
	}
	luaMem := func() int64 {
		info, err := c.Info(ctx, "memory").Result()
		require.NoError(t, err)
		m := regexp.MustCompile(`(?m)^used_memory_lua:(\d+)`).FindStringSubmatch(info)
		require.NotNil(t, m, "used_memory_lua in INFO memory")
		v, err := strconv.ParseInt(strings.TrimSpace(m[1]), 10, 64)
		require.NoError(t, err)
		return v
	}
	in := mustInspector(t, p, "")
	for _, st := range []JobState{StateReady, StateDelayed} {
		require.NoError(t, c.ScriptFlush(ctx).Err())
		before := luaMem()
		page, err := in.Jobs(ctx, "heavy", st, "", MaxPageLimit)
		require.NoError(t, err)
		used := luaMem() - before
		t.Logf("%s: %d jobs in the page, Lua memory grew by %.1f MiB", st, len(page.Jobs), float64(used)/(1<<20))
		require.LessOrEqual(t, len(page.Jobs), maxCallBytes/size+1)
		require.Less(t, used, int64(3*maxCallBytes), "%s: Lua read far more than the page's budget", st)
	}
}

// OnDead is called for every job sent to the dead letters without running,
// MaxDeliveries included: also when the worker's start finds the job in
// its previous life's processing list (a stable ConsumerID whose process
// crashed running it once too often), which reconcile dead-letters
// without going through the acker.
func TestOnDeadForAJobItsPreviousLifeHeldTooOften(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "crashy", Config{})
	killer := envelope{id: "killer", maxAttempts: 3, attempt: 1, deliveries: DefaultMaxDeliveries, enqueuedAt: time.Now(), payload: []byte("k")}
	require.NoError(t, p.Client().LPush(ctx, q.k.proc("pod-0"), killer.encode()).Err())
	require.NoError(t, p.Client().Set(ctx, q.k.lastErr("killer"), "oom", time.Hour).Err())
	got := make(chan Outcome, 1)
	g := group(t)
	w := startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{
		OnDead: func(o Outcome) { got <- o },
	}, ConsumerConfig{ConsumerID: "pod-0"})
	testutil.Eventually(t, testutil.Wait, "the job is dead", func() bool { return w.Stats().Dead == 1 })
	o := recv(t, got, testutil.Wait, "OnDead of the job its previous life held")
	require.Equal(t, "killer", o.Job.ID)
	require.Equal(t, "crashy", o.Job.Queue)
	require.Zero(t, o.Ran)
	require.Contains(t, o.Reason, "MaxDeliveries")
	require.ErrorContains(t, o.Err, "MaxDeliveries")
	n, err := p.Client().Exists(ctx, q.k.lastErr("killer")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "its last error goes with its death, as on the acker's path")
}

// A delayed job's handle with a score that is not finite is malformed.
func TestInspectorDeleteHandleWithANonFiniteScore(t *testing.T) {
	p := miniPool(t, pool.Config{})
	in := mustInspector(t, p, "")
	for _, score := range []string{"NaN", "-Inf", "+inf"} {
		err := in.Delete(context.Background(), "odd", encodeHandle(StateDelayed, score, "bq1|x|"))
		require.ErrorIs(t, err, ErrInvalidArgument, score)
	}
}

// A dead handle without its time of death, or with a bad one, is malformed.
func TestInspectorMalformedDeadHandles(t *testing.T) {
	p := miniPool(t, pool.Config{})
	in := mustInspector(t, p, "")
	for _, h := range []string{encodeHandle(StateDead, "order-1"), encodeHandle(StateDead, "NaN", "order-1"), encodeHandle(StateDead, "12", "")} {
		require.ErrorIs(t, in.Delete(context.Background(), "odd", h), ErrInvalidArgument, h)
	}
}

// The registry costs nothing per job on a real server either, counted by
// the server (INFO commandstats, which also counts the commands scripts
// run): after the first enqueue of each kind, 300 enqueues (plain,
// delayed, with an ID) are 100 LPUSHes and 200 EVALSHAs, and no EVAL (the
// registry's write) runs.
func TestRegistryCostsNothingPerJobOnAServer(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "counted", Config{})
	kinds := [][]EnqueueOption{nil, {Delay(time.Hour)}, nil}
	for i, opts := range kinds {
		_, err := q.Enqueue(ctx, []byte("warm"), append(opts, ID("warm"+strconv.Itoa(i)))...)
		require.NoError(t, err)
	}
	_, err := q.Enqueue(ctx, []byte("warm")) // loads pushScript
	require.NoError(t, err)
	_, err = srv.Do(ctx, "CONFIG", "RESETSTAT")
	require.NoError(t, err)
	for i := range 100 {
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("x"), Delay(time.Hour))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("x"), ID("j"+strconv.Itoa(i)))
		require.NoError(t, err)
	}
	stats, err := srv.Do(ctx, "INFO", "commandstats")
	require.NoError(t, err)
	calls := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^cmdstat_([a-z|]+):calls=(\d+)`).FindAllStringSubmatch(stats, -1) {
		calls[m[1]], _ = strconv.Atoi(m[2])
	}
	t.Logf("server command counts: %v", calls)
	require.Zero(t, calls["eval"], "no registry write after the first enqueue")
	require.Equal(t, 300, calls["evalsha"], "one script call per job (a plain job's LPUSH rings the doorbell in pushScript)")
	require.Equal(t, 200, calls["lpush"], "one LPUSH inside each plain job's and each ID job's script")
	for _, c := range []string{"hset", "hscan", "zrangebylex", "expire", "pexpire"} {
		require.Zero(t, calls[c], c)
	}
}

// Delete racing the workers: jobs are fetched, run, retried and promoted
// while their listings' handles are deleted. A job Delete reports deleted
// never runs after it, and a job is never both deleted and done; every
// job ends exactly one way.
func TestInspectorDeleteRacingWorkers(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			g := group(t)
			q := mustQueue(t, p, "raced", Config{})
			var mu sync.Mutex
			ran := map[string]int{}
			deleted := map[string]bool{}
			var bad []string // jobs that ran after Delete reported them deleted
			const n = 400
			var all []string
			for i := range n {
				pay, opts := "plain", []EnqueueOption(nil)
				switch i % 4 {
				case 1:
					pay = "retry"
				case 2:
					opts = append(opts, Delay(time.Duration(i%20)*time.Millisecond))
				case 3:
					pay = strings.Repeat("big", 2000) // kept apart
				}
				id, err := q.Enqueue(ctx, []byte(pay), opts...)
				require.NoError(t, err)
				all = append(all, id)
			}
			// The listings first; the workers start as the deletes begin.
			in := mustInspector(t, p, "")
			var listed []ListedJob
			for _, st := range []JobState{StateReady, StateDelayed} {
				page, err := in.Jobs(ctx, "raced", st, "", MaxPageLimit)
				require.NoError(t, err)
				listed = append(listed, page.Jobs...)
			}
			require.Len(t, listed, n)
			startWorker(t, g, q, func(ctx context.Context, j *Job) error {
				mu.Lock()
				defer mu.Unlock()
				ran[j.ID]++
				if deleted[j.ID] {
					bad = append(bad, j.ID)
				}
				if j.Attempt == 0 && len(j.Payload) > 0 && j.Payload[0] == 'r' {
					return errors.New("retry me") // back through the delayed set
				}
				return nil
			}, WorkerConfig{Concurrency: 4, Backoff: func(int, error) time.Duration { return 5 * time.Millisecond }, OnDead: func(o Outcome) {
				t.Errorf("job %s died: %v", o.Job.ID, o.Err)
			}})
			for range 2 {
				for _, j := range listed {
					// Held across Delete: a run of this job cannot start
					// its handler in between (it would block on mu), so
					// "deleted" is recorded before any later run looks.
					mu.Lock()
					err := in.Delete(ctx, "raced", j.Handle)
					if err == nil {
						deleted[j.ID] = true
					}
					mu.Unlock()
					if err != nil {
						require.ErrorIs(t, err, ErrJobGone)
					}
				}
			}
			testutil.Eventually(t, 10*time.Second, "every job done or deleted", func() bool {
				s, err := q.Stats(ctx)
				require.NoError(t, err)
				return s.Ready == 0 && s.Delayed == 0 && s.InFlight == 0
			})
			mu.Lock()
			defer mu.Unlock()
			for _, id := range all {
				if deleted[id] {
					continue
				}
				require.Positive(t, ran[id], "job %s neither ran nor was deleted", id)
			}
			require.Empty(t, bad, "jobs ran after Delete reported them deleted")
			t.Logf("deleted %d of %d", len(deleted), n)
			left, err := p.Client().HLen(ctx, q.k.payloads).Result()
			require.NoError(t, err)
			require.Zero(t, left, "no payload kept apart is left behind")
		})
	}
}

// Across a NOSCRIPT resend (the script cache flushed while jobs ran), each
// outcome still calls its hook once, after Redis has it, and the last
// error is written with the retry.
func TestOutcomeHooksOnceAcrossNoscript(t *testing.T) {
	ctx := context.Background()
	p := serverPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "flushed", Config{})
	cfg, events := recordingHooks(p, q, "flusher")
	cfg.Backoff = func(int, error) time.Duration { return time.Millisecond }
	cfg.Concurrency = 2
	gate := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(gate) }) })
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		if j.Attempt == 1 { // Attempt counts from 1
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		if j.ID == "retried" && j.Attempt == 1 {
			return errors.New("once more")
		}
		return nil
	}, cfg, ConsumerConfig{ConsumerID: "flusher"})
	for _, id := range []string{"done", "retried"} {
		_, err := q.Enqueue(ctx, []byte("x"), ID(id)) // an ID: acked by a script
		require.NoError(t, err)
	}
	testutil.Eventually(t, testutil.Wait, "both jobs running", func() bool {
		n, err := p.Client().LLen(ctx, q.k.proc("flusher")).Result()
		return err == nil && n == 2
	})
	require.NoError(t, p.Client().ConfigResetStat(ctx).Err())
	require.NoError(t, p.Client().ScriptFlush(ctx).Err())
	once.Do(func() { close(gate) })
	got := map[string][]string{}
	for range 3 {
		ev := recv(t, events, testutil.Wait, "a hook")
		require.NoError(t, ev.err)
		require.Zero(t, ev.inProc, "%s of %s: written before the hook", ev.kind, ev.out.Job.ID)
		if ev.kind == "retry" {
			require.Equal(t, "once more", ev.lastErr)
		}
		got[ev.out.Job.ID] = append(got[ev.out.Job.ID], ev.kind)
	}
	require.Equal(t, map[string][]string{"done": {"done"}, "retried": {"retry", "done"}}, got)
	stats, err := p.Client().Info(ctx, "commandstats").Result()
	require.NoError(t, err)
	require.Contains(t, stats, "cmdstat_script|load:", "the acks were refused with NOSCRIPT and resent")
	select {
	case ev := <-events:
		t.Fatalf("a hook ran once more: %s of %s", ev.kind, ev.out.Job.ID)
	case <-time.After(50 * time.Millisecond):
	}
}

// Delayed pages stay stable while jobs leave the set, the cursor's own job
// included: between pages the last listed job and jobs on both sides of
// the cursor (many of one due time) are deleted or promoted; every job
// that stays is listed exactly once.
func TestInspectorDelayedPagesStableWhileJobsLeave(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			clock := testutil.NewClock()
			q := mustQueue(t, p, "leaving", Config{Now: clock.Now, MaxBatch: 10_000})
			var all []string
			for b := range 3 {
				pays := make([][]byte, 300)
				for i := range pays {
					pays[i] = []byte(strings.Repeat("|", i%7) + strconv.Itoa(i)) // '|' in payloads
				}
				ids, err := q.EnqueueBatch(ctx, pays, Delay(time.Duration(1+b)*time.Hour))
				require.NoError(t, err)
				all = append(all, ids...)
			}
			in := mustInspector(t, p, "")
			gone := map[string]bool{}
			var got []ListedJob
			cur := ""
			for page := 0; ; page++ {
				require.Less(t, page, 1000)
				pg, err := in.Jobs(ctx, "leaving", StateDelayed, cur, 37)
				require.NoError(t, err)
				got = append(got, pg.Jobs...)
				if pg.Next == "" {
					break
				}
				cur = pg.Next
				// The cursor's own job leaves, then the earliest job (before
				// the cursor) and the first one after it.
				del := func(j ListedJob) {
					if !gone[j.ID] {
						require.NoError(t, in.Delete(ctx, "leaving", j.Handle))
						gone[j.ID] = true
					}
				}
				del(pg.Jobs[len(pg.Jobs)-1])
				for _, from := range []string{"", cur} {
					e, err := in.Jobs(ctx, "leaving", StateDelayed, from, 1)
					require.NoError(t, err)
					if len(e.Jobs) > 0 {
						del(e.Jobs[0])
					}
				}
			}
			seen := map[string]int{}
			for _, j := range got {
				seen[j.ID]++
			}
			for id, n := range seen {
				require.Equal(t, 1, n, "job %s listed %d times", id, n)
			}
			for _, id := range all {
				if !gone[id] {
					require.Equal(t, 1, seen[id], "job %s stayed and is listed once", id)
				}
			}
		})
	}
}

// A producer waiting for a job (Queue.Wait) is woken when the worker's
// start dead-letters it because its previous life held it too often, as
// it is when the fetcher dead-letters a job.
func TestWaitForAJobItsPreviousLifeHeldTooOften(t *testing.T) {
	ctx := context.Background()
	pr := newCtlProcess(t, miniPools(t), "crashy", Config{})
	killer := envelope{id: "killer", maxAttempts: 3, deliveries: DefaultMaxDeliveries, enqueuedAt: time.Now(), payload: []byte("k")}
	require.NoError(t, pr.p.Client().LPush(ctx, pr.q.k.proc("pod-0"), killer.encode()).Err())
	waited := make(chan error, 1)
	go func() { _, err := pr.q.Wait(ctx, "killer"); waited <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return pr.q.room.Load().results.count() == 1 })
	c, err := NewConsumer(pr.p, ConsumerConfig{ConsumerID: "pod-0"})
	require.NoError(t, err)
	w, err := NewWorker(c, pr.q, func(context.Context, *Job) error { return nil }, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Start(pr.g))
	err = testutil.Recv(t, waited, "Wait of the job dead-lettered at the worker's start")
	require.ErrorIs(t, err, ErrJobDead)
	require.ErrorContains(t, err, "MaxDeliveries")
}
