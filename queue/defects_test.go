package queue

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
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
