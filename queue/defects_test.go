package queue

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

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
