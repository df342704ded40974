package queue

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// A reused ID is the new job's: the enqueue that takes the ID deletes the
// result, progress, cancel and last error of the earlier job, so Wait and
// Get never report the earlier job's end as the new job's. An earlier
// job's dead letter, which stays, counts only while no job holds the ID.
func TestReusedIDReportsTheNewJob(t *testing.T)        { testReusedID(t, miniPools) }
func TestReusedIDReportsTheNewJob_Server(t *testing.T) { testReusedID(t, serverPools) }
func TestReusedIDReportsTheNewJob_Cluster(t *testing.T) {
	testReusedID(t, clusterPoolsOf(redistest.Cluster(t)))
}

func testReusedID(t *testing.T, pools poolsFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	h := func(ctx context.Context, j *Job) error {
		if string(j.Payload) == "fail" {
			return Permanent(errors.New("boom"))
		}
		if err := j.Progress(ctx, []byte("half")); err != nil {
			return err
		}
		return j.SetResult(j.Payload)
	}
	pr := newCtlProcess(t, pools(t), "reuse", Config{})
	q := pr.q
	pr.work(t, h, WorkerConfig{ResultTTL: time.Hour})
	notEnded := func(q *Queue, id string) {
		t.Helper()
		res, ended, err := q.ended(ctx, id, &waitPin{})
		require.NoError(t, err)
		require.False(t, ended, "the new job %s has not ended (%q reported)", id, res)
	}

	// A result, then a new job of the ID waiting: not ended, no result.
	_, err := q.Enqueue(ctx, []byte("first"), ID("r"))
	require.NoError(t, err)
	res, err := q.Wait(ctx, "r")
	require.NoError(t, err)
	require.Equal(t, "first", string(res))
	testutil.Eventually(t, testutil.Wait, "the first job's ack (its ID free)", func() bool {
		info, err := q.Get(ctx, "r")
		return err == nil && info.State == StateDone
	})
	_, err = q.Enqueue(ctx, []byte("second"), ID("r"), Delay(time.Hour))
	require.NoError(t, err)
	info, err := q.Get(ctx, "r")
	require.NoError(t, err)
	require.Equal(t, StateDelayed, info.State)
	require.Nil(t, info.Result, "the first job's result")
	require.Nil(t, info.Progress, "the first job's progress")
	notEnded(q, "r")

	// Cancelled, then a third job of the ID: its own result, not the cancel.
	require.NoError(t, q.Cancel(ctx, "r"))
	_, err = q.Wait(ctx, "r")
	require.ErrorIs(t, err, ErrCancelled)
	_, err = q.Enqueue(ctx, []byte("third"), ID("r"))
	require.NoError(t, err)
	res, err = q.Wait(ctx, "r")
	require.NoError(t, err)
	require.Equal(t, "third", string(res))
	testutil.Eventually(t, testutil.Wait, "the third job's ack (its ID free)", func() bool {
		info, err := q.Get(ctx, "r")
		return err == nil && info.State == StateDone
	})
	_, err = q.Enqueue(ctx, []byte("fourth"), ID("r"), Debounce(), Delay(time.Hour))
	require.NoError(t, err)
	notEnded(q, "r")

	// A dead letter, then a new job of the ID: not ended while it waits;
	// cancelled, it is reported cancelled, not dead.
	_, err = q.Enqueue(ctx, []byte("fail"), ID("d"))
	require.NoError(t, err)
	_, err = q.Wait(ctx, "d")
	require.ErrorIs(t, err, ErrJobDead)
	_, err = q.Enqueue(ctx, []byte("again"), ID("d"), Delay(time.Hour))
	require.NoError(t, err)
	notEnded(q, "d")
	require.NoError(t, q.Cancel(ctx, "d"))
	_, err = q.Wait(ctx, "d")
	require.ErrorIs(t, err, ErrCancelled)
	info, err = q.Get(ctx, "d")
	require.NoError(t, err)
	require.Equal(t, StateCancelled, info.State)

	// The same through every enqueue script that takes an ID: a payload
	// kept apart, a partition, a bounded queue (Config.MaxLen).
	bounded := newCtlProcess(t, pools(t), "reuseb", Config{MaxLen: 100})
	bounded.work(t, h, WorkerConfig{ResultTTL: time.Hour})
	for _, q := range []*Queue{q, bounded.q} {
		for name, opts := range map[string][]EnqueueOption{"plain": nil, "partitioned": {Partition("p")}, "apart": nil} {
			id := "x-" + name
			payload := []byte(name)
			if name == "apart" {
				payload = make([]byte, inlineMax+1)
			}
			_, err = q.Enqueue(ctx, payload, append(opts, ID(id))...)
			require.NoError(t, err, name)
			_, err = q.Wait(ctx, id)
			require.NoError(t, err, name)
			testutil.Eventually(t, testutil.Wait, "the ack of "+id, func() bool {
				info, err := q.Get(ctx, id)
				return err == nil && info.State == StateDone
			})
			_, err = q.Enqueue(ctx, payload, append(opts, ID(id), Delay(time.Hour))...)
			require.NoError(t, err, name)
			notEnded(q, id)
		}
	}
}

// A cancel recorded for a run whose job does not hold its ID (a dead letter
// requeued: its idempotency key is not taken again; or one whose UniqueTTL
// lapsed) must survive a new job that takes the ID: the retry of the
// cancelled run reads the marker (Worker.cancelRecorded) to be dropped, and
// the marker names the run it cancels, so it never cancels the new job.
func TestReusedIDKeepsTheCancelOfARunStillHeld(t *testing.T) {
	testReusedIDKeepsTheCancel(t, miniPools)
}
func TestReusedIDKeepsTheCancelOfARunStillHeld_Cluster(t *testing.T) {
	testReusedIDKeepsTheCancel(t, clusterPoolsOf(redistest.Cluster(t)))
}

func testReusedIDKeepsTheCancel(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "reusecancel", Config{})
	q := pr.q
	runs := make(chan string, 100)
	release := make(chan struct{})
	var first atomic.Bool
	startWorker(t, pr.g, q, func(_ context.Context, j *Job) error {
		runs <- fmt.Sprintf("%s%d", j.Payload, j.Attempt)
		switch {
		case string(j.Payload) == "b":
			return nil
		case first.CompareAndSwap(false, true):
			return Permanent(errors.New("dies once"))
		case j.Attempt == 1:
			<-release
		}
		return errors.New("flaky")
	}, WorkerConfig{Concurrency: 1, RetryBase: time.Millisecond, RetryMax: time.Millisecond},
		ConsumerConfig{Namespace: q.cfg.Namespace}) // no Control: the cancel is only recorded

	_, err := q.Enqueue(ctx, []byte("a"), ID("x"))
	require.NoError(t, err)
	require.Equal(t, "a1", testutil.Recv(t, runs, "the first run"))
	testutil.Eventually(t, testutil.Wait, "the job dead", func() bool {
		info, err := q.Get(ctx, "x")
		return err == nil && info.State == StateDead
	})
	n, err := q.Requeue(ctx, "x")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, "a1", testutil.Recv(t, runs, "the requeued run"))
	require.NoError(t, q.Cancel(ctx, "x"))
	// The requeued job holds no idempotency key: a new job takes the ID.
	_, err = q.Enqueue(ctx, []byte("b"), ID("x"))
	require.NoError(t, err)
	close(release) // the cancelled run ends with an error

	require.Equal(t, "b1", testutil.Recv(t, runs, "the new job"))
	testutil.Eventually(t, testutil.Wait, "both jobs ended", func() bool {
		st, err := q.Stats(ctx)
		return err == nil && st.Ready+st.Delayed+st.InFlight == 0
	})
	select {
	case r := <-runs:
		t.Fatalf("the cancelled run was retried (%s)", r)
	default:
	}
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Dead, "the cancelled run went on to the dead letters")
}

// A cancel beside the job's own dead letter (a cancel of its last run that
// came too late to stop it, left by a worker of a version whose
// dead-lettering did not read the run's cancel: this version drops such a
// run, TestCancelledLastAttemptIsDropped) names the dead job's run, not a
// later job's, so Get reports the job dead, with its reason, and Wait
// ErrJobDead, as they did before a marker beside a dead letter was read as
// a later job's cancel.
func TestDeadLetterBesideItsOwnCancelIsReportedDead(t *testing.T) {
	testDeadLetterBesideItsOwnCancel(t, miniPools)
}
func TestDeadLetterBesideItsOwnCancelIsReportedDead_Server(t *testing.T) {
	testDeadLetterBesideItsOwnCancel(t, serverPools)
}

func testDeadLetterBesideItsOwnCancel(t *testing.T, pools poolsFunc) {
	ctx := context.Background()
	pr := newCtlProcess(t, pools(t), "deadowncancel", Config{})
	q := pr.q
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	startWorker(t, pr.g, q, func(context.Context, *Job) error {
		started <- struct{}{}
		<-release
		return errors.New("it failed")
	}, WorkerConfig{Concurrency: 1}, ConsumerConfig{Namespace: q.cfg.Namespace}) // no Control
	_, err := q.Enqueue(ctx, []byte("a"), ID("x"), MaxAttempts(1))
	require.NoError(t, err)
	testutil.Recv(t, started, "the run")
	loc, err := q.locate(ctx, "x")
	require.NoError(t, err)
	require.Equal(t, locRunning, loc.where)
	close(release)
	testutil.Eventually(t, testutil.Wait, "the job dead", func() bool {
		st, err := q.Stats(ctx)
		return err == nil && st.Dead == 1 && st.InFlight == 0
	})
	// The cancel as cancelRunningScript recorded it, which that older
	// version's dead-lettering left beside the dead letter.
	mv := markerValue(loc.env)
	require.NoError(t, pr.p.Client().Set(ctx, q.k.cancelMarker("x"), mv, cancelTTL).Err())
	require.NoError(t, pr.p.Client().Set(ctx, q.k.runCancel("x", mv), "1", cancelTTL).Err())
	info, err := q.Get(ctx, "x")
	require.NoError(t, err)
	require.Equal(t, StateDead, info.State, "the job is in the dead letters")
	require.Contains(t, info.LastError, "it failed")
	wctx, cancel := context.WithTimeout(ctx, testutil.Wait)
	defer cancel()
	_, err = q.Wait(wctx, "x")
	require.ErrorIs(t, err, ErrJobDead)

	// A later job of the ID that is cancelled is reported cancelled over
	// the dead letter.
	_, err = q.Enqueue(ctx, []byte("b"), ID("x"), Delay(time.Hour))
	require.NoError(t, err)
	require.NoError(t, q.Cancel(ctx, "x"))
	info, err = q.Get(ctx, "x")
	require.NoError(t, err)
	require.Equal(t, StateCancelled, info.State)
	_, err = q.Wait(wctx, "x")
	require.ErrorIs(t, err, ErrCancelled)
}
