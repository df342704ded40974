package queue

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// The crash gap of issue 13: a delayed job known only to a process that
// died (it took the wake marker) while every other worker last read an
// empty delayed set. Its announcement in the heartbeat set makes the
// survivors promote it within about one HeartbeatInterval of its due time,
// not when the dead process is detected (here HeartbeatTTL is a minute).
func TestDelayedJobKnownOnlyToACrashedProcessIsPromoted(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, newPool newPoolFunc) {
		p := newPool(t, pool.Config{})
		g := group(t)
		q := mustQueue(t, p, "orphan", Config{})
		ctx := context.Background()
		ran := make(chan string, 1)
		w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
			ran <- j.ID
			return nil
		}, WorkerConfig{BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 200 * time.Millisecond, HeartbeatTTL: time.Minute})
		testutil.Eventually(t, 10*time.Second, "the scheduler's first read", func() bool { return w.sched.reads.Load() > 0 })

		// What the crashed process left: the job in the delayed set
		// (its wake marker taken and gone with the process) and the
		// announcement its scheduler wrote when it read the job.
		due := time.Now().Add(300 * time.Millisecond)
		e := envelope{id: "orphan-1", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("x")}
		require.NoError(t, p.Client().ZAdd(ctx, q.k.delayed, redis.Z{Score: float64(due.UnixMilli()), Member: e.encode()}).Err())
		require.NoError(t, p.Client().ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(due.UnixMilli()), Member: dueMember(q.k.tag)}).Err())

		id := recv(t, ran, 5*time.Second, "the orphaned job, promoted by its announcement")
		require.Equal(t, "orphan-1", id)
		testutil.Eventually(t, 10*time.Second, "the announcement removed once nothing is delayed", func() bool {
			return p.Client().ZScore(ctx, heartbeatKey(q.cfg.Namespace), dueMember(q.k.tag)).Err() == redis.Nil
		})
		s := w.Stats()
		require.Zero(t, s.Recovered, "no consumer was swept")
	})
}

// A scheduler that learns of a delayed job from a wake marker announces its
// due time; the announcement follows the earliest job and goes when none is
// left; a sweep never takes an announcement for a consumer.
func TestSchedulerAnnouncesTheEarliestDueTime(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "announce", Config{})
	producer := mustQueue(t, p, "announce", Config{}) // another process's Queue: no local notify
	ctx := context.Background()
	ran := make(chan string, 4)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		ran <- string(j.Payload)
		return nil
	}, WorkerConfig{BlockTimeout: time.Second}, ConsumerConfig{HeartbeatInterval: 200 * time.Millisecond})
	hb := heartbeatKey(q.cfg.Namespace)
	score := func() float64 {
		v, err := p.Client().ZScore(ctx, hb, dueMember(q.k.tag)).Result()
		if err == redis.Nil {
			return -1
		}
		require.NoError(t, err)
		return v
	}
	first := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	_, err := producer.Enqueue(ctx, []byte("late"), At(first))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "announced", func() bool { return score() == float64(first.UnixMilli()) })

	soon := time.Now().Add(200 * time.Millisecond)
	_, err = producer.Enqueue(ctx, []byte("soon"), At(soon))
	require.NoError(t, err)
	require.Equal(t, "soon", recv(t, ran, 5*time.Second, "the earlier job"))
	testutil.Eventually(t, 10*time.Second, "the announcement moved on to the remaining job", func() bool { return score() == float64(first.UnixMilli()) })

	n, err := p.Client().SCard(ctx, q.k.consumers).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "no announcement became a consumer")
}
