package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// A heartbeat interval of 1ms would send 1,000 pipelines a second per
// process: NewConsumer refuses anything under MinHeartbeatInterval, naming
// the field (issue 13, also-fix list).
func TestHeartbeatIntervalHasAFloor(t *testing.T) {
	p := miniPool(t, pool.Config{})
	for _, d := range []time.Duration{time.Nanosecond, time.Millisecond, MinHeartbeatInterval - time.Millisecond} {
		_, err := NewConsumer(p, ConsumerConfig{HeartbeatInterval: d})
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.ErrorContains(t, err, "queue: invalid config: ConsumerConfig.HeartbeatInterval must be at least 100ms, got "+d.String())
	}
	_, err := NewConsumer(p, ConsumerConfig{HeartbeatInterval: MinHeartbeatInterval})
	require.NoError(t, err)
}

// slowHook makes every command and pipeline sent through a client take d
// longer, holding its connection meanwhile, as a Redis or a network
// answering slowly does. The delay does not end with the caller's context:
// a slow reply does not either.
type slowHook struct{ d time.Duration }

func (h slowHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h slowHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		time.Sleep(h.d) // the injected latency, not a wait for a condition
		return next(ctx, cmd)
	}
}

func (h slowHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		time.Sleep(h.d)
		return next(ctx, cmds)
	}
}

// slowSweepSetup starts, on a real server, a worker whose background lane
// answers latency late, with ghosts dead consumers holding one job each.
// The returned client is fast (no added latency).
func slowSweepSetup(t *testing.T, name string, latency time.Duration, ghosts int, wc WorkerConfig, cc ConsumerConfig) (*lifecycle.Group, *Queue, *Worker, redis.UniversalClient) {
	t.Helper()
	srv := redistest.Server(t)
	fast := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	slow := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	slow.Background().AddHook(slowHook{d: latency})
	q := mustQueue(t, slow, name, Config{})
	c := fast.Client()
	now := time.Now()
	for i := range ghosts {
		ghost(t, c, q, fmt.Sprintf("ghost-%02d", i), now.Add(-time.Minute+time.Duration(i)*time.Millisecond), fmt.Sprint("job-", i))
	}
	g := lifecycle.New()
	w := startWorker(t, g, q, func(context.Context, *Job) error { return nil }, wc, cc)
	return g, q, w, c
}

// Sweeping dead consumers costs several round trips each; with a slow
// Redis they used to run on the heartbeat's goroutine with no heartbeat in
// between, so a live process sweeping a few dead ones went past its own TTL
// and its running jobs were swept and run twice (issue 13 item 3). The
// heartbeat keeps its cadence whatever the sweeps cost.
func TestSlowSweepsDoNotStarveTheHeartbeat(t *testing.T) {
	const (
		latency  = 50 * time.Millisecond
		interval = 200 * time.Millisecond
		ttl      = 2 * time.Second
		ghosts   = 12 // ~6 round trips each: about 3.6s of sweeping
	)
	g, q, w, c := slowSweepSetup(t, "slowsweep", latency, ghosts, WorkerConfig{}, ConsumerConfig{HeartbeatInterval: interval, HeartbeatTTL: ttl})
	defer closeGroup(t, g)
	ctx := context.Background()
	id := w.Stats().ConsumerID
	var oldest time.Duration // the longest time since a heartbeat, as seen from outside
	lapsed := 0
	testutil.Eventually(t, 60*time.Second, "every dead consumer swept", func() bool {
		score, err := c.ZScore(ctx, heartbeatKey(q.cfg.Namespace), id).Result()
		require.NoError(t, err)
		deadline := time.UnixMilli(int64(score))
		oldest = max(oldest, time.Since(deadline.Add(-ttl)))
		if time.Now().After(deadline) {
			lapsed++
		}
		return w.Stats().Recovered == ghosts
	})
	t.Logf("longest time without a heartbeat while sweeping %d dead consumers at %s a round trip: %s (interval %s, TTL %s)",
		ghosts, latency, oldest.Round(time.Millisecond), interval, ttl)
	require.Zero(t, lapsed, "the live process's heartbeat expired while it swept (longest gap %s): others would sweep its running jobs", oldest)
	require.Zero(t, w.Stats().LostLeases)
}

// A Close that begins while sweeps run returns by its deadline: sweeps of
// other consumers stop at the next command instead of running on a context
// without cancel (issue 13 item 7).
func TestCloseStopsSweepsByTheDeadline(t *testing.T) {
	const latency = 50 * time.Millisecond
	g, _, w, _ := slowSweepSetup(t, "closesweep", latency, 40, WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 200 * time.Millisecond})
	testutil.Eventually(t, 30*time.Second, "sweeps under way", func() bool { return w.Stats().Recovered >= 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := g.Close(ctx)
	var stuck *lifecycle.StuckError
	if errors.As(err, &stuck) {
		t.Fatalf("tasks outlived the Close deadline: %v (recovered %d of 40 before it)", stuck, w.Stats().Recovered)
	}
	require.NoError(t, err)
}

func closeGroup(t *testing.T, g *lifecycle.Group) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, g.Close(ctx))
}

// pauseHook holds the first command named in pause that has key among its
// arguments until released, and then reports the first command naming key
// or also that completed (a reply other than NOSCRIPT): a sweep caught
// between two of its steps, and the step after.
type pauseHook struct {
	pause   []string
	key     string
	also    string
	paused  atomic.Bool
	after   atomic.Bool
	reached chan struct{}
	release chan struct{}
	next    chan struct{}
}

func newPauseHook(key, also string, pause ...string) *pauseHook {
	return &pauseHook{pause: pause, key: key, also: also,
		reached: make(chan struct{}), release: make(chan struct{}), next: make(chan struct{})}
}

func (h *pauseHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *pauseHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		held := h.maybePause(cmd)
		err := next(ctx, cmd)
		h.maybeNext(held, cmd)
		return err
	}
}

func (h *pauseHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		held := false
		for _, cmd := range cmds {
			held = h.maybePause(cmd) || held
		}
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			h.maybeNext(held, cmd)
		}
		return err
	}
}

func (h *pauseHook) maybePause(cmd redis.Cmder) bool {
	if !slices.Contains(h.pause, cmd.Name()) || !names(cmd, h.key) || !h.paused.CompareAndSwap(false, true) {
		return false
	}
	close(h.reached)
	select {
	case <-h.release:
	case <-time.After(30 * time.Second): // the test failed; let the worker go
	}
	return true
}

func (h *pauseHook) maybeNext(held bool, cmd redis.Cmder) {
	if held || !h.paused.Load() || redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") || !(names(cmd, h.key) || names(cmd, h.also)) {
		return
	}
	if h.after.CompareAndSwap(false, true) {
		close(h.next)
	}
}

// names reports whether cmd has s among its arguments.
func names(cmd redis.Cmder, s string) bool {
	for _, a := range cmd.Args() {
		if v, ok := a.(string); ok && v == s {
			return true
		}
	}
	return false
}

// A consumer with a stable ConsumerID that restarts while another process
// sweeps its previous life keeps the jobs it fetched since: the sweep had
// decided "dead" from a snapshot and moved the list without checking again,
// so a job the new incarnation was running went back to the ready list and
// would run twice (issue 13 item 6). The sweep is caught before it reads
// the list (the new incarnation fetches a new job meanwhile), and before it
// moves what it read (the new incarnation puts its previous life's job back
// and fetches that same job again).
func TestSweepDoesNotTakeJobsOfARestartedConsumer(t *testing.T) {
	for _, pauseAt := range []string{"read", "move"} {
		for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
			t.Run(pauseAt+"/"+name, func(t *testing.T) { testSweepFence(t, np, pauseAt) })
		}
	}
}

func testSweepFence(t *testing.T, np newPoolFunc, pauseAt string) {
	ctx := context.Background()
	pS := np(t, pool.Config{})
	addr := pS.Client().(*redis.Client).Options().Addr // a single server
	pN := mustPool(t, pool.Config{Addrs: []string{addr}})
	qS := mustQueue(t, pS, "fence", Config{})
	qN := mustQueue(t, pN, "fence", Config{})
	c := pN.Client()

	// "stable" died (its heartbeat expired), holding one job when the
	// sweep is caught before the move.
	proc := qS.k.proc("stable")
	require.NoError(t, c.SAdd(ctx, qS.k.consumers, "stable").Err())
	require.NoError(t, c.HSet(ctx, qS.k.incarnations, "stable", "previous-life").Err())
	require.NoError(t, c.ZAdd(ctx, heartbeatKey(qS.cfg.Namespace), redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "stable"}).Err())
	want := "mine"
	hook := newPauseHook(proc, "stable", "lrange")
	if pauseAt == "move" {
		want = "old"
		old := envelope{id: "old", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("old")}
		require.NoError(t, c.LPush(ctx, proc, old.encode()).Err())
		hook = newPauseHook(proc, "stable", "evalsha", "eval")
	}
	pS.Background().AddHook(hook)

	// The sweeper's one handler slot is kept busy, so that every job
	// below goes to the restarted consumer.
	releaseS, releaseN := make(chan struct{}), make(chan struct{})
	defer close(releaseS)
	busyS, startedN := make(chan string, 4), make(chan string, 4)
	gS := group(t)
	startWorker(t, gS, qS, func(ctx context.Context, j *Job) error {
		busyS <- string(j.Payload)
		select {
		case <-releaseS:
		case <-ctx.Done():
		}
		return nil
	}, WorkerConfig{Concurrency: 1, BlockTimeout: time.Second}, ConsumerConfig{ConsumerID: "sweeper"})
	await(t, hook.reached, "the sweep of the dead consumer to reach its "+pauseAt)
	_, err := qS.Enqueue(ctx, []byte("busy"))
	require.NoError(t, err)
	require.Equal(t, "busy", await(t, busyS, "the sweeper's handler to be busy"))

	// "stable" restarts while the sweep is held, and runs a job: a new
	// one, or its previous life's, which it put back and fetched again.
	gN := group(t)
	defer close(releaseN)
	wN := startWorker(t, gN, qN, func(ctx context.Context, j *Job) error {
		startedN <- string(j.Payload)
		select {
		case <-releaseN:
		case <-ctx.Done():
		}
		return nil
	}, WorkerConfig{Concurrency: 1, BlockTimeout: time.Second}, ConsumerConfig{ConsumerID: "stable"})
	if pauseAt == "read" {
		_, err = qN.Enqueue(ctx, []byte("mine"))
		require.NoError(t, err)
	}
	require.Equal(t, want, await(t, startedN, "the restarted consumer to run a job"))

	// The sweep goes on: it must leave the new incarnation's job alone.
	close(hook.release)
	await(t, hook.next, "the sweep's next step")
	held, err := c.LRange(ctx, proc, 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, held, 1, "the running job was taken from the restarted consumer")
	ready, err := c.LLen(ctx, qS.k.ready).Result()
	require.NoError(t, err)
	require.Zero(t, ready, "the running job is in the ready list again: it would run twice")
	require.Zero(t, wN.Stats().LostLeases)
}

// await receives from ch or fails the test after 10s.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// A dead consumer whose sweeps keep failing for over an hour is trimmed
// from the heartbeat set, the only place a running worker used to find it:
// its jobs were stranded until some worker restarted. The consumers set of
// its queue still names it, and the sweeper checks those sets again every
// heartbeatRetention/4 (issue 13, also-fix list).
func TestDeadConsumerTrimmedBeforeItsSweepIsRecovered(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			ctx := context.Background()
			var offset atomic.Int64 // the injected clock runs ahead of the wall clock by this
			now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
			q := mustQueue(t, p, "trimmed", Config{Now: now})
			c := p.Client()
			g := group(t)
			ran := make(chan string, 4)
			w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { ran <- j.ID; return nil },
				WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
			beats(t, c, q, w, 3) // the start-time check of the consumers set is done

			// A consumer dies holding a job, and every sweep of it fails
			// (here: another process holds the sweep lock).
			require.NoError(t, c.Set(ctx, q.k.sweepLock, "someone-else", time.Minute).Err())
			ghost(t, c, q, "ghost", time.Now().Add(-59*time.Minute), "stranded")
			require.NoError(t, c.SAdd(ctx, q.k.consumers, "ghost").Err())
			// Two hours later its heartbeat is trimmed.
			offset.Store(int64(2 * time.Hour))
			testutil.Eventually(t, 10*time.Second, "the dead consumer trimmed from the heartbeat set", func() bool {
				err := c.ZScore(ctx, heartbeatKey(q.cfg.Namespace), "ghost").Err()
				return errors.Is(err, redis.Nil)
			})
			require.NoError(t, c.Del(ctx, q.k.sweepLock).Err())
			select {
			case id := <-ran:
				require.Equal(t, "stranded", id)
			case <-time.After(5 * time.Second):
				t.Fatal("the trimmed dead consumer's job was never recovered")
			}
		})
	}
}
