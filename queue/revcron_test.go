package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// A bounded queue that is full when a worker takes an occurrence: the
// successor is enqueued anyway (like a retry, it is never refused), else
// the worker would hold a handler slot retrying until the queue drains and
// the schedule would stall. Schedule's first occurrence likewise.
func TestRevCronSuccessorBypassesMaxLen(t *testing.T) {
	f := newCronFleet(t, 1, Config{MaxLen: 1})
	ctx := context.Background()
	q := f.qs[0]
	_, err := q.Enqueue(ctx, []byte("filler"))
	require.NoError(t, err)
	require.NoError(t, q.Schedule(ctx, "tick", Every(time.Minute), nil), "the first occurrence is not refused")
	require.Len(t, f.pending(), 2)
	// A worker takes the occurrence (the filler keeps the queue full).
	c := q.p.Client()
	zs, err := c.ZRangeWithScores(ctx, q.k.delayed, 0, 0).Result()
	require.NoError(t, err)
	f.clock.Set(time.UnixMilli(int64(zs[0].Score)))
	require.NoError(t, c.ZRem(ctx, q.k.delayed, zs[0].Member).Err())
	_, err = q.Enqueue(ctx, []byte("filler2"))
	require.ErrorIs(t, err, ErrQueueFull, "the queue is full")
	env, err := decodeEnvelope([]byte(zs[0].Member.(string)))
	require.NoError(t, err)
	_, _, run, _, err := q.cronTake(ctx, env.id, env.enqueuedAt.UnixMilli(), env.deliveries, time.Minute, time.Second)
	require.NoError(t, err, "the successor of a taken occurrence is not refused as full")
	require.True(t, run)
	require.Contains(t, f.pending(), occurrenceID("tick", time.UnixMilli(int64(zs[0].Score)).Add(time.Minute).UnixMilli()))
}

// Two deploys with the same Version and different definitions: the
// registry must settle on one of them whatever the order of registration
// (the last writer winning makes every restart flip the schedule and reset
// its chain).
func TestRevCronEqualVersionsDeterministic(t *testing.T) {
	ctx := context.Background()
	specs := []string{Every(time.Minute), Every(2 * time.Minute)}
	var got []string
	for _, order := range [][]int{{0, 1}, {1, 0}} {
		f := newCronFleet(t, 2, Config{})
		for i, j := range order {
			err := f.qs[i].Schedule(ctx, "job", specs[j], nil, Version(7))
			if err != nil {
				require.ErrorIs(t, err, ErrScheduleSuperseded)
			}
		}
		d, err := f.qs[0].p.Client().HGet(ctx, f.qs[0].k.cron(), "d:job").Result()
		require.NoError(t, err)
		got = append(got, d)
	}
	require.Equal(t, got[0], got[1], "the same definition stands whatever the order")
}

// A worker whose clock is a few seconds ahead of the process that promoted
// an Every(1s) occurrence (or that takes it a few seconds late under load)
// must not count the occurrences of those seconds as missed: the
// occurrence runs, and none is skipped.
func TestRevCronClockSkewSkipsNothing(t *testing.T) {
	due := testutil.T0
	run, next := successor(every(time.Second), due, due.Add(3*time.Second), 1)
	require.True(t, run, "an occurrence taken 3s late (clock skew) runs")
	require.Equal(t, due.Add(time.Second), next, "and its successor is the next one, not a later one")
}

// A process whose clock is behind registers a changed definition: its
// first occurrence must come after the last one taken, else an occurrence
// that already ran (its ID released by its ack) runs again.
func TestRevCronBehindClockChangeDoesNotRerun(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	require.NoError(t, f.qs[0].Schedule(ctx, "job", Every(time.Minute), []byte("a"), Version(1)))
	ran, run := f.take(false)
	require.True(t, run)
	f.clock.Set(ran.Add(-30 * time.Second)) // process 1's clock is 30s behind
	require.NoError(t, f.qs[1].Schedule(ctx, "job", Every(time.Minute), []byte("b"), Version(2)))
	for _, id := range f.pending() {
		_, due, ok := parseOccurrence(id)
		require.True(t, ok)
		require.Greater(t, due, ran.UnixMilli(), "the occurrence due %s ran already; pending %v", ran, f.pending())
	}
}

// UniqueTTL shorter than an occurrence's wait in a backlog: its ID lapses
// and a re-registration enqueues a second copy of the pending occurrence.
// The two copies, taken while the first runs, must not both run (the
// second looks like a redelivery to the registry).
func TestRevCronLapsedIDCopyRunsOnce(t *testing.T) {
	m := redistest.Mini(t)
	clock := testutil.NewClock()
	var qs []*Queue
	for range 2 {
		p := mustPool(t, pool.Config{Addrs: []string{m.Addr()}})
		qs = append(qs, mustQueue(t, p, "cron", Config{Now: clock.Now, UniqueTTL: time.Second}))
	}
	ctx := context.Background()
	require.NoError(t, qs[0].Schedule(ctx, "job", Every(time.Minute), nil))
	// The occurrence waits in a backlog 5s past its due time: its ID lapses.
	clock.Advance(time.Minute + 5*time.Second)
	m.FastForward(time.Minute + 5*time.Second)
	require.NoError(t, qs[1].Schedule(ctx, "job", Every(time.Minute), nil)) // a process restarts
	c := qs[0].p.Client()
	elems, err := c.ZRange(ctx, qs[0].k.delayed, 0, -1).Result()
	require.NoError(t, err)
	ready, err := c.LRange(ctx, qs[0].k.ready, 0, -1).Result()
	require.NoError(t, err)
	for _, e := range ready {
		if e != wakeMarker {
			elems = append(elems, e)
		}
	}
	require.Len(t, elems, 2, "the lapsed ID let a second copy in")
	runs := 0
	for i, e := range elems { // two workers take the copies at once
		env, err := decodeEnvelope([]byte(e))
		require.NoError(t, err)
		_, _, run, _, err := qs[i%2].cronTake(ctx, env.id, env.enqueuedAt.UnixMilli(), env.deliveries, time.Minute, time.Second)
		require.NoError(t, err)
		if run {
			runs++
		}
	}
	require.Equal(t, 1, runs, "copies %d, runs %d", len(elems), runs)
}

// A daily 01:30 in a zone that repeats 01:00-02:00 (New York, 2026-11-01)
// runs once that day, as cron does; a spec with a wildcard hour runs at
// every real hour, both passes included.
func TestRevCronDSTRepeatedHourOnce(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	occ, err := scheduleDef{Spec: "30 1 * * *", Zone: "America/New_York"}.parse()
	require.NoError(t, err)
	first := occ.Next(time.Date(2026, 10, 31, 12, 0, 0, 0, ny))
	require.Equal(t, time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC), first.UTC())
	require.Equal(t, time.Date(2026, 11, 2, 6, 30, 0, 0, time.UTC), occ.Next(first).UTC(), "not again at 01:30 EST")

	occ, err = scheduleDef{Spec: "30 * * * *", Zone: "America/New_York"}.parse()
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC), occ.Next(first).UTC(), "hourly runs in both passes")
}

// NoOverlap holds while the previous run waits to retry: a retry delay
// longer than the run marker's TTL (job timeout + heartbeat) must not let
// the next occurrence start beside it.
func TestRevCronNoOverlapHoldsThroughRetryDelay(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "cron-retry", Config{})
	g := lifecycle.New()
	c := newConsumer(t, q)
	failed := make(chan struct{}, 1)
	w, err := NewWorker(c, q, func(_ context.Context, j *Job) error {
		if j.Attempt == 1 {
			select {
			case failed <- struct{}{}:
			default:
			}
			return errors.New("first attempt fails")
		}
		return nil
	}, WorkerConfig{Concurrency: 1, BlockTimeout: time.Second, Backoff: func(int, error) time.Duration { return time.Hour }})
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, g.Close(cctx))
	}()
	require.NoError(t, q.Schedule(ctx, "tick", Every(time.Second), nil, NoOverlap(), JobTimeout(2*time.Second)))
	recv(t, failed, 30*time.Second, "a failed first attempt")
	testutil.Eventually(t, 10*time.Second, "the marker outlives the retry delay", func() bool {
		d, err := p.Client().PTTL(ctx, q.k.cronRun("tick")).Result()
		return err == nil && d > 30*time.Minute
	})
}

// A deploy changes the payload but not the spec: the new definition's
// first occurrence is the pending one (same ID), which must run with the
// new payload, not the old one it was enqueued with.
func TestRevCronPayloadChangeTakesEffect(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	require.NoError(t, f.qs[0].Schedule(ctx, "job", Every(time.Minute), []byte("old"), Version(1)))
	require.NoError(t, f.qs[1].Schedule(ctx, "job", Every(time.Minute), []byte("new"), Version(2)))
	q := f.qs[0]
	zs, err := q.p.Client().ZRangeWithScores(ctx, q.k.delayed, 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, zs, 1)
	f.clock.Set(time.UnixMilli(int64(zs[0].Score)))
	env, err := decodeEnvelope([]byte(zs[0].Member.(string)))
	require.NoError(t, err)
	_, _, run, def, err := q.cronTake(ctx, env.id, env.enqueuedAt.UnixMilli(), env.deliveries, time.Minute, time.Second)
	require.NoError(t, err)
	require.True(t, run)
	require.Equal(t, "new", string(def.Payload), "the handler gets the registered payload")
}
