package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

// Adversarial review of job control by ID (issue 18).

// IDs with glob characters are looked up in the delayed set by ZSCAN MATCH:
// the pattern must match the ID literally, never another job's.
func TestRevctlGlobIDsInDelayedSet(t *testing.T)        { testRevctlGlobIDs(t, miniPools) }
func TestRevctlGlobIDsInDelayedSet_Server(t *testing.T) { testRevctlGlobIDs(t, serverPools) }

func testRevctlGlobIDs(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "glob", Config{})
	q := pr.q
	for _, id := range []string{"ab", `a\b`, "a[b]", "ax*"} {
		_, err := q.Enqueue(ctx, []byte(id), ID(id), Delay(time.Hour))
		require.NoError(t, err)
	}
	for _, id := range []string{"ab", `a\b`, "a[b]", "ax*"} {
		info, err := q.Get(ctx, id)
		require.NoError(t, err, id)
		require.Equal(t, StateDelayed, info.State, id)
		require.Equal(t, id, string(info.Payload), id)
	}
	for _, id := range []string{"a*", "a?", "a[b-c]", `a\`, "a", "[a]b", "ax", `a\\b`} {
		_, err := q.Get(ctx, id)
		require.ErrorIs(t, err, ErrJobNotFound, "Get(%q) must not match another job", id)
		require.ErrorIs(t, q.Cancel(ctx, id), ErrJobNotFound, "Cancel(%q) must not cancel another job", id)
	}
	n, err := q.p.Client().ZCard(ctx, q.k.delayed).Result()
	require.NoError(t, err)
	require.Equal(t, int64(4), n, "no job was cancelled by a pattern")
}

// A cancel recorded while the job runs, whose message did not reach the
// handler before the run ended with an error (a consumer without Control,
// a message lost, or one that came just after the handler returned), must
// not let the job run again: "A run that then ends with an error is not
// retried".
func TestRevctlCancelledRunNotRetriedWithoutTheMessage(t *testing.T) {
	ctx := context.Background()
	pr := newCtlProcess(t, miniPools(t), "nomsg", Config{})
	runs := make(chan int, 10)
	release := make(chan struct{})
	startWorker(t, pr.g, pr.q, func(_ context.Context, j *Job) error {
		runs <- j.Attempt
		if j.Attempt == 1 {
			<-release
		}
		return errors.New("flaky")
	}, WorkerConfig{Concurrency: 1, RetryBase: time.Millisecond, RetryMax: time.Millisecond},
		ConsumerConfig{Namespace: pr.q.cfg.Namespace}) // no Control: the cancel is only recorded
	id, err := pr.q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	require.Equal(t, 1, testutil.Recv(t, runs, "the first attempt"))
	require.NoError(t, pr.q.Cancel(ctx, id))
	close(release) // the run ends with an error after its cancel
	testutil.Eventually(t, testutil.Wait, "the cancelled job dropped", func() bool {
		info, err := pr.q.Get(ctx, id)
		return err == nil && info.State == StateCancelled
	})
	select {
	case a := <-runs:
		t.Fatalf("the cancelled job ran again (attempt %d)", a)
	default:
	}
	st, err := pr.q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Ready+st.Delayed+st.InFlight+st.Dead)
}

// A job cancelled while a dead consumer holds it (the message reaches
// nobody; Cancel returned nil) is recovered by a sweep: it must not run.
func TestRevctlCancelledJobOfADeadConsumerDoesNotRun(t *testing.T) {
	ctx := context.Background()
	pr := newCtlProcess(t, miniPools(t), "ghostc", Config{})
	q, c := pr.q, pr.p.Client()
	env := envelope{id: "held", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("x")}
	require.NoError(t, c.LPush(ctx, q.k.proc("ghost"), env.encode()).Err())
	require.NoError(t, c.ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "ghost"}).Err())
	require.NoError(t, c.SAdd(ctx, q.k.consumers, "ghost").Err())
	info, err := q.Get(ctx, "held")
	require.NoError(t, err)
	require.Equal(t, StateRunning, info.State)
	require.Equal(t, "ghost", info.Consumer)
	require.NoError(t, q.Cancel(ctx, "held"))

	runs := make(chan string, 10)
	pr.work(t, func(_ context.Context, j *Job) error { runs <- j.ID; return nil }, WorkerConfig{Concurrency: 1})
	testutil.Eventually(t, testutil.Wait, "the sweep", func() bool {
		n, err := c.LLen(ctx, q.k.proc("ghost")).Result()
		return err == nil && n == 0
	})
	// A job enqueued after it runs, so the recovered one was fetched first.
	_, err = q.Enqueue(ctx, []byte("after"), ID("after"))
	require.NoError(t, err)
	require.Equal(t, "after", testutil.Recv(t, runs, "the next job"), "the cancelled job must not run")
	// Dropped without running, but its drop is an outcome the acker writes
	// in its own time: until then Get finds it in the processing list
	// (running).
	testutil.Eventually(t, testutil.Wait, "the cancelled job dropped", func() bool {
		info, err := q.Get(ctx, "held")
		return err == nil && info.State == StateCancelled
	})
	select {
	case id := <-runs:
		t.Fatalf("%s ran after the next job", id)
	default:
	}
}

// A job that failed once and is cancelled while its retry runs is dropped
// with its last error, as a cancel of the waiting retry (cancelWaitingScript)
// and an ack do: Get then reports no error of a run that no longer exists.
func TestRevctlCancelledRetryDropsItsLastError(t *testing.T) {
	ctx := context.Background()
	pr := newCtlProcess(t, miniPools(t), "lasterr", Config{})
	b := newBlocker()
	pr.work(t, func(ctx context.Context, j *Job) error {
		if j.Attempt == 1 {
			return errors.New("first attempt failed")
		}
		return b.handle(ctx, j)
	}, WorkerConfig{Concurrency: 1, RetryBase: time.Millisecond, RetryMax: time.Millisecond})
	id, err := pr.q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	testutil.Recv(t, b.started, "the second attempt")
	info, err := pr.q.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, "first attempt failed", info.LastError)
	require.NoError(t, pr.q.Cancel(ctx, id))
	require.ErrorIs(t, testutil.Recv(t, b.causes, "the cancel"), ErrCancelled)
	testutil.Eventually(t, testutil.Wait, "the cancelled job dropped", func() bool {
		info, err := pr.q.Get(ctx, id)
		return err == nil && info.State == StateCancelled
	})
	n, err := pr.p.Client().Exists(ctx, pr.q.k.lastErr(id)).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the last error of the cancelled job is deleted")
}

// A job a restarted consumer (stable ConsumerID) finds in its previous
// life's processing list and sends to the dead letters (MaxDeliveries)
// wakes the producers waiting for it, as every other dead letter does.
func TestRevctlWaitWokenByADeadLetterOfAPreviousLife(t *testing.T) {
	ctx := context.Background()
	pr := newCtlProcess(t, miniPools(t), "crashy", Config{})
	q, c := pr.q, pr.p.Client()
	env := envelope{id: "crashy", maxAttempts: 3, deliveries: 2, enqueuedAt: time.Now(), payload: []byte("x")}
	require.NoError(t, c.LPush(ctx, q.k.proc("stable"), env.encode()).Err())
	require.NoError(t, c.SAdd(ctx, q.k.consumers, "stable").Err())
	require.NoError(t, c.HSet(ctx, q.k.incarnations, "stable", "previous-life").Err())
	waited := make(chan error, 1)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	go func() { _, err := q.Wait(wctx, "crashy"); waited <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return q.room.Load().results.count() == 1 })
	startWorker(t, pr.g, q, func(context.Context, *Job) error { return nil },
		WorkerConfig{Concurrency: 1, MaxDeliveries: 2}, ConsumerConfig{Namespace: q.cfg.Namespace, ConsumerID: "stable"})
	testutil.Eventually(t, testutil.Wait, "the dead letter", func() bool {
		n, err := c.HExists(ctx, q.k.deadData, "crashy").Result()
		return err == nil && n
	})
	require.ErrorIs(t, testutil.Recv(t, waited, "Wait of the dead job"), ErrJobDead)
}
