package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// hookEvent is what a hook saw, including what Redis held at the time.
type hookEvent struct {
	kind     string
	out      Outcome
	inProc   int64  // the job's element still in the processing list
	lastErr  string // the job's last error key
	deadHeld bool   // its dead letter exists
	err      error  // reading Redis failed
}

// recordingHooks returns hooks that send what they see to the returned
// channel, reading Redis from the hook (on the acker's goroutine) to check
// that the outcome is written before the hook runs.
func recordingHooks(p *pool.Pool, q *Queue, consumer string) (WorkerConfig, <-chan hookEvent) {
	ch := make(chan hookEvent, 100)
	rec := func(kind string) func(Outcome) {
		return func(o Outcome) {
			ctx := context.Background()
			c := p.Client()
			ev := hookEvent{kind: kind, out: o}
			elems, err := c.LRange(ctx, q.k.proc(consumer), 0, -1).Result()
			// The element of the run that ended (a retry's next attempt,
			// due at once, may be fetched already).
			ran := fmt.Sprintf("%s%s|%d|", envelopeVersion, o.Job.ID, o.Job.Attempt-1)
			for _, e := range elems {
				if strings.HasPrefix(e, ran) {
					ev.inProc++
				}
			}
			ev.err = errors.Join(ev.err, err)
			ev.lastErr, err = c.Get(ctx, q.k.lastErr(o.Job.ID)).Result()
			if err != nil && err.Error() != "redis: nil" {
				ev.err = errors.Join(ev.err, err)
			}
			_, err = c.ZScore(ctx, q.k.deadIdx, o.Job.ID).Result()
			ev.deadHeld = err == nil
			ch <- ev
		}
	}
	return WorkerConfig{OnDone: rec("done"), OnRetry: rec("retry"), OnDead: rec("dead")}, ch
}

// Hooks run after the outcome is in Redis, once per outcome, in order: a
// job that fails twice and then succeeds calls OnRetry, OnRetry, OnDone;
// one that fails its last attempt OnRetry then OnDead. The last error is
// kept while the job waits to retry and deleted on success and death.
func TestOutcomeHooksOrderAndOnce(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			g := group(t)
			q := mustQueue(t, p, "hooked", Config{})
			cfg, events := recordingHooks(p, q, "hooker")
			cfg.Backoff = func(int, error) time.Duration { return time.Millisecond }
			w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
				if j.ID == "flaky" && j.Attempt >= 3 {
					return nil
				}
				return fmt.Errorf("fail %d", j.Attempt)
			}, cfg, ConsumerConfig{ConsumerID: "hooker"})
			_, err := q.Enqueue(ctx, []byte("x"), ID("flaky"))
			require.NoError(t, err)
			_, err = q.Enqueue(ctx, []byte("y"), ID("doomed"), MaxAttempts(2))
			require.NoError(t, err)

			got := map[string][]hookEvent{}
			for range 5 {
				ev := recv(t, events, testutil.Wait, "a hook")
				require.NoError(t, ev.err)
				require.Equal(t, "hooked", ev.out.Job.Queue)
				require.Nil(t, ev.out.Job.Payload, "outcomes do not hold payloads")
				require.Zero(t, ev.inProc, "%s of %s: the outcome is written before the hook", ev.kind, ev.out.Job.ID)
				got[ev.out.Job.ID] = append(got[ev.out.Job.ID], ev)
			}
			kinds := func(evs []hookEvent) (ks []string) {
				for _, e := range evs {
					ks = append(ks, e.kind)
				}
				return ks
			}
			require.Equal(t, []string{"retry", "retry", "done"}, kinds(got["flaky"]))
			require.Equal(t, []string{"retry", "dead"}, kinds(got["doomed"]))
			for i, ev := range got["flaky"][:2] {
				require.Equal(t, i+1, ev.out.Job.Attempt)
				require.EqualError(t, ev.out.Err, fmt.Sprintf("fail %d", i+1))
				require.Equal(t, fmt.Sprintf("fail %d", i+1), ev.lastErr, "the last error is written with the retry")
				require.False(t, ev.out.RetryAt.IsZero())
			}
			done := got["flaky"][2]
			require.NoError(t, done.out.Err)
			require.Empty(t, done.lastErr, "deleted on success")
			require.Positive(t, done.out.Ran)
			dead := got["doomed"][1]
			require.True(t, dead.deadHeld, "the dead letter is written before OnDead")
			require.Empty(t, dead.lastErr, "deleted on death")
			require.EqualError(t, dead.out.Err, "fail 2")
			require.Contains(t, dead.out.Reason, "fail 2")

			testutil.Eventually(t, testutil.Wait, "counters", func() bool {
				s := w.Stats()
				return s.Processed == 1 && s.Dead == 1 && s.Retried == 3
			})
			select {
			case ev := <-events:
				t.Fatalf("a hook ran once more: %s of %s", ev.kind, ev.out.Job.ID)
			default:
			}
		})
	}
}

// A hook that panics is recovered, logged and counted; the worker goes on
// and calls it for the next outcome.
func TestOutcomeHookPanicsAreRecovered(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "panicky", Config{})
	var calls atomic.Int32
	w := startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{
		OnDone: func(Outcome) { calls.Add(1); panic("hook broke") },
	})
	for i := range 2 {
		_, err := q.Enqueue(ctx, []byte("x"))
		require.NoError(t, err)
		testutil.Eventually(t, testutil.Wait, "the hook ran", func() bool {
			return calls.Load() == int32(i+1) && w.Stats().HookPanics == uint64(i+1)
		})
	}
	require.Equal(t, uint64(2), w.Stats().Processed)
}

// A job dead-lettered without running (malformed) calls OnDead with Ran 0.
func TestOnDeadForAJobThatDidNotRun(t *testing.T) {
	ctx := context.Background()
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "junk", Config{})
	got := make(chan Outcome, 1)
	startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{
		OnDead: func(o Outcome) { got <- o },
	})
	// Pushed as a producer of this version does: with a ring of the
	// queue's doorbell (the worker may already wait for one).
	pipe := p.Client().TxPipeline()
	pipe.LPush(ctx, q.k.ready, "not a job")
	pipe.ZAdd(ctx, q.k.bell, redis.Z{Score: 0, Member: bellMember})
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	o := recv(t, got, testutil.Wait, "OnDead")
	require.Zero(t, o.Ran)
	require.True(t, strings.HasPrefix(o.Job.ID, "malformed-"), o.Job.ID)
	require.ErrorContains(t, o.Err, "malformed")
}

// The last error is capped at 1 KiB, lives at least the retry delay, and
// shows in the Inspector's listing of the waiting retry.
func TestLastErrIsCappedAndOutlivesTheDelay(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := np(t, pool.Config{})
			g := group(t)
			q := mustQueue(t, p, "errs", Config{})
			retried := make(chan Outcome, 1)
			long := strings.Repeat("e", 3000)
			startWorker(t, g, q, func(context.Context, *Job) error { return errors.New(long) }, WorkerConfig{
				Backoff: func(int, error) time.Duration { return 2 * time.Hour },
				OnRetry: func(o Outcome) { retried <- o },
			})
			_, err := q.Enqueue(ctx, []byte("x"), ID("slow"))
			require.NoError(t, err)
			recv(t, retried, testutil.Wait, "OnRetry")
			v, err := p.Client().Get(ctx, q.k.lastErr("slow")).Result()
			require.NoError(t, err)
			require.Equal(t, truncate(long, lastErrMax), v)
			require.Less(t, len(v), lastErrMax+32)
			ttl, err := p.Client().PTTL(ctx, q.k.lastErr("slow")).Result()
			require.NoError(t, err)
			require.Greater(t, ttl, 2*time.Hour, "outlives the retry delay")
			require.LessOrEqual(t, ttl, 2*time.Hour+lastErrMargin)

			in := mustInspector(t, p, "")
			page, err := in.Jobs(ctx, "errs", StateDelayed, "", 10)
			require.NoError(t, err)
			require.Len(t, page.Jobs, 1)
			require.Equal(t, v, page.Jobs[0].LastError)
			require.Equal(t, 1, page.Jobs[0].Attempt)

			// Deleting the waiting retry deletes its last error.
			require.NoError(t, in.Delete(ctx, "errs", page.Jobs[0].Handle))
			n, err := p.Client().Exists(ctx, q.k.lastErr("slow")).Result()
			require.NoError(t, err)
			require.Zero(t, n)
		})
	}
}
