package queue

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Tail's doc: it returns nil when ctx ends. A ctx that ends in fn (as
// boundedctl tail --count does) just when the registration is due for
// renewal must not turn into a renewal error.
func TestTailCtxEndsAtRenewal(t *testing.T) {
	p := miniPool(t, pool.Config{})
	clock := testutil.NewClock()
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	in.now = clock.Now
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- in.Tail(ctx, []string{"q"}, func(TailEvent) {
			clock.Advance(tailTTL) // the renewal is due
			cancel()               // and the caller has had enough
		})
	}()
	testutil.Eventually(t, 10*time.Second, "the follower registered", func() bool {
		n, err := p.Client().ZCard(context.Background(), tailsKey("bq")).Result()
		return err == nil && n == 1
	})
	msg, err := json.Marshal([]TailEvent{{Queue: "q", ID: "x", Outcome: "done"}})
	require.NoError(t, err)
	require.NoError(t, p.Client().Publish(context.Background(), newKeys("bq", "q").tailChannel(), msg).Err())
	require.NoError(t, testutil.Recv(t, done, "Tail to return"))
}

// More live registrations than a heartbeat reads (MaxTailQueues*10: here
// eleven followers of 100 queues each, the first ten registered earlier)
// must not leave a follower unseen while Tail runs as if it followed: the
// worker learns of it, or Tail says at once why it cannot follow.
func TestTailManyFollowers(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "tailed", Config{})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	// Ten other followers, whose registrations expire a little before the
	// new one's.
	until := float64(time.Now().Add(tailTTL - 2*time.Second).UnixMilli())
	zs := make([]redis.Z, 0, MaxTailQueues*10)
	for f := range 10 {
		for i := range MaxTailQueues {
			zs = append(zs, redis.Z{Score: until, Member: "other" + strconv.Itoa(i) + " f" + strconv.Itoa(f)})
		}
	}
	require.NoError(t, p.Client().ZAdd(ctx, tailsKey("bq"), zs...).Err())

	g := group(t)
	cc := ConsumerConfig{HeartbeatInterval: MinHeartbeatInterval, HeartbeatTTL: time.Second}
	w := startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{}, cc)
	tl := startTail(in, "tailed")
	defer tl.cancel()
	deadline := time.Now().Add(5 * time.Second) // 50 heartbeats
	for !w.tail.on.Load() {
		select {
		case err := <-tl.done:
			require.Error(t, err, "Tail returned nil before its ctx ended")
			require.ErrorContains(t, err, "followers")
			return
		case <-time.After(10 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "Tail runs, but no heartbeat sees its registration among %d others", len(zs))
	}
	require.NoError(t, tl.stop(t))
}

// TailEvent.Error's doc: at most 512 bytes. A long error of multi-byte
// runes is cut to that, between runes.
func TestTailEventErrorBounded(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "long", Config{})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	g := group(t)
	cc := ConsumerConfig{HeartbeatInterval: MinHeartbeatInterval, HeartbeatTTL: time.Second}
	long := strings.Repeat("é", 1000) // 2000 bytes
	w := startWorker(t, g, q, func(context.Context, *Job) error { return errors.New(long) },
		WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }}, cc)
	tl := startTail(in, "long")
	defer tl.cancel()
	testutil.Eventually(t, 10*time.Second, "the worker to learn of the follower", w.tail.on.Load)
	_, err = q.Enqueue(ctx, []byte("x"), MaxAttempts(2))
	require.NoError(t, err)
	for _, outcome := range []string{"retry", "dead"} {
		ev := testutil.Recv(t, tl.events, outcome)
		require.Equal(t, outcome, ev.Outcome)
		require.LessOrEqual(t, len(ev.Error), 512, "%s: %d bytes", outcome, len(ev.Error))
		require.NotContains(t, ev.Error, "\uFFFD", "%s: cut inside a rune", outcome)
		require.Contains(t, ev.Error, "éé") // the dead reason starts with "attempt 2 of 2 failed: "
	}
	require.NoError(t, tl.stop(t))
}

// Following is for watching: a tails key the heartbeat cannot read (here
// another type at its name) must not fail the heartbeat, which finds the
// dead consumers whose jobs it recovers.
func TestUnreadableTailsKeyKeepsRecovery(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "tailsbroken", Config{})
	c := p.Client()
	require.NoError(t, c.Set(ctx, tailsKey("bq"), "not a sorted set", 0).Err())
	g := group(t)
	ran := make(chan string, 4)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error { ran <- j.ID; return nil },
		WorkerConfig{}, ConsumerConfig{HeartbeatInterval: MinHeartbeatInterval})
	// The consumer dies after the worker started: only the heartbeat finds it.
	ghost(t, c, q, "ghost", time.Now().Add(-time.Second), "late")
	require.Equal(t, "late", testutil.Recv(t, ran, "the dead consumer's job recovered by a heartbeat"))
}

// Once its ctx ended, Tail calls fn no more, also for the rest of a message
// that carries several outcomes.
func TestTailNoCallAfterCtxEnds(t *testing.T) {
	p := miniPool(t, pool.Config{})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- in.Tail(ctx, []string{"q"}, func(TailEvent) { calls++; cancel() })
	}()
	testutil.Eventually(t, 10*time.Second, "the follower registered", func() bool {
		n, err := p.Client().ZCard(context.Background(), tailsKey("bq")).Result()
		return err == nil && n == 1
	})
	msg, err := json.Marshal(make([]TailEvent, 5))
	require.NoError(t, err)
	require.NoError(t, p.Client().Publish(context.Background(), newKeys("bq", "q").tailChannel(), msg).Err())
	require.NoError(t, testutil.Recv(t, done, "Tail to return"))
	require.Equal(t, 1, calls, "fn called after ctx ended")
}
