package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A Durable partitioned job is in its partition on the replica when
// Enqueue returns (due now, and delayed); the partition's bounds and the ID
// option hold as without Durable, and a refusal writes nothing.
func TestPartitionDurable(t *testing.T) {
	master, replica := replicated(t)
	p := mustPool(t, pool.Config{Addrs: []string{master.Addr()}, ReadTimeout: 15 * time.Second})
	q := mustQueue(t, p, "jobs", Config{MaxPartitionLen: 2})
	ctx := context.Background()
	on := func(r interface {
		Do(context.Context, ...string) (string, error)
	}, args ...string) string {
		v, err := r.Do(ctx, args...)
		require.NoError(t, err)
		return v
	}
	dur := Durable(1, 10*time.Second)

	_, err := q.Enqueue(ctx, []byte("now"), Partition("a"), dur)
	require.NoError(t, err)
	require.Equal(t, "1", on(replica, "ZCARD", q.k.fair()), "in the fair set on the replica when Enqueue returns")
	require.Equal(t, "1", on(replica, "HGET", q.k.partLen(), "a"))

	id, err := q.Enqueue(ctx, []byte("later"), Partition("a"), dur, Delay(time.Hour), ID("d1"))
	require.NoError(t, err)
	require.Equal(t, "d1", id)
	require.Equal(t, "1", on(replica, "ZCARD", q.k.delayed))
	require.Equal(t, "2", on(replica, "HGET", q.k.partLen(), "a"), "a delayed job counts from its enqueue")
	_, err = q.Enqueue(ctx, []byte("later"), Partition("a"), dur, Delay(time.Hour), ID("d1"))
	require.ErrorIs(t, err, ErrDuplicate)

	_, err = q.Enqueue(ctx, []byte("over"), Partition("a"), dur)
	require.ErrorIs(t, err, ErrPartitionFull)
	require.ErrorIs(t, err, ErrQueueFull)
	require.Equal(t, "1", on(master, "ZCARD", q.k.fair()), "nothing written by the refusal")
	require.Equal(t, "2", on(master, "HGET", q.k.partLen(), "a"))
	checkPartCounts(t, q)

	// Without a replica: written on the master, in its partition.
	require.NoError(t, replica.Stop())
	id, err = q.Enqueue(ctx, []byte("alone"), Partition("b"), Durable(1, 50*time.Millisecond))
	require.ErrorIs(t, err, ErrNotReplicated)
	require.NotEmpty(t, id)
	require.Equal(t, "2", on(master, "ZCARD", q.k.fair()))
	checkPartCounts(t, q)
	require.ElementsMatch(t, []string{"now", "alone"}, takeFor(t, q, "c1", 10))
}

// startedParts returns a started queue whose waiters never recheck on
// their own: only a wake-up moves them.
func startedParts(t *testing.T, np newPoolFunc, name string, cfg Config) *Queue {
	t.Helper()
	q := mustQueue(t, np(t, pool.Config{}), name, cfg)
	q.recheck = time.Hour
	require.NoError(t, q.Start(group(t)))
	testutil.Eventually(t, testutil.Wait, "the room subscriber", func() bool { return q.room.Load().subscribed.Load() })
	return q
}

func waitingPartEnqueue(q *Queue, ctx context.Context, payload, part string) <-chan enqueueResult {
	done := make(chan enqueueResult, 1)
	go func() {
		id, err := q.Enqueue(ctx, []byte(payload), Partition(part), WaitForRoom())
		done <- enqueueResult{id, err}
	}()
	return done
}

// waitingOn counts the producers of q waiting for room of kind on.
func waitingOn(q *Queue, on string) int {
	r := q.room.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.list {
		if w.on == on {
			n++
		}
	}
	return n
}

// waitMarked waits for a producer of q to wait for room of kind on, and
// for its mark in Redis: a waiter is registered before the try that marks
// it, and a take between the two would find no mark (the try then finds
// the room itself).
func waitMarked(t *testing.T, q *Queue, on string) {
	t.Helper()
	ctx := context.Background()
	testutil.Eventually(t, testutil.Wait, "the producer to wait, marked", func() bool {
		if waitingOn(q, on) != 1 {
			return false
		}
		if on == roomLen {
			n, err := q.p.Client().Exists(ctx, q.k.waitersKey()).Result()
			return err == nil && n == 1
		}
		ok, err := q.p.Client().HExists(ctx, q.k.partWaiters(), on).Result()
		return err == nil && ok
	})
}

// takeWaking is the worker's take (takeKeys, and the room channel that
// partWake publishes on).
func takeWaking(t *testing.T, q *Queue, n int) []string {
	t.Helper()
	elems, err := takeScript.Run(context.Background(), q.p.Client(), q.k.takeKeys(q.k.proc("c1")), n, q.k.roomChannel()).StringSlice()
	require.NoError(t, err)
	var out []string
	for _, el := range elems {
		e, err := decodeEnvelope([]byte(el))
		require.NoError(t, err)
		out = append(out, string(e.payload))
	}
	return out
}

// A producer refused for a full partition, and one refused for
// MaxPartitions, wait; the take that frees a place in the partition and
// ends a partition wakes them (by a message: their recheck is an hour).
func TestPartitionWaitForRoomIsWokenByATake(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionWaitForRoomTake(t, np) })
	}
}

func testPartitionWaitForRoomTake(t *testing.T, np newPoolFunc) {
	ctx := context.Background()
	q := startedParts(t, np, "pwait", Config{MaxPartitions: 2, MaxPartitionLen: 2})
	for _, j := range []struct{ part, payload string }{{"a", "a1"}, {"a", "a2"}, {"b", "b1"}} {
		_, err := q.Enqueue(ctx, []byte(j.payload), Partition(j.part))
		require.NoError(t, err)
	}
	a := waitingPartEnqueue(q, ctx, "a3", "a")
	c := waitingPartEnqueue(q, ctx, "c1", "c")
	// A waiter is registered before its marking try: wait for both.
	testutil.Eventually(t, testutil.Wait, "both producers to wait, marked by their refusals", func() bool {
		marks, err := q.p.Client().HGetAll(ctx, q.k.partWaiters()).Result()
		return err == nil && waitingOn(q, "a") == 1 && waitingOn(q, roomNewPart) == 1 &&
			marks["a"] == "2" && marks[roomNewPart] == "2" && len(marks) == 2
	})
	ttl, err := q.p.Client().PTTL(ctx, q.k.partWaiters()).Result()
	require.NoError(t, err)
	require.Positive(t, ttl, "the marks expire")

	// One job of each partition: a has room for one, b is gone.
	require.ElementsMatch(t, []string{"a1", "b1"}, takeWaking(t, q, 2))
	require.NoError(t, testutil.Recv(t, a, "the producer of partition a").err)
	require.NoError(t, testutil.Recv(t, c, "the producer of a new partition").err)
	require.NotZero(t, q.room.Load().wakes.Load(), "woken by a message")
	require.Zero(t, q.room.Load().count())
	checkPartCounts(t, q)
	require.ElementsMatch(t, []string{"a2", "c1", "a3"}, takeWaking(t, q, 10))
}

// Through workers, plain and limited (their takes are two scripts): a
// producer waiting for room in a full partition is woken by the take of
// the partition's job, and its job runs.
func TestPartitionWaitForRoomThroughWorker(t *testing.T) {
	for name, limit := range map[string]Limit{"plain": {}, "limited": {PartitionConcurrency: 5}} {
		t.Run(name, func(t *testing.T) { testPartitionWaitForRoomWorker(t, serverPool, limit) })
	}
}

func testPartitionWaitForRoomWorker(t *testing.T, np newPoolFunc, limit Limit) {
	ctx := context.Background()
	q := startedParts(t, np, "pwaitw", Config{MaxPartitionLen: 1})
	_, err := q.Enqueue(ctx, []byte("a1"), Partition("a"))
	require.NoError(t, err)
	done := waitingPartEnqueue(q, ctx, "a2", "a")
	waitMarked(t, q, "a")
	ran := make(chan string, 2)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		ran <- string(j.Payload)
		return nil
	}, WorkerConfig{Concurrency: 1, Limit: limit})
	require.NoError(t, testutil.Recv(t, done, "the waiting producer").err)
	require.NotZero(t, q.room.Load().wakes.Load(), "woken by a message")
	require.ElementsMatch(t, []string{"a1", "a2"}, []string{testutil.Recv(t, ran, "a1"), testutil.Recv(t, ran, "a2")})
}

// A partitioned producer refused for the queue's MaxLen waits as an
// unpartitioned one does, woken by the consumers' drain.
func TestPartitionWaitForRoomUnderMaxLen(t *testing.T) {
	ctx := context.Background()
	q := startedParts(t, serverPool, "pwaitlen", Config{MaxLen: 2})
	for _, p := range []string{"a", "b"} {
		_, err := q.Enqueue(ctx, []byte(p), Partition(p))
		require.NoError(t, err)
	}
	done := waitingPartEnqueue(q, ctx, "c", "c")
	waitMarked(t, q, roomLen)
	ran := make(chan string, 3)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		ran <- string(j.Payload)
		return nil
	}, WorkerConfig{Concurrency: 1})
	require.NoError(t, testutil.Recv(t, done, "the waiting producer").err)
	require.NotZero(t, q.room.Load().wakes.Load(), "woken by a message")
	for range 3 {
		testutil.Recv(t, ran, "a job to run")
	}
}

// A waiting producer whose ctx ends returns at once with an error naming
// both, and writes nothing; MaxWaiters bounds the producers waiting; a
// batch larger than MaxPartitionLen never fits and does not wait.
func TestPartitionWaitForRoomFailures(t *testing.T) {
	ctx := context.Background()
	q := startedParts(t, miniPool, "pwaitf", Config{MaxPartitionLen: 1, MaxWaiters: 1})
	_, err := q.Enqueue(ctx, []byte("a1"), Partition("a"))
	require.NoError(t, err)

	cctx, cancel := context.WithCancel(ctx)
	done := waitingPartEnqueue(q, cctx, "a2", "a")
	waitMarked(t, q, "a")

	_, err = q.Enqueue(ctx, []byte("a3"), Partition("a"), WaitForRoom())
	require.ErrorIs(t, err, ErrTooManyWaiters)
	require.ErrorIs(t, err, ErrPartitionFull)
	require.ErrorIs(t, err, ErrQueueFull)

	cancel()
	res := testutil.Recv(t, done, "the cancelled producer")
	require.ErrorIs(t, res.err, context.Canceled)
	require.ErrorIs(t, res.err, ErrPartitionFull)
	require.ErrorIs(t, res.err, ErrQueueFull)
	require.ErrorContains(t, res.err, "waiting for room")
	require.Zero(t, q.room.Load().count())
	checkPartCounts(t, q)
	n, err := q.p.Client().ZCard(ctx, q.k.fair()).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "nothing written")

	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("b1"), []byte("b2")}, Partition("b"), WaitForRoom())
	require.ErrorIs(t, err, ErrPartitionFull, "two jobs never fit a partition of one")
	require.Zero(t, q.room.Load().count())

	// Not started: nobody would wake it.
	u := mustQueue(t, q.p, "pwaitf", Config{MaxPartitionLen: 1})
	_, err = u.Enqueue(ctx, []byte("a2"), Partition("a"), WaitForRoom())
	require.ErrorIs(t, err, ErrNotStarted)
	require.ErrorIs(t, err, ErrPartitionFull)
}

// The subscriber's reading of the room channel, and the waking of the
// waiters of one kind only.
func TestRoomMessages(t *testing.T) {
	for msg, want := range map[string]struct {
		on string
		n  int
	}{
		"3":       {roomLen, 3},
		"n 2":     {roomNewPart, 2},
		"p 4 t-1": {"t-1", 4},
		"p 0 a":   {"", -1},
		"p 1 a b": {"", -1},
		"x":       {"", -1},
		"-1":      {"", -1},
	} {
		on, n := parseRoom(msg)
		require.Equal(t, want.on, on, msg)
		require.Equal(t, want.n, n, msg)
	}
	r := &waiters{max: 10, recheck: time.Hour}
	a, _, err := r.add(0, "a")
	require.NoError(t, err)
	l, _, err := r.add(0, roomLen)
	require.NoError(t, err)
	a2, _, err := r.add(0, "a")
	require.NoError(t, err)
	r.wake("a", 1)
	requireClosed(t, a.ch, true)
	requireClosed(t, l.ch, false)
	requireClosed(t, a2.ch, false)
	r.wake("b", -1)
	require.Equal(t, 2, r.count())
	r.wakeAll()
	requireClosed(t, l.ch, true)
	requireClosed(t, a2.ch, true)
}

func requireClosed(t *testing.T, ch chan struct{}, closed bool) {
	t.Helper()
	select {
	case <-ch:
		require.True(t, closed, "woken")
	default:
		require.False(t, closed, "not woken")
	}
}

// The cost of partWake: a take of partitioned jobs while no producer
// waits costs one command more (an HMGET) than the same take without the
// room channel (no wake-up), and publishes nothing; a take of an
// unpartitioned job costs nothing more.
func TestPartitionTakeWakeCost(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "pwcost", Config{})
	ctx := context.Background()
	require.NoError(t, takeScript.Load(ctx, p.Client()).Err())
	take := func(part string, wake bool) map[string]int64 {
		require.NoError(t, p.Client().FlushAll(ctx).Err())
		require.NoError(t, takeScript.Load(ctx, p.Client()).Err())
		var opts []EnqueueOption
		if part != "" {
			opts = append(opts, Partition(part))
		}
		_, err := q.Enqueue(ctx, []byte("j"), opts...)
		require.NoError(t, err)
		args := []any{1}
		if wake {
			args = append(args, q.k.roomChannel())
		}
		_, err = srv.Do(ctx, "CONFIG", "RESETSTAT")
		require.NoError(t, err)
		took, err := takeScript.EvalSha(ctx, p.Client(), q.k.takeKeys(q.k.proc("c1")), args...).StringSlice()
		require.NoError(t, err)
		require.Len(t, took, 1)
		st, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return st
	}
	total := func(st map[string]int64) int64 { return redistest.TotalCalls(st, "config|resetstat", "config") }
	with, without := take("a", true), take("a", false)
	require.Equal(t, total(without)+1, total(with), "with %v, without %v", with, without)
	require.Equal(t, without["hmget"]+1, with["hmget"])
	require.Zero(t, with["publish"])
	require.Equal(t, total(take("", false)), total(take("", true)), "an unpartitioned take")
}

// A debounced job counts in its partition while delayed and lands in it
// when it fires; its replacement takes its place (never refused for room,
// even in a full partition) and keeps its partition: one naming another
// partition, or none, is refused. A new debounced job is refused for room
// as any partitioned job, writing nothing.
func TestPartitionDebounce(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, newPool newPoolFunc) {
		p := newPool(t, pool.Config{})
		clock := testutil.NewClock()
		q := mustQueue(t, p, "pdeb", Config{Now: clock.Now, MaxPartitions: 2, MaxPartitionLen: 2})
		ctx := context.Background()
		t0 := clock.Now()

		_, err := q.Enqueue(ctx, []byte("a"), ID("d"), Debounce(), Delay(time.Minute), Partition("t"))
		require.NoError(t, err)
		checkPartCounts(t, q)
		clock.Advance(10 * time.Second)
		_, err = q.Enqueue(ctx, []byte("b"), ID("d"), Debounce(), Delay(time.Minute), Partition("t"))
		require.NoError(t, err)
		require.Equal(t, map[string]int64{"b": t0.Add(70 * time.Second).UnixMilli()}, delayedPayloads(t, p, q))
		checkPartCounts(t, q)

		_, err = q.Enqueue(ctx, []byte("x"), Partition("t"))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("c"), ID("d"), ReplacePayload(), Delay(time.Hour), Partition("t"))
		require.NoError(t, err, "a replacement in a full partition takes its job's place")
		require.Equal(t, map[string]int64{"c": t0.Add(70 * time.Second).UnixMilli()}, delayedPayloads(t, p, q))
		checkPartCounts(t, q)

		_, err = q.Enqueue(ctx, []byte("e"), ID("e"), Debounce(), Delay(time.Minute), Partition("t"))
		require.ErrorIs(t, err, ErrPartitionFull)
		require.ErrorIs(t, err, ErrQueueFull)
		_, err = q.Enqueue(ctx, []byte("f"), ID("f"), Debounce(), Delay(time.Minute), Partition("u"))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("g"), ID("g"), Debounce(), Delay(time.Minute), Partition("v"))
		require.ErrorIs(t, err, ErrTooManyPartitions)
		for _, id := range []string{"e", "g"} {
			n, err := p.Client().Exists(ctx, q.k.unique(id)).Result()
			require.NoError(t, err)
			require.Zero(t, n, "a refusal holds no ID")
		}

		_, err = q.Enqueue(ctx, []byte("y"), ID("d"), Debounce(), Delay(time.Minute), Partition("u"))
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, `the delayed job d is in partition "t" and this enqueue names partition "u"`)
		_, err = q.Enqueue(ctx, []byte("y"), ID("d"), Debounce(), Delay(time.Minute))
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, "names no partition")
		_, err = q.Enqueue(ctx, []byte("p"), ID("p"), Debounce(), Delay(time.Minute))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("y"), ID("p"), Debounce(), Delay(time.Minute), Partition("u"))
		require.ErrorContains(t, err, "is in no partition")
		require.Equal(t, map[string]int64{"c": t0.Add(70 * time.Second).UnixMilli(), "f": t0.Add(70 * time.Second).UnixMilli(),
			"p": t0.Add(70 * time.Second).UnixMilli()}, delayedPayloads(t, p, q), "the refused replacements changed nothing")
		checkPartCounts(t, q)

		// They fire into their partitions.
		clock.Advance(time.Hour)
		res, err := promoteScript.Run(ctx, p.Client(), q.k.promoteKeys(), clock.Now().UnixMilli(), 100, "0").Int64Slice()
		require.NoError(t, err)
		require.Equal(t, int64(3), res[0])
		checkPartCounts(t, q)
		parts := map[string]string{}
		elems, err := takeScript.Run(ctx, p.Client(), q.k.takeKeys(q.k.proc("c1")), 10).StringSlice()
		require.NoError(t, err)
		for _, el := range elems {
			if e, err := decodeEnvelope([]byte(el)); err == nil {
				parts[string(e.payload)] = e.part
			}
		}
		require.Equal(t, map[string]string{"x": "t", "c": "t", "f": "u", "p": ""}, parts)
	})
}

// A debounced partitioned job refused for room waits with WaitForRoom,
// and the take that frees the room wakes it.
func TestPartitionDebounceWaitsForRoom(t *testing.T) {
	ctx := context.Background()
	q := startedParts(t, miniPool, "pdebw", Config{MaxPartitionLen: 1})
	_, err := q.Enqueue(ctx, []byte("a1"), Partition("a"))
	require.NoError(t, err)
	done := make(chan enqueueResult, 1)
	go func() {
		id, err := q.Enqueue(ctx, []byte("a2"), Partition("a"), ID("deb"), Debounce(), Delay(time.Hour), WaitForRoom())
		done <- enqueueResult{id, err}
	}()
	waitMarked(t, q, "a")
	require.Equal(t, []string{"a1"}, takeWaking(t, q, 1))
	res := testutil.Recv(t, done, "the debounced producer")
	require.NoError(t, res.err)
	require.Equal(t, "deb", res.id)
	require.Contains(t, delayedPayloads(t, q.p, q), "a2")
	checkPartCounts(t, q)
}

// JobPartition puts every occurrence of a schedule in its partition: a bad
// key is refused at Schedule (JobPriority with it is not:
// TestPartitionPriorityOfSchedules); like a retry (and
// as under MaxLen), an occurrence is never refused for room; the worker
// that runs one enqueues the next in the partition too.
func TestPartitionOfSchedules(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "cronparts", Config{MaxPartitions: 1, MaxPartitionLen: 1})
	ctx := context.Background()
	err := q.Schedule(ctx, "bad", Every(time.Minute), nil, JobPartition("a b"))
	require.ErrorContains(t, err, `schedule "bad": JobPartition: partition key "a b" has byte ' ' at 1`)
	require.ErrorIs(t, err, ErrInvalidArgument)
	names, err := q.Schedules(ctx)
	require.NoError(t, err)
	require.Empty(t, names, "nothing registered")

	_, err = q.Enqueue(ctx, []byte("x"), Partition("t"))
	require.NoError(t, err)
	require.NoError(t, q.Schedule(ctx, "full", Every(time.Minute), []byte("f"), JobPartition("t")), "the partition is full")
	require.NoError(t, q.Schedule(ctx, "new", Every(time.Minute), []byte("n"), JobPartition("n")), "MaxPartitions are in use")
	checkPartCounts(t, q)
	elems, err := p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
	require.NoError(t, err)
	parts := map[string]string{}
	for _, el := range elems {
		e, err := decodeEnvelope([]byte(el))
		require.NoError(t, err)
		parts[string(e.payload)] = e.part
	}
	require.Equal(t, map[string]string{"f": "t", "n": "n"}, parts)
	_, err = q.Enqueue(ctx, []byte("y"), Partition("t"))
	require.ErrorIs(t, err, ErrPartitionFull, "producers are still refused")

	// Run by a worker: each occurrence in the partition, and the next.
	require.NoError(t, q.Unschedule(ctx, "full"))
	require.NoError(t, q.Unschedule(ctx, "new"))
	require.NoError(t, q.Schedule(ctx, "tick", Every(time.Second), []byte("tick"), JobPartition("t")))
	ran := make(chan string, 10)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		if string(j.Payload) == "tick" {
			ran <- j.Partition
		}
		return nil
	}, WorkerConfig{Concurrency: 2})
	for range 2 {
		require.Equal(t, "t", recv(t, ran, 10*time.Second, "an occurrence"))
	}
}
