package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// --- configuration and input ------------------------------------------------

func TestNewValidates(t *testing.T) {
	p := miniPool(t, pool.Config{})
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"", Config{}, "queue: invalid config: name must not be empty"},
		{"a{b}", Config{}, "must not contain '{' or '}'"},
		{"a b", Config{}, "must not contain spaces"},
		{"ok", Config{MaxPayload: -1}, "Config.MaxPayload must not be negative, got -1"},
		{"ok", Config{DeadLetterMaxAge: -time.Second}, "Config.DeadLetterMaxAge must not be negative"},
		{"ok", Config{Namespace: "x}"}, "Config.Namespace"},
	} {
		_, err := New(p, c.name, c.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.ErrorContains(t, err, c.want)
	}
	_, err := New(nil, "x", Config{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "nil pool")

	q := mustQueue(t, p, "ok", Config{})
	h := func(context.Context, *Job) error { return nil }
	for _, c := range []struct {
		cfg  WorkerConfig
		want string
	}{
		{WorkerConfig{Concurrency: -1}, "WorkerConfig.Concurrency must be in 1..10000, got -1"},
		{WorkerConfig{BlockTimeout: -time.Second}, "WorkerConfig.BlockTimeout must not be negative"},
		{WorkerConfig{BlockTimeout: time.Millisecond}, "BlockTimeout must be a whole number of seconds, at least 1s, got 1ms"},
		{WorkerConfig{BlockTimeout: 1500 * time.Millisecond}, "got 1.5s"},
		{WorkerConfig{RetryBase: time.Minute, RetryMax: time.Second}, "RetryMax (1s) must not be below RetryBase (1m0s)"},
		{WorkerConfig{MaxDeliveries: -2}, "MaxDeliveries must not be negative"},
		{WorkerConfig{JobTimeout: -1}, "JobTimeout must not be negative"},
	} {
		_, err := newWorker(t, q, h, c.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.ErrorContains(t, err, c.want)
	}
	_, err = newWorker(t, q, nil, WorkerConfig{})
	require.ErrorContains(t, err, "nil handler")

	for _, c := range []struct {
		cfg  ConsumerConfig
		want string
	}{
		{ConsumerConfig{HeartbeatInterval: time.Second, HeartbeatTTL: time.Second}, "HeartbeatTTL (1s) must be longer than HeartbeatInterval (1s)"},
		{ConsumerConfig{HeartbeatInterval: -time.Second}, "ConsumerConfig.HeartbeatInterval must not be negative"},
		{ConsumerConfig{ConsumerID: "a b"}, "ConsumerConfig.ConsumerID"},
		{ConsumerConfig{Namespace: "a:b"}, "ConsumerConfig.Namespace \"a:b\" must not contain ':'"},
	} {
		_, err := NewConsumer(p, c.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.ErrorContains(t, err, c.want)
	}
	_, err = NewConsumer(nil, ConsumerConfig{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "nil pool")
}

func TestEnqueueRejectsBadInputAndWritesNothing(t *testing.T) {
	m := redistest.Mini(t)
	p := mustPool(t, pool.Config{Addrs: []string{m.Addr()}})
	q := mustQueue(t, p, "in", Config{MaxPayload: 10, MaxBatch: 3, MaxBatchBytes: 200})
	ctx := context.Background()

	_, err := q.Enqueue(ctx, make([]byte, 11))
	require.ErrorIs(t, err, ErrPayloadTooLarge)
	require.ErrorContains(t, err, `queue "in": enqueue: queue: payload too large: 11 bytes, the limit is 10 (Config.MaxPayload)`)
	for _, opt := range []EnqueueOption{MaxAttempts(0), Timeout(0), Timeout(time.Microsecond), ID(""), ID("a|b"), ID(strings.Repeat("x", 201))} {
		_, err := q.Enqueue(ctx, []byte("x"), opt)
		require.Error(t, err)
	}
	_, err = q.EnqueueBatch(ctx, [][]byte{{1}, {2}, {3}, {4}})
	require.ErrorIs(t, err, ErrBatchTooLarge)
	_, err = q.EnqueueBatch(ctx, [][]byte{{1}, make([]byte, 11)})
	require.ErrorIs(t, err, ErrPayloadTooLarge)
	require.ErrorContains(t, err, "job 1")
	_, err = q.EnqueueBatch(ctx, [][]byte{{1}}, ID("same"))
	require.ErrorContains(t, err, "the ID option cannot apply to a batch")
	_, err = q.EnqueueBatch(ctx, [][]byte{make([]byte, 10), make([]byte, 10), make([]byte, 10)}, Delay(time.Hour), MaxAttempts(99), Timeout(time.Hour))
	require.ErrorIs(t, err, ErrBatchTooLarge, "over MaxBatchBytes")

	require.Empty(t, m.Keys(), "nothing was written")
}

// --- the job life cycle ----------------------------------------------------

func TestJobsRunExactlyOnce(t *testing.T) {
	testJobsRunExactlyOnce(t, miniPool)
}

func TestJobsRunExactlyOnce_Server(t *testing.T) {
	testJobsRunExactlyOnce(t, serverPool)
}

func testJobsRunExactlyOnce(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "once", Config{})
	var mu sync.Mutex
	runs := map[string]int{}
	var maxBusy, busy atomic.Int64
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		if n := busy.Add(1); n > maxBusy.Load() {
			maxBusy.Store(n)
		}
		defer busy.Add(-1)
		mu.Lock()
		runs[string(j.Payload)]++
		mu.Unlock()
		assert.Equal(t, 1, j.Attempt)
		assert.Equal(t, "once", j.Queue)
		return nil
	}, WorkerConfig{Concurrency: 5})
	ctx := context.Background()
	var ids []string
	for i := range 200 {
		id, err := q.Enqueue(ctx, []byte(fmt.Sprint(i)))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	batch := make([][]byte, 300)
	for i := range batch {
		batch[i] = []byte(fmt.Sprint(200 + i))
	}
	bids, err := q.EnqueueBatch(ctx, batch)
	require.NoError(t, err)
	require.Len(t, bids, 300)
	ids = append(ids, bids...)
	uniq := map[string]bool{}
	for _, id := range ids {
		uniq[id] = true
	}
	require.Len(t, uniq, 500, "job IDs are unique")

	testutil.Eventually(t, 20*time.Second, "500 jobs", func() bool { return w.Stats().Processed == 500 })
	mu.Lock()
	require.Len(t, runs, 500)
	for k, n := range runs {
		require.Equal(t, 1, n, "job %s ran %d times", k, n)
	}
	mu.Unlock()
	require.LessOrEqual(t, maxBusy.Load(), int64(5))
	testutil.Eventually(t, 5*time.Second, "acks written", func() bool { return w.Stats().InFlight == 0 })
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, s.Ready)
	require.Zero(t, s.InFlight)
	require.Zero(t, s.Dead)
	require.Equal(t, 1, s.Consumers)
	require.Equal(t, uint64(500), s.Local.Processed)
}

func TestRetriesThenSucceeds(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "retry", Config{})
	var attempts []int
	var mu sync.Mutex
	done := make(chan struct{})
	var failures atomic.Int32
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		mu.Lock()
		attempts = append(attempts, j.Attempt)
		mu.Unlock()
		if j.Attempt < 3 {
			return errors.New("flaky")
		}
		close(done)
		return nil
	}, WorkerConfig{
		Backoff: func(attempt int, err error) time.Duration { return 5 * time.Millisecond },
		OnError: func(j *Job, err error) { failures.Add(1) },
	})
	_, err := q.Enqueue(context.Background(), []byte("x"), MaxAttempts(3))
	require.NoError(t, err)
	testutil.Recv(t, done, "the third attempt")
	mu.Lock()
	require.Equal(t, []int{1, 2, 3}, attempts)
	mu.Unlock()
	require.Equal(t, int32(2), failures.Load())
	testutil.Eventually(t, 5*time.Second, "counters", func() bool {
		s := w.Stats()
		return s.Processed == 1 && s.Failed == 2 && s.Retried == 2
	})
}

func TestDefaultRetryDelayIsExponentialWithJitter(t *testing.T) {
	for attempt, ceiling := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 20: time.Minute} {
		for range 100 {
			d := retryDelay(attempt, time.Second, time.Minute)
			require.Positive(t, d)
			require.LessOrEqual(t, d, ceiling+time.Millisecond)
		}
	}
}

func TestFailuresEndInDeadLetters(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "dlq", Config{})
	ctx := context.Background()
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		switch string(j.Payload) {
		case "permanent":
			return Permanent(errors.New("bad input"))
		case "panic":
			panic("boom")
		case "ok":
			return nil
		}
		return errors.New("still failing")
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})

	permID, err := q.Enqueue(ctx, []byte("permanent"))
	require.NoError(t, err)
	failID, err := q.Enqueue(ctx, []byte("fails"), MaxAttempts(3))
	require.NoError(t, err)
	panicID, err := q.Enqueue(ctx, []byte("panic"), MaxAttempts(2))
	require.NoError(t, err)
	okID, err := q.Enqueue(ctx, []byte("ok"))
	require.NoError(t, err)

	testutil.Eventually(t, 10*time.Second, "three dead letters", func() bool { return w.Stats().Dead == 3 && w.Stats().Processed == 1 })
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 3)
	byID := map[string]DeadJob{}
	for _, d := range dead {
		byID[d.ID] = d
	}
	require.Contains(t, byID[permID].Reason, "attempt 1 of 5 failed permanently: bad input")
	require.Equal(t, 1, byID[permID].Attempts)
	require.Contains(t, byID[failID].Reason, "attempt 3 of 3 failed: still failing")
	require.Equal(t, 3, byID[failID].Attempts)
	require.Equal(t, []byte("fails"), byID[failID].Payload)
	require.Contains(t, byID[panicID].Reason, "handler panicked: boom")
	require.Contains(t, byID[panicID].Reason, "goroutine", "the stack is in the reason")
	require.NotContains(t, byID, okID)
	require.Equal(t, uint64(2), w.Stats().Panics)

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), s.Dead)

	// Requeue gives a fresh set of attempts; the unknown ID is reported.
	n, err := q.Requeue(ctx, permID, "no-such-id")
	require.Equal(t, 1, n)
	require.ErrorIs(t, err, ErrNotFound)
	testutil.Eventually(t, 10*time.Second, "requeued job dead again", func() bool { return w.Stats().Dead == 4 })

	purged, err := q.Purge(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, purged)
	dead, err = q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Empty(t, dead)
	_, err = q.Dead(ctx, -1, 10)
	require.ErrorContains(t, err, "offset must be >= 0")
}

func TestDeadLettersAreTrimmed(t *testing.T) {
	m := redistest.Mini(t)
	p := mustPool(t, pool.Config{Addrs: []string{m.Addr()}})
	clock := testutil.NewClock()
	q := mustQueue(t, p, "trim", Config{DeadLetterMax: 5, DeadLetterMaxAge: time.Hour, Now: clock.Now})
	ctx := context.Background()
	add := func(id string) {
		ks, args := q.deadAddArgs([]byte("bq1|"+id+"|0|1|0|0|0||p"), deadLetter{id: id, reason: "r", attempts: 1})
		require.NoError(t, deadScript.Run(ctx, p.Client(), ks, args...).Err())
	}
	for i := range 8 {
		add(fmt.Sprint("old-", i))
	}
	dead, err := q.Dead(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, dead, 5, "count bound")
	clock.Advance(2 * time.Hour)
	add("new")
	dead, err = q.Dead(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, dead, 1, "age bound")
	require.Equal(t, "new", dead[0].ID)
	n, err := p.Client().HLen(ctx, q.k.deadData).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "records are trimmed with their index")
}

func TestMalformedElementGoesToDeadLetters(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "junk", Config{})
	ctx := context.Background()
	var ran atomic.Int32
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { ran.Add(1); return nil }, WorkerConfig{})
	require.NoError(t, p.Client().LPush(ctx, q.k.ready, "not a job", "bq1|id|x|1|0|0|0||p").Err())
	_, err := q.Enqueue(ctx, []byte("fine"))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "two malformed dead, one job run", func() bool {
		s := w.Stats()
		return s.Malformed == 2 && s.Dead == 2 && ran.Load() == 1
	})
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 2)
	for _, d := range dead {
		require.True(t, d.Malformed)
		require.Contains(t, d.Reason, "malformed job")
	}
	n, err := q.Requeue(ctx, dead[0].ID)
	require.Zero(t, n)
	require.ErrorContains(t, err, "malformed")
}

func TestJobTimeoutCancelsHandler(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "timeout", Config{})
	got := make(chan error, 2)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		<-ctx.Done()
		got <- ctx.Err()
		return ctx.Err()
	}, WorkerConfig{JobTimeout: time.Hour})
	_, err := q.Enqueue(context.Background(), []byte("x"), Timeout(20*time.Millisecond), MaxAttempts(1))
	require.NoError(t, err)
	require.ErrorIs(t, testutil.Recv(t, got, "the handler's cancellation"), context.DeadlineExceeded, "the job's own timeout wins over JobTimeout")
}

func TestIDMakesEnqueueIdempotent(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "idem", Config{})
	ctx := context.Background()
	id, err := q.Enqueue(ctx, []byte("a"), ID("order-42"))
	require.NoError(t, err)
	require.Equal(t, "order-42", id)
	id, err = q.Enqueue(ctx, []byte("b"), ID("order-42"))
	require.ErrorIs(t, err, ErrDuplicate)
	require.Equal(t, "order-42", id)
	_, err = q.Enqueue(ctx, []byte("c"), ID("order-42"), Delay(time.Hour))
	require.ErrorIs(t, err, ErrDuplicate, "delayed or not, the ID is taken")
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), s.Ready)
	require.Zero(t, s.Delayed)

	g := group(t)
	done := make(chan string, 1)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { done <- string(j.Payload); return nil }, WorkerConfig{})
	require.Equal(t, "a", testutil.Recv(t, done, "job a"))
	testutil.Eventually(t, 5*time.Second, "ack", func() bool { return w.Stats().InFlight == 0 })
	_, err = q.Enqueue(ctx, []byte("d"), ID("order-42"))
	require.NoError(t, err, "the ID is free once the job is done")
	require.Equal(t, "d", testutil.Recv(t, done, "job d"))
}

func TestDelayedJobsRunAtTheirTime(t *testing.T) {
	testDelayedJobsRunAtTheirTime(t, miniPool)
}

func TestDelayedJobsRunAtTheirTime_Server(t *testing.T) {
	testDelayedJobsRunAtTheirTime(t, serverPool)
}

func testDelayedJobsRunAtTheirTime(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "later", Config{})
	ctx := context.Background()
	type run struct {
		payload string
		at      time.Time
	}
	runs := make(chan run, 10)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		runs <- run{string(j.Payload), time.Now()}
		return nil
	}, WorkerConfig{})
	// "now" first: enqueued after the others, it came second whenever the
	// two enqueues before it took 100ms (a loaded machine, a cluster).
	_, err := q.Enqueue(ctx, []byte("now"), Delay(-time.Second))
	require.NoError(t, err)
	start := time.Now()
	_, err = q.Enqueue(ctx, []byte("200ms"), Delay(200*time.Millisecond))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("100ms"), At(start.Add(100*time.Millisecond)))
	require.NoError(t, err)
	r := testutil.Recv(t, runs, "a run")
	require.Equal(t, "now", r.payload)
	r = testutil.Recv(t, runs, "a run")
	require.Equal(t, "100ms", r.payload)
	require.GreaterOrEqual(t, r.at.Sub(start), 100*time.Millisecond, "never early")
	r = testutil.Recv(t, runs, "a run")
	require.Equal(t, "200ms", r.payload)
	require.GreaterOrEqual(t, r.at.Sub(start), 200*time.Millisecond)

	// A delayed batch is one script call and wakes the scheduler too.
	start = time.Now()
	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("batch"), []byte("batch")}, Delay(50*time.Millisecond))
	require.NoError(t, err)
	for range 2 {
		r = testutil.Recv(t, runs, "a run")
		require.Equal(t, "batch", r.payload)
		require.GreaterOrEqual(t, r.at.Sub(start), 50*time.Millisecond)
	}
}

// A delayed job enqueued by a process that runs no worker of the queue wakes
// the scheduler of a process that does, through the wake marker: two
// consumer processes whose schedulers have read an empty delayed set (so
// neither has a timer that could promote the job), and a producer.
func TestDelayedJobFromAnotherProcessWakesScheduler(t *testing.T) {
	srv := redistest.Server(t)
	ran := make(chan string, 2)
	a := startConsumerProcess(t, srv.Addr(), "cross", "a", ran, WorkerConfig{})
	b := startConsumerProcess(t, srv.Addr(), "cross", "b", ran, WorkerConfig{})
	schedulerIdle(t, a.w)
	schedulerIdle(t, b.w)
	producerPool := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	producerQ := mustQueue(t, producerPool, "cross", Config{})

	due := time.Now().Add(150 * time.Millisecond)
	_, err := producerQ.Enqueue(context.Background(), []byte("x"), At(due))
	require.NoError(t, err)
	got := testutil.Recv(t, ran, "the delayed job")
	at := time.Unix(0, max(a.lastRun.Load(), b.lastRun.Load()))
	require.Contains(t, []string{"a:x", "b:x"}, got)
	require.False(t, at.Before(due.Truncate(time.Millisecond)), "never early")
	t.Logf("started %s after its due time", at.Sub(due))
	testutil.Eventually(t, 5*time.Second, "marker acked", func() bool { return a.w.Stats().InFlight == 0 && b.w.Stats().InFlight == 0 })
	n, err := producerPool.Client().LLen(context.Background(), producerQ.k.ready).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the wake marker was consumed, not left behind")
	select {
	case extra := <-ran:
		t.Fatalf("the job ran twice (%s)", extra)
	default:
	}
}

// --- budgets -----------------------------------------------------------------

func TestStartRefusesAnImpossibleBudget(t *testing.T) {
	p := miniPool(t, pool.Config{Blocking: pool.BlockingConfig{Size: 1}})
	g := group(t)
	a := mustQueue(t, p, "a", Config{})
	b := mustQueue(t, p, "b", Config{})
	h := func(context.Context, *Job) error { return nil }
	ca := newConsumer(t, a, ConsumerConfig{ConsumerID: "pa"})
	wa, err := NewWorker(ca, a, h, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, wa.Start(g))
	wb, err := NewWorker(ca, b, h, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, wb.Start(g), "a second queue of the same consumer shares its blocking connection")
	require.Equal(t, 1, p.Stats().Blocking.Reserved)

	// Another consumer (another process's worth) needs a connection of its
	// own, and the lane has none left.
	w2, err := newWorker(t, b, h, WorkerConfig{}, ConsumerConfig{ConsumerID: "pb"})
	require.NoError(t, err)
	err = w2.Start(g)
	require.ErrorIs(t, err, pool.ErrOverBudget)
	require.ErrorContains(t, err, `"queue:consumer:pb" asks for 1 connection(s) but the blocking lane has 0 of 1 left (held by queue:consumer:pa=1)`)
	require.Equal(t, 1, p.Stats().Blocking.Reserved, "the failed start holds no reservation")
}

func TestStartTwiceAndOnClosedGroup(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "twice", Config{})
	g := group(t)
	w := startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{})
	require.ErrorIs(t, w.Start(g), ErrAlreadyStarted)
	require.ErrorIs(t, w.Start(g), ErrStarted, "the deprecated name still matches")

	closed := lifecycle.New()
	require.NoError(t, closed.Close(context.Background()))
	w2, err := newWorker(t, mustQueue(t, p, "other", Config{}), func(context.Context, *Job) error { return nil }, WorkerConfig{})
	require.NoError(t, err)
	require.ErrorIs(t, w2.Start(closed), lifecycle.ErrClosed)
	require.Zero(t, p.Stats().Blocking.Reserved-1, "the failed start released its reservation")
}

// Every goroutine a worker runs is a task of its group: N handlers, a
// fetcher, an acker and a scheduler, plus the process's one heartbeat. The
// count does not grow with the jobs run, and Close ends every one of them.
func TestGoroutinesAreOwnedAndConstant(t *testing.T) {
	for _, n := range []int{1, 8, 64} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := miniPool(t, pool.Config{})
			ctx := context.Background()
			q := mustQueue(t, p, fmt.Sprint("g", n), Config{})
			g := lifecycle.New()
			jobs := make(chan struct{}, 4*n)
			w, err := newWorker(t, q, func(context.Context, *Job) error { jobs <- struct{}{}; return nil }, WorkerConfig{Concurrency: n})
			require.NoError(t, err)
			require.Zero(t, queueGoroutines(), "no goroutine of the package runs before Start")
			require.NoError(t, w.Start(g))
			tasks := g.Tasks()
			names := map[string]int{}
			for _, task := range tasks {
				name := task.Name
				if i := strings.LastIndex(name, ": "); i >= 0 {
					name = name[i+2:]
				}
				names[strings.TrimRight(name, "0123456789 ")]++
			}
			require.Equal(t, map[string]int{"handler": n, "fetcher": 1, "acker": 1, "scheduler": 1, "queue heartbeat (bq)": 1, "queue sweeper (bq)": 1, "queue fetch hub (bq slot 0)": 1}, names)
			goroutines := func(want int) func() bool {
				return func() bool { return queueGoroutines() == want }
			}
			testutil.Eventually(t, 5*time.Second, fmt.Sprintf("as many goroutines in the package as the %d tasks", len(tasks)), goroutines(len(tasks)))

			for range 4 * n {
				_, err := q.Enqueue(ctx, []byte("x"))
				require.NoError(t, err)
			}
			for i := range 4 * n {
				testutil.Recv(t, jobs, fmt.Sprint("job ", i))
			}
			testutil.Eventually(t, 5*time.Second, "jobs acked", func() bool { return w.Stats().InFlight == 0 })
			testutil.Eventually(t, 5*time.Second, "no goroutine added by running jobs", goroutines(len(tasks)))

			require.NoError(t, g.Close(ctx))
			require.Empty(t, g.Tasks())
			require.Zero(t, p.Stats().Blocking.Reserved, "the reservation went back")
			testutil.Eventually(t, 5*time.Second, "every goroutine of the worker gone", goroutines(0))
		})
	}
}

// queueGoroutines counts the goroutines running this package's code, other
// than tests.
func queueGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "bounded-go/bounded/queue.(*") && !strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "queue.(*cutProxy)") {
			count++
		}
	}
	return count
}

// --- shutdown and recovery (real Redis) --------------------------------------

func TestShutdownMidJobPutsItBack(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "drain", Config{})
	ctx := context.Background()
	g := lifecycle.New()
	started := make(chan struct{})
	var cancelled atomic.Bool
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		close(started)
		<-ctx.Done() // a long job, interrupted by the close deadline
		cancelled.Store(true)
		return ctx.Err()
	}, WorkerConfig{Concurrency: 2})
	_, err := q.Enqueue(ctx, []byte("long"))
	require.NoError(t, err)
	testutil.Recv(t, started, "the handler")

	// 2s, not 500ms: the put-back gets the last tenth of the time left
	// (at most 1s), and 50ms of it was too little on a loaded CI machine.
	closeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	begin := time.Now()
	require.NoError(t, g.Close(closeCtx))
	require.Less(t, time.Since(begin), 2*time.Second, "returns by the deadline")
	require.True(t, cancelled.Load(), "the handler's context was cancelled before the deadline")
	require.Empty(t, g.Tasks())

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), s.Ready, "the job is back in ready")
	require.Zero(t, s.InFlight)
	require.Zero(t, s.Consumers, "the consumer left")
	n, err := p.Client().ZCard(ctx, heartbeatKey("bq")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the heartbeat is gone")
	require.Equal(t, uint64(0), w.Stats().Processed)
}

func TestShutdownWithStubbornHandlerStillReturnsByDeadline(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "stubborn", Config{})
	ctx := context.Background()
	g := lifecycle.New()
	started := make(chan struct{})
	release := make(chan struct{})
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		close(started)
		<-release // ignores ctx
		return nil
	}, WorkerConfig{Concurrency: 1})
	_, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	testutil.Recv(t, started, "the handler")

	// The bound tested: Close returns by its deadline although the handler
	// never does, and the job is put back meanwhile. 2s, not 300ms: the
	// put-back gets the last tenth of the time left (drainTimers), and 30ms
	// for its four round trips was missed on a loaded 2-core machine, as in
	// TestShutdownMidJobPutsItBack.
	closeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = g.Close(closeCtx)
	var stuck *lifecycle.StuckError
	require.ErrorAs(t, err, &stuck)
	require.Len(t, stuck.Tasks, 1)
	require.Contains(t, stuck.Tasks[0].Name, "handler")

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), s.Ready, "the job is safe in ready although its handler still runs")
	close(release)
	testutil.Eventually(t, 5*time.Second, "the handler returned", func() bool { return len(g.Tasks()) == 0 })
}

// A consumer that died holding jobs (its heartbeat expired) is swept: its
// jobs go back to ready with one more delivery, and a job delivered too often
// goes to the dead letters.
func TestDeadConsumerIsSwept(t *testing.T) {
	testDeadConsumerIsSwept(t, serverPool)
}

func testDeadConsumerIsSwept(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "sweep", Config{})
	c := p.Client()

	// A consumer "ghost" fetched two jobs and died: its heartbeat expired.
	fresh := envelope{id: "fresh", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("fresh")}
	poison := envelope{id: "poison", maxAttempts: 3, deliveries: 2, enqueuedAt: time.Now(), payload: []byte("poison")}
	require.NoError(t, c.LPush(ctx, q.k.proc("ghost"), fresh.encode(), poison.encode(), wakeMarker).Err())
	require.NoError(t, c.SAdd(ctx, q.k.consumers, "ghost").Err())
	require.NoError(t, c.ZAdd(ctx, heartbeatKey("bq"), redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "ghost"}).Err())

	g := group(t)
	var mu sync.Mutex
	var got []*Job
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		mu.Lock()
		cp := *j
		got = append(got, &cp)
		mu.Unlock()
		return nil
	}, WorkerConfig{MaxDeliveries: 2}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})

	testutil.Eventually(t, 10*time.Second, "fresh job run after recovery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	mu.Lock()
	require.Equal(t, "fresh", got[0].ID)
	require.Equal(t, 1, got[0].Deliveries)
	mu.Unlock()
	testutil.Eventually(t, 5*time.Second, "poison dead-lettered", func() bool { return w.Stats().Dead == 1 })
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "poison", dead[0].ID)
	require.Contains(t, dead[0].Reason, "recovered from dead consumers 3 times")
	require.Equal(t, uint64(3), w.Stats().Recovered, "the jobs and the marker (the poison job is dead-lettered when fetched)")
	n, err := c.Exists(ctx, q.k.proc("ghost")).Result()
	require.NoError(t, err)
	require.Zero(t, n)
	isMember, err := c.SIsMember(ctx, q.k.consumers, "ghost").Result()
	require.NoError(t, err)
	require.False(t, isMember)
}

// A BLMOVE that fails on the client can still move an element on the
// server; the worker's reconcile puts such strays back.
func TestReconcilePutsBackStrays(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "stray", Config{})
	stray := envelope{id: "stray", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("s")}
	// A stable consumer ID finds its own leftovers from a previous life.
	require.NoError(t, p.Client().LPush(ctx, q.k.proc("pod-0"), stray.encode()).Err())
	g := group(t)
	ran := make(chan string, 1)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error { ran <- j.ID; return nil }, WorkerConfig{}, ConsumerConfig{ConsumerID: "pod-0"})
	require.Equal(t, "stray", testutil.Recv(t, ran, "the stray job"))
}

func TestRedisRestartMidRun(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true})
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "restart", Config{})
	ctx := context.Background()
	g := group(t)
	var mu sync.Mutex
	seen := map[string]bool{}
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		mu.Lock()
		seen[string(j.Payload)] = true
		mu.Unlock()
		return nil
	}, WorkerConfig{Concurrency: 4, BlockTimeout: time.Second})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	for i := range 50 {
		_, err := q.Enqueue(ctx, []byte(fmt.Sprint("a", i)))
		require.NoError(t, err)
	}
	testutil.Eventually(t, 10*time.Second, "first half", func() bool { return count() == 50 })
	tasks := len(g.Tasks())

	srv.Restart()
	// Enqueues fail fast while the pool believes Redis is down; retry like
	// a producer would.
	for i := range 50 {
		testutil.Eventually(t, 20*time.Second, "enqueue after restart", func() bool {
			_, err := q.Enqueue(ctx, []byte(fmt.Sprint("b", i)))
			return err == nil
		})
	}
	testutil.Eventually(t, 20*time.Second, "second half after the restart", func() bool { return count() == 100 })
	require.Equal(t, tasks, len(g.Tasks()), "no goroutine growth")
	t.Logf("fetch errors during the restart: %d", w.Stats().FetchErrors)
}
