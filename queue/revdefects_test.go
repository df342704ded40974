package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
	reads := &countReads{key: q.k.result("twice")}
	pr.p.Client().AddHook(reads)
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
	// Its first read pins the second job's run (a Wait that reads only
	// after the job ended is not pinned).
	testutil.Eventually(t, testutil.Wait, "Wait's first read", func() bool { return reads.n.Load() >= 1 })
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

// replyBytes records the largest reply to a GET-like read of key a client
// sent in a pipeline.
type replyBytes struct {
	key string
	max atomic.Int64
	n   atomic.Int64
}

func (h *replyBytes) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *replyBytes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *replyBytes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if a := c.Args(); len(a) >= 2 && a[1] == h.key {
				if s, ok := c.(*redis.StringCmd); ok {
					h.n.Add(1)
					if l := int64(len(s.Val())); l > h.max.Load() {
						h.max.Store(l)
					}
				}
			}
		}
		return err
	}
}

// TestWaitDoesNotReadADebouncedPayload: Wait reads who holds the ID (to
// pin its job's run), and a debounced job's idempotency key holds its
// element, payload inline whatever its size. Wait needs the first bytes
// only (a run stamp, or the element's version prefix): it must not fetch
// the payload on each read.
func TestWaitDoesNotReadADebouncedPayload(t *testing.T) {
	ctx := context.Background()
	pr := newCtlProcess(t, miniPools(t), "waitdeb", Config{})
	q, c := pr.q, pr.p.Client()
	reads := &replyBytes{key: q.k.unique("deb")}
	c.AddHook(reads)
	_, err := q.Enqueue(ctx, make([]byte, 256<<10), ID("deb"), Debounce(), Delay(time.Hour))
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := q.Wait(wctx, "deb"); done <- err }()
	testutil.Eventually(t, testutil.Wait, "Wait's read", func() bool { return reads.n.Load() >= 1 })
	cancel()
	require.ErrorIs(t, testutil.Recv(t, done, "Wait"), context.Canceled)
	require.Less(t, reads.max.Load(), int64(1<<10), "Wait read the debounced job's payload")
}
