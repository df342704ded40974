package queue

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// injectedReply is an error reply of Redis, as the fault hooks report it.
type injectedReply string

func (e injectedReply) Error() string { return string(e) }
func (injectedReply) RedisError()     {}

// handlerErrs collects the errors a handler met, for the test goroutine
// to check.
type handlerErrs struct {
	mu   sync.Mutex
	errs []error
}

func (e *handlerErrs) note(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

func (e *handlerErrs) err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return errors.Join(e.errs...)
}

// failRelease keeps the first fail limit releases (limitReleaseScript) of
// the pipelines it sees from Redis, failing them with an error reply, and
// counts every command sent by its first two arguments (name and key, or
// name and script SHA).
type failRelease struct {
	fail atomic.Int64
	mu   sync.Mutex
	sent map[string]int
}

// count counts the commands of cmds that Redis ran: those that did not
// fail (a NOSCRIPT refusal, say, ran nothing). An EVAL counts as the
// EVALSHA of its script.
func (h *failRelease) count(cmds ...redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range cmds {
		a := c.Args()
		if len(a) < 2 || (c.Err() != nil && !errors.Is(c.Err(), redis.Nil)) {
			continue
		}
		if a[0] == "eval" {
			a = []any{"evalsha", fmt.Sprintf("%x", sha1.Sum([]byte(a[1].(string))))}
		}
		h.sent[fmt.Sprint(a[0], " ", a[1])]++
	}
}

func (h *failRelease) n(name, arg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sent[name+" "+arg]
}

func (h *failRelease) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failRelease) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil || errors.Is(err, redis.Nil) {
			h.count(cmd)
		}
		return err
	}
}
func (h *failRelease) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		send := make([]redis.Cmder, 0, len(cmds))
		var kept []redis.Cmder
		for _, c := range cmds {
			if a := c.Args(); len(a) > 1 && a[0] == "evalsha" && a[1] == limitReleaseScript.Hash() && h.fail.Load() > 0 {
				h.fail.Add(-1)
				kept = append(kept, c)
				continue
			}
			send = append(send, c)
		}
		err := next(ctx, send)
		h.count(send...)
		for _, c := range kept {
			c.SetErr(injectedReply("ERR injected: the release failed"))
		}
		return err
	}
}

// TestLimitFailedReleaseSendsOnlyTheRelease: when the release of a slot
// fails and its outcome was written, only the release is sent again: the
// job's result, progress, last error, wake-up of waiters, retry and dead
// letter are each written once. Before the fix the whole outcome was sent
// again with the release (its move found the job gone and counted as
// written, but the result, progress and the rest were written twice).
func TestLimitFailedReleaseSendsOnlyTheRelease(t *testing.T) {
	for _, c := range []struct {
		name    string
		handler func(context.Context, *Job, *handlerErrs) error
		check   func(t *testing.T, q *Queue, h *failRelease, id string)
	}{
		{"done", func(ctx context.Context, j *Job, errs *handlerErrs) error {
			errs.note(j.Progress(ctx, []byte("p1")))
			errs.note(j.Progress(ctx, []byte("p2"))) // pending: goes with the outcome
			errs.note(j.SetResult([]byte("r")))
			return nil
		}, func(t *testing.T, q *Queue, h *failRelease, id string) {
			require.Equal(t, 1, h.n("set", q.k.result(id)), "the result written once")
			require.Equal(t, 2, h.n("set", q.k.progress(id)), "the progress: once inline, once with the outcome")
			require.Equal(t, 1, h.n("evalsha", notifyScript.Hash()), "the waiters woken once")
			res, err := q.p.Client().Get(context.Background(), q.k.result(id)).Result()
			require.NoError(t, err)
			require.Equal(t, "r", res)
		}},
		{"retry", func(ctx context.Context, j *Job, _ *handlerErrs) error {
			if j.Attempt == 1 {
				return errTestFail
			}
			return nil
		}, func(t *testing.T, q *Queue, h *failRelease, id string) {
			require.Equal(t, 1, h.n("evalsha", retryScript.Hash()), "the retry scheduled once")
			require.Equal(t, 1, h.n("set", q.k.lastErr(id)), "its last error written once")
		}},
		{"dead", func(ctx context.Context, j *Job, _ *handlerErrs) error {
			return Permanent(errTestFail)
		}, func(t *testing.T, q *Queue, h *failRelease, id string) {
			require.Equal(t, 1, h.n("evalsha", deadScript.Hash()), "the dead letter written once")
			require.Equal(t, 1, h.n("evalsha", notifyScript.Hash()), "the waiters woken once")
			dead, err := q.Dead(context.Background(), 0, 10)
			require.NoError(t, err)
			require.Len(t, dead, 1)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := serverPool(t, pool.Config{})
			q := mustQueue(t, p, "lim-relonce", Config{})
			ctx := context.Background()
			// A warm script cache: the release is the only write that fails.
			require.NoError(t, loadScripts(ctx, p.Background()))
			h := &failRelease{sent: map[string]int{}}
			h.fail.Store(1)
			p.Background().AddHook(h)
			var errs handlerErrs
			w := startWorker(t, group(t), q, func(ctx context.Context, j *Job) error { return c.handler(ctx, j, &errs) }, WorkerConfig{
				Limit: Limit{Concurrency: 2}, ResultTTL: time.Minute,
				Backoff: func(int, error) time.Duration { return time.Millisecond },
			})
			id, err := q.Enqueue(ctx, []byte("x"))
			require.NoError(t, err)
			testutil.Eventually(t, testutil.Wait, "the outcome and its release written", func() bool {
				n, err := q.LimitInFlight(ctx)
				s := w.Stats()
				return err == nil && n == 0 && h.fail.Load() == 0 && s.AckErrors > 0 && s.InFlight == 0 && s.Busy == 0
			})
			require.Zero(t, w.Stats().LostLeases)
			require.NoError(t, errs.err())
			c.check(t, q, h, id)
		})
	}
}

// TestNoScriptOutcomeSendsItsWritesOnce: an outcome whose script Redis
// refused with NOSCRIPT (its script cache was flushed, by a restart say) is
// sent again at once with the scripts loaded, but the writes beside it that
// went through (its last error, progress and result) are not sent again.
// Before the fix the whole outcome was, so each of them was written twice.
func TestNoScriptOutcomeSendsItsWritesOnce(t *testing.T) {
	for _, c := range []struct {
		name  string
		fail  error
		check func(t *testing.T, q *Queue, h *failRelease, id string)
	}{
		{"retry", errTestFail, func(t *testing.T, q *Queue, h *failRelease, id string) {
			require.Equal(t, 1, h.n("set", q.k.lastErr(id)), "its last error written once")
			require.Equal(t, 1, h.n("evalsha", retryScript.Hash()), "the retry scheduled once")
		}},
		{"dead", Permanent(errTestFail), func(t *testing.T, q *Queue, h *failRelease, id string) {
			require.Equal(t, 2, h.n("set", q.k.progress(id)), "the progress: once inline, once with the outcome")
			require.Equal(t, 1, h.n("evalsha", deadScript.Hash()), "the dead letter written once")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := serverPool(t, pool.Config{})
			q := mustQueue(t, p, "noscript-once", Config{})
			ctx := context.Background()
			h := &failRelease{sent: map[string]int{}}
			p.Background().AddHook(h)
			var errs handlerErrs
			w := startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
				if j.Attempt > 1 {
					return nil
				}
				errs.note(j.Progress(ctx, []byte("p1")))
				errs.note(j.Progress(ctx, []byte("p2"))) // pending: goes with the outcome
				errs.note(q.p.Client().ScriptFlush(ctx).Err())
				return c.fail
			}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Hour }})
			id, err := q.Enqueue(ctx, []byte("x"))
			require.NoError(t, err)
			testutil.Eventually(t, testutil.Wait, "the outcome written", func() bool {
				s := w.Stats()
				return s.Retried+s.Dead == 1 && s.InFlight == 0
			})
			require.NoError(t, errs.err())
			c.check(t, q, h, id)
		})
	}
}
