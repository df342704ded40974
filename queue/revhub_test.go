package queue

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestRingHandedOnAtMemoryLimit: the rings a fetch hub hands on (a ring
// popped for a worker that left, and the watched bells of a BZPOPMIN cut by
// Close) must reach Redis at maxmemory too. Ringing is a ZADD, which Redis
// refuses at the limit when it is a script's first write (ringScript) or a
// plain command (the hub's re-ring): the ring was lost, and with no
// producer able to push at the limit, the queue's ready jobs waited for a
// ring that never came while every consumer slept.
func TestRingHandedOnAtMemoryLimit(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	q := mustQueue(t, p, "stranded", Config{})
	for range 3 {
		_, err := q.Enqueue(ctx, []byte("job"))
		require.NoError(t, err)
	}
	// The ring of those jobs was popped by a hub (and lost with it).
	require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())

	// A consumer of another queue: its hub is the one handing q's ring on.
	g := group(t)
	w := startWorker(t, g, mustQueue(t, p, "other", Config{}), func(context.Context, *Job) error { return nil },
		WorkerConfig{Concurrency: 1, BlockTimeout: time.Second})
	testutil.Eventually(t, testutil.Wait, "the other worker idle", func() bool { return w.Stats().FetcherState == "blocking" })
	fillToLimit(t, srv, mustQueue(t, p, "filler", Config{}))
	// Well past the limit, so that no small write slips under it.
	_, err := srv.Do(ctx, "CONFIG", "SET", "maxmemory", "1mb")
	require.NoError(t, err)

	rung := func() bool {
		n, err := p.Client().Exists(ctx, q.k.bell).Result()
		require.NoError(t, err)
		return n == 1
	}
	atLimit := func() {
		t.Helper()
		require.True(t, isOOM(p.Client().ZAdd(ctx, q.k.bell, redis.Z{Member: "probe"}).Err()), "Redis refuses a ZADD: at the limit")
	}
	// Close cut the hub's BZPOPMIN, which watched q's bell.
	atLimit()
	w.hub.handOn(ctx, []string{q.k.bell})
	require.True(t, rung(), "the bell of a queue holding jobs is rung again at the limit (handOn)")

	require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())
	// The hub popped q's ring; q's worker had left.
	atLimit()
	w.hub.rang(ctx, q.k.bell)
	require.True(t, rung(), "a ring popped for a worker that left is rung again at the limit (rang)")
}

// TestUnreadPayloadDoesNotWaitForARing: a job whose payload (kept apart)
// could not be read stays in the worker's processing list for its next
// reconcile. The fetcher then had free slots and waited for a ring of the
// doorbell before it reconciled: with no other enqueue, the job never ran
// (before the doorbell, a blocking BLMOVE returned within BlockTimeout).
func TestUnreadPayloadDoesNotWaitForARing(t *testing.T) {
	bothPools(t, func(t *testing.T, np newPoolFunc) {
		p := np(t, pool.Config{})
		ctx := context.Background()
		q := mustQueue(t, p, "unread", Config{})
		big := make([]byte, inlineMax+1)
		_, err := q.Enqueue(ctx, big)
		require.NoError(t, err)
		// The payloads hash unreadable for a while: HGET fails (WRONGTYPE).
		require.NoError(t, p.Client().Rename(ctx, q.k.payloads, q.k.payloads+":saved").Err())
		require.NoError(t, p.Client().Set(ctx, q.k.payloads, "not a hash", 0).Err())
		// The fetcher takes once when it starts, ring or not: no ring is
		// left over to wake it again.
		require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())

		ran := make(chan int, 1)
		g := group(t)
		w := startWorker(t, g, q, func(_ context.Context, j *Job) error { ran <- len(j.Payload); return nil },
			WorkerConfig{Concurrency: 2, BlockTimeout: time.Second})
		testutil.Eventually(t, testutil.Wait, "a payload read failed", func() bool { return w.Stats().FetchErrors > 0 })
		require.NoError(t, p.Client().Del(ctx, q.k.payloads).Err())
		require.NoError(t, p.Client().Rename(ctx, q.k.payloads+":saved", q.k.payloads).Err())

		require.Equal(t, len(big), testutil.Recv(t, ran, "the job, once its payload can be read, without another enqueue"))
	})
}
