package queue

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
)

func TestWaitReportsASecondDeathOfItsID(t *testing.T) { testWaitSecondDeath(t, miniPools) }
func TestWaitReportsASecondDeathOfItsID_Server(t *testing.T) {
	testWaitSecondDeath(t, serverPools)
}

// testWaitSecondDeath: a job with an ID that died once keeps its dead
// letter under the plain ID; a later job of the ID that dies too is
// stored as "<id>~<ms>". A Wait started while that later job ran (pinned
// to its run) must report its death, with its reason, not wait on for
// an end that will never come because the plain ID's dead letter names
// the earlier run.
func testWaitSecondDeath(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "deadtwice", Config{})
	q := pr.q
	started := make(chan string, 10)
	release := make(chan struct{})
	startWorker(t, pr.g, q, func(_ context.Context, j *Job) error {
		started <- string(j.Payload)
		if string(j.Payload) == "second" {
			<-release
		}
		return Permanent(errors.New(string(j.Payload) + " failed"))
	}, WorkerConfig{Concurrency: 1}, ConsumerConfig{Namespace: q.cfg.Namespace})
	_, err := q.Enqueue(ctx, []byte("first"), ID("twice"))
	require.NoError(t, err)
	require.Equal(t, "first", testutil.Recv(t, started, "the first job"))
	testutil.Eventually(t, testutil.Wait, "the first job dead", func() bool {
		st, err := q.Stats(ctx)
		return err == nil && st.Dead == 1 && st.InFlight == 0
	})
	_, err = q.Enqueue(ctx, []byte("second"), ID("twice"))
	require.NoError(t, err)
	require.Equal(t, "second", testutil.Recv(t, started, "the second job"))
	done := make(chan error, 1)
	wctx, cancel := context.WithTimeout(ctx, testutil.Wait)
	defer cancel()
	go func() { _, err := q.Wait(wctx, "twice"); done <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait to register", func() bool { return q.room.Load().results.count() == 1 })
	close(release)
	err = testutil.Recv(t, done, "Wait")
	require.ErrorIs(t, err, ErrJobDead, "Wait of the second job")
	require.ErrorContains(t, err, "second failed")
}

// TestLimitRerangOnlyAfterARing: the count a refused take rang again at
// (its reply "c<held>") is what the next take must not ring again at. A
// reply that is not a refusal (a job, a rate's wait in µs, a partition's
// "p<µs>") rang nothing: it must not be taken for that count, or a later
// refusal at a count equal to the µs of the wait would not ring for a
// wider limit.
func TestLimitRerangOnlyAfterARing(t *testing.T) {
	var lim limiter
	for _, r := range []string{"c2", "3", "c", "p7", "c4", "0"} {
		_, _, _, err := lim.splitTake([]string{r}, nil)
		require.NoError(t, err)
		want := ""
		if len(r) > 1 && r[0] == 'c' {
			want = r[1:]
		}
		require.Equal(t, want, lim.rerang, "after the reply %q", r)
	}
}
