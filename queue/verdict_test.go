package queue

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Job.Verdict reports the outcome the worker then writes, with a random
// backoff that pushes about half the retries past the job's deadline: the
// verdict given to the handler and the hook the worker calls agree on
// every job (retry and when, or dead letter and why).
func TestVerdictIsTheOutcomeTheWorkerWrites(t *testing.T) {
	for name, newPool := range map[string]newPoolFunc{"miniredis": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			const jobs = 40
			q := mustQueue(t, newPool(t, pool.Config{}), "verdict", Config{})
			verdicts := make(chan [2]any, jobs)
			outcomes := make(chan [2]any, 2*jobs)
			h := func(_ context.Context, j *Job) error {
				if j.Attempt > 1 {
					return nil
				}
				err := errors.New("flaky")
				v, ok := j.Verdict(err)
				if !ok {
					return Permanent(errors.New("no verdict"))
				}
				verdicts <- [2]any{j.ID, v}
				return err
			}
			startWorker(t, group(t), q, h, WorkerConfig{
				Concurrency: 4,
				// Drawn from [0, 20s): the deadline, 10s ahead, stops about half.
				Backoff: func(int, error) time.Duration { return rand.N(20 * time.Second) },
				OnRetry: func(o Outcome) { outcomes <- [2]any{o.Job.ID, Verdict{Retry: true, RetryAt: o.RetryAt}} },
				OnDead:  func(o Outcome) { outcomes <- [2]any{o.Job.ID, Verdict{Reason: o.Reason}} },
			})
			for range jobs {
				_, err := q.Enqueue(context.Background(), nil, MaxAttempts(3), Deadline(time.Now().Add(10*time.Second)))
				require.NoError(t, err)
			}
			told := map[string]Verdict{}
			for range jobs {
				v := testutil.Recv(t, verdicts, "a verdict")
				told[v[0].(string)] = v[1].(Verdict)
			}
			retried, dead := 0, 0
			for range jobs {
				o := testutil.Recv(t, outcomes, "an outcome")
				id, wrote := o[0].(string), o[1].(Verdict)
				v, ok := told[id]
				require.True(t, ok, "an outcome of job %s, which was never told one", id)
				require.Equal(t, v.Retry, wrote.Retry, "job %s: told %+v, the worker wrote %+v", id, v, wrote)
				if v.Retry {
					retried++
					require.True(t, v.RetryAt.Equal(wrote.RetryAt), "job %s: told a retry at %s, written at %s", id, v.RetryAt, wrote.RetryAt)
				} else {
					dead++
					require.Equal(t, v.Reason, wrote.Reason, "job %s", id)
					require.Contains(t, v.Reason, "deadline")
				}
			}
			require.NotZero(t, retried, "no retry among %d jobs: the test did not exercise both outcomes", jobs)
			require.NotZero(t, dead, "no dead letter among %d jobs: the test did not exercise both outcomes", jobs)
		})
	}
}

// Verdict has nothing to say of a run that succeeded or of a Job built by
// hand; the other dead letters it reports with the worker's reasons.
func TestVerdictCases(t *testing.T) {
	boom := errors.New("boom")
	_, ok := (&Job{Attempt: 1, MaxAttempts: 3}).Verdict(boom)
	require.False(t, ok, "a Job built by hand has no worker to ask")

	q := mustQueue(t, miniPool(t, pool.Config{}), "verdict", Config{})
	type told struct {
		v         Verdict
		ok, nilOK bool
	}
	got := make(chan told, 3)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		_, nilOK := j.Verdict(nil)
		var err error = boom
		if string(j.Payload) == "permanent" {
			err = Permanent(boom)
		}
		v, ok := j.Verdict(err)
		got <- told{v, ok, nilOK}
		return err
	}, WorkerConfig{RetryBase: time.Hour, RetryMax: time.Hour})
	_, err := q.Enqueue(context.Background(), []byte("permanent"))
	require.NoError(t, err)
	v := testutil.Recv(t, got, "the permanent run")
	require.True(t, v.ok)
	require.False(t, v.nilOK, "a verdict for a run that succeeded")
	require.False(t, v.v.Retry)
	require.Equal(t, "attempt 1 of 5 failed permanently: boom", v.v.Reason)

	_, err = q.Enqueue(context.Background(), []byte("last"), MaxAttempts(1))
	require.NoError(t, err)
	v = testutil.Recv(t, got, "the last attempt")
	require.Equal(t, Verdict{Reason: "attempt 1 of 1 failed: boom"}, v.v)

	before := time.Now()
	_, err = q.Enqueue(context.Background(), []byte("retry"))
	require.NoError(t, err)
	v = testutil.Recv(t, got, "a retried run")
	require.True(t, v.v.Retry)
	require.WithinRange(t, v.v.RetryAt, before, time.Now().Add(time.Hour+time.Second))
}
