package queue

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Two first calls of Job.Verdict at once (middleware goroutines) draw the
// retry's delay once: WorkerConfig.Backoff is called once per run, as the
// doc says, and both calls get its draw. Each call drew outside the run's
// lock, so both called Backoff (a Backoff that counts, or that takes a
// token from a budget, saw the run twice), and one draw was thrown away.
func TestVerdictDrawsOnceUnderConcurrentCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		entered, release := make(chan struct{}), make(chan struct{})
		w := &Worker{q: &Queue{cfg: Config{Now: time.Now}}}
		w.cfg.Backoff = func(int, error) time.Duration {
			if calls.Add(1) == 1 {
				close(entered)
				<-release
			}
			return time.Minute
		}
		job := &Job{ID: "j", Attempt: 1, MaxAttempts: 3}
		job.run = &jobRun{w: w, id: "j"}
		boom := errors.New("boom")
		var wg sync.WaitGroup
		got := make([]Verdict, 2)
		wg.Go(func() { got[0], _ = job.Verdict(boom) })
		<-entered // the first call is drawing
		wg.Go(func() { got[1], _ = job.Verdict(boom) })
		synctest.Wait() // the second call waits for the draw, or drew itself
		if n := calls.Load(); n != 1 {
			close(release)
			wg.Wait()
			t.Fatalf("Backoff called %d times for one run", n)
		}
		close(release)
		wg.Wait()
		if !got[0].Retry || !got[0].RetryAt.Equal(got[1].RetryAt) {
			t.Fatalf("verdicts %+v and %+v: want one retry, the same", got[0], got[1])
		}
	})
}
