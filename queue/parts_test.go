package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// takeFor runs the take script as a fetcher of consumer id would, for up
// to n jobs, and returns their payloads.
func takeFor(t *testing.T, q *Queue, id string, n int) []string {
	t.Helper()
	ks := q.k.takeKeys(q.k.proc(id))
	elems, err := takeScript.Run(context.Background(), q.p.Client(), ks, n).StringSlice()
	require.NoError(t, err)
	out := make([]string, len(elems))
	out = out[:0]
	for _, el := range elems {
		if el == wakeMarker {
			continue
		}
		e, err := decodeEnvelope([]byte(el))
		require.NoError(t, err)
		out = append(out, string(e.payload))
	}
	return out
}

// One partition's backlog does not delay the job of another partition,
// nor an unpartitioned one: the take serves each in turn.
func TestPartitionBacklogDoesNotDelayOthers(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionBacklog(t, np) })
	}
}

func testPartitionBacklog(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "fair", Config{})
	ctx := context.Background()
	backlog := make([][]byte, 1000)
	for i := range backlog {
		backlog[i] = fmt.Appendf(nil, "a%d", i)
	}
	_, err := q.EnqueueBatch(ctx, backlog, Partition("tenant-a"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("b0"), Partition("tenant-b"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("plain"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("c0"), Partition("tenant-c"))
	require.NoError(t, err)

	got := takeFor(t, q, "c1", 4)
	assert.ElementsMatch(t, []string{"a0", "b0", "plain", "c0"}, got, "one job of each, the backlog's first")
	// Then the backlog alone, in order.
	assert.Equal(t, []string{"a1", "a2", "a3"}, takeFor(t, q, "c1", 3))

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), s.Partitions, "tenants b and c are done and forgotten")
	assert.Equal(t, int64(996), s.Partitioned)
	assert.Equal(t, int64(996), s.Ready)
	tags, err := p.Client().HGetAll(ctx, q.k.partTag()).Result()
	require.NoError(t, err)
	assert.NotContains(t, tags, "tenant-b", "no field per past partition")
	assert.NotContains(t, tags, "tenant-c", "no field per past partition")
	assert.LessOrEqual(t, len(tags), 3, "at most tenant-a and the two clocks")
}

// The same through a worker: with a backlog of one partition enqueued
// first, the job of another partition runs among the first few.
func TestPartitionFairnessThroughWorker(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "fairw", Config{})
	ctx := context.Background()
	backlog := make([][]byte, 2000)
	for i := range backlog {
		backlog[i] = []byte("a")
	}
	_, err := q.EnqueueBatch(ctx, backlog, Partition("big"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("b"), Partition("small"))
	require.NoError(t, err)

	var mu sync.Mutex
	order := 0
	at := make(chan int, 1)
	seenPart := make(chan string, 1)
	startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
		mu.Lock()
		order++
		n := order
		mu.Unlock()
		if string(j.Payload) == "b" {
			at <- n
			seenPart <- j.Partition
		}
		return nil
	}, WorkerConfig{Concurrency: 4})
	n := recv(t, at, 20*time.Second, "the small partition's job")
	assert.LessOrEqual(t, n, 8, "it ran within two takes, not after the 2000 jobs of the backlog")
	assert.Equal(t, "small", recv(t, seenPart, time.Second, "its partition"))
}

func TestPartitionBounds(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionBounds(t, np) })
	}
}

func testPartitionBounds(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "bounds", Config{MaxPartitions: 2, MaxPartitionLen: 3})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"))
	require.NoError(t, err)
	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("1"), []byte("2")}, Partition("b"))
	require.NoError(t, err)

	_, err = q.Enqueue(ctx, []byte("x"), Partition("c"))
	require.ErrorIs(t, err, ErrTooManyPartitions)
	require.ErrorIs(t, err, ErrQueueFull)
	assert.Contains(t, err.Error(), `"c"`)
	assert.Contains(t, err.Error(), "MaxPartitions")

	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("3"), []byte("4")}, Partition("b"))
	require.ErrorIs(t, err, ErrPartitionFull)
	require.ErrorIs(t, err, ErrQueueFull)
	assert.Contains(t, err.Error(), `partition "b" holds 2 jobs waiting, the limit is 3`)

	// A delayed job counts from its enqueue (TestPartitionDelayedJobsCount).
	_, err = q.Enqueue(ctx, []byte("later"), Partition("c"), Delay(time.Hour))
	require.ErrorIs(t, err, ErrTooManyPartitions)

	// Nothing half-written by the refusals.
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), s.Partitioned)
	assert.Equal(t, int64(2), s.Partitions)
	assert.Zero(t, s.Delayed)

	// A partition ends when its last job is taken: there is room
	// for another.
	got := takeFor(t, q, "c1", 4)
	assert.ElementsMatch(t, []string{"x", "1", "2"}, got)
	_, err = q.Enqueue(ctx, []byte("y"), Partition("c"))
	require.NoError(t, err)
}

// A bounded queue counts its partitioned jobs, both ways.
func TestPartitionCountsTowardsMaxLen(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "maxlen", Config{MaxLen: 3})
	ctx := context.Background()
	_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("1"), []byte("2")}, Partition("a"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("3"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("4"))
	var full *FullError
	require.ErrorAs(t, err, &full)
	assert.Equal(t, int64(3), full.Len)
	_, err = q.Enqueue(ctx, []byte("4"), Partition("b"))
	require.ErrorAs(t, err, &full)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.True(t, s.Full)
	assert.Equal(t, int64(3), s.Ready)
}

func TestPartitionOptionErrors(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "opts", Config{})
	ctx := context.Background()
	for key, want := range map[string]string{
		"":                       "partition key is empty",
		"a b":                    "has byte ' ' at 1",
		"a|b":                    "has byte '|' at 1",
		"{x}":                    "has byte '{' at 0",
		strings.Repeat("k", 129): "129 bytes, the limit is 128",
	} {
		_, err := q.Enqueue(ctx, []byte("x"), Partition(key))
		require.Error(t, err, key)
		assert.Contains(t, err.Error(), want)
		assert.Contains(t, err.Error(), "queue: Partition")
	}
	_, err := New(p, "x", Config{MaxPartitions: maxMaxPartitions + 1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "Config.MaxPartitions")
	_, err = New(p, "x", Config{MaxPartitionLen: -1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "Config.MaxPartitionLen")
	n, err := p.Client().DBSize(ctx).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "nothing written")
}

// A partitioned job with an ID is idempotent, and a payload kept apart
// travels with it.
func TestPartitionWithIDAndLargePayload(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "idbig", Config{})
	ctx := context.Background()
	big := []byte(strings.Repeat("p", inlineMax+1))
	id, err := q.Enqueue(ctx, big, Partition("a"), ID("job-1"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, big, Partition("a"), ID("job-1"))
	require.ErrorIs(t, err, ErrDuplicate)
	ks := q.k.takeKeys(q.k.proc("c1"))
	elems, err := takeScript.Run(ctx, p.Client(), ks, 10).StringSlice()
	require.NoError(t, err)
	require.Len(t, elems, 1)
	e, err := decodeEnvelope([]byte(elems[0]))
	require.NoError(t, err)
	assert.Equal(t, id, e.id)
	assert.Equal(t, "a", e.part)
	assert.NotEmpty(t, e.ref, "the payload is kept apart")
	n, err := p.Client().HLen(ctx, q.k.payloads).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "one payload, the duplicate's was taken back")
}

// A failed job goes back to its partition when its retry is due, and a
// requeued dead one too.
func TestPartitionKeptOnRetryAndRequeue(t *testing.T) { testPartitionRetry(t, serverPool) }

func testPartitionRetry(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "retry", Config{MaxAttempts: 2})
	ctx := context.Background()
	type run struct {
		part    string
		attempt int
	}
	runs := make(chan run, 8)
	startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
		runs <- run{j.Partition, j.Attempt}
		return errors.New("fails")
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})
	_, err := q.Enqueue(ctx, []byte("x"), Partition("t1"), ID("r1"))
	require.NoError(t, err)
	assert.Equal(t, run{"t1", 1}, recv(t, runs, 10*time.Second, "the first run"))
	assert.Equal(t, run{"t1", 2}, recv(t, runs, 10*time.Second, "the retry"))
	testutil.Eventually(t, 10*time.Second, "dead", func() bool {
		d, err := q.Dead(ctx, 0, 10)
		return err == nil && len(d) == 1
	})
	// Requeue while the worker cannot take it: paused.
	require.NoError(t, q.Pause(ctx))
	n, err := q.Requeue(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), s.Partitioned, "requeued into its partition")
	assert.Equal(t, int64(1), s.Partitions)
	require.NoError(t, q.Resume(ctx))
	assert.Equal(t, run{"t1", 1}, recv(t, runs, 10*time.Second, "the requeued run"))
}

// A consumer that dies holding partitioned jobs loses none: the sweep puts
// them back at the front of their partitions.
func TestPartitionJobsOfDeadConsumerAreRecovered(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionDeadConsumer(t, np) })
	}
}

func testPartitionDeadConsumer(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "deadparts", Config{})
	c := p.Client()
	ctx := context.Background()
	for i := range 6 {
		_, err := q.Enqueue(ctx, fmt.Appendf(nil, "j%d", i), Partition(fmt.Sprintf("t%d", i%3)))
		require.NoError(t, err)
	}
	// The dead consumer took 4 of them, mid-run, and died.
	require.Len(t, takeFor(t, q, "ghost", 4), 4)
	require.NoError(t, c.ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "ghost"}).Err())

	var mu sync.Mutex
	seen := map[string]string{}
	w := startWorker(t, group(t), q, func(ctx context.Context, j *Job) error {
		mu.Lock()
		seen[string(j.Payload)] = j.Partition
		mu.Unlock()
		return nil
	}, WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})
	testutil.Eventually(t, 10*time.Second, "all 6 jobs ran", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 6
	})
	for i := range 6 {
		assert.Equal(t, fmt.Sprintf("t%d", i%3), seen[fmt.Sprintf("j%d", i)])
	}
	testutil.Eventually(t, 5*time.Second, "4 counted as recovered", func() bool { return w.Stats().Recovered == 4 })
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.Partitions)
	assert.Zero(t, s.Ready)
}

// A paused queue hands out no partitioned job; Resume rings for them.
func TestPartitionPause(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "pause", Config{})
	ctx := context.Background()
	require.NoError(t, q.Pause(ctx))
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"))
	require.NoError(t, err)
	assert.Empty(t, takeFor(t, q, "c1", 10))
	require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())
	require.NoError(t, q.Resume(ctx))
	n, err := p.Client().ZCard(ctx, q.k.bell).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "resume rang for the partitioned job")
	assert.Equal(t, []string{"x"}, takeFor(t, q, "c1", 10))
}

// A take stopped by its job count with jobs left in partitions rings the
// doorbell again, for the other consumers.
func TestPartitionTakeHandsTheRingOn(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "ringon", Config{})
	ctx := context.Background()
	_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("1"), []byte("2")}, Partition("a"))
	require.NoError(t, err)
	require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())
	require.Len(t, takeFor(t, q, "c1", 1), 1)
	n, err := p.Client().ZCard(ctx, q.k.bell).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())
	require.Len(t, takeFor(t, q, "c1", 5), 1)
	n, err = p.Client().ZCard(ctx, q.k.bell).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left, no ring")
}

// Get, Cancel, the Inspector's listing and Delete see partitioned jobs,
// and taking them out keeps the partition counts exact.
func TestPartitionJobsAreInspected(t *testing.T) { testPartitionInspected(t, serverPool) }

func testPartitionInspected(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "insp", Config{MaxPartitions: 2})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("plain"))
	require.NoError(t, err)
	for i := range 3 {
		_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), ID(fmt.Sprintf("a%d", i)))
		require.NoError(t, err)
	}
	_, err = q.Enqueue(ctx, []byte("y"), Partition("b"), ID("b0"))
	require.NoError(t, err)

	info, err := q.Get(ctx, "a1")
	require.NoError(t, err)
	assert.Equal(t, StateReady, info.State)
	assert.Equal(t, "a", info.Partition)

	in, err := NewInspector(p, q.cfg.Namespace)
	require.NoError(t, err)
	var all []ListedJob
	cur := ""
	for range 10 {
		page, err := in.Jobs(ctx, "insp", StateReady, cur, 2)
		require.NoError(t, err)
		all = append(all, page.Jobs...)
		if cur = page.Next; cur == "" {
			break
		}
	}
	require.Len(t, all, 5, "the plain job and the four partitioned ones")
	assert.Equal(t, "", all[0].Partition)
	var b ListedJob
	for _, j := range all[1:] {
		assert.NotEmpty(t, j.Partition)
		if j.ID == "b0" {
			b = j
		}
	}

	// Cancel the last job of b, delete the last of a through its handle:
	// b is forgotten, room for another partition.
	require.NoError(t, q.Cancel(ctx, "b0"))
	require.ErrorIs(t, in.Delete(ctx, "insp", b.Handle), ErrJobGone)
	for _, j := range all {
		if j.Partition == "a" {
			require.NoError(t, in.Delete(ctx, "insp", j.Handle))
		}
	}
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.Partitions)
	assert.Zero(t, s.Partitioned)
	assert.Equal(t, int64(1), s.Ready)
	_, err = q.Enqueue(ctx, []byte("y"), Partition("b"), ID("b0"))
	require.NoError(t, err, "the ID is free again")
	_, err = q.Enqueue(ctx, []byte("z"), Partition("c"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("z"), Partition("d"))
	require.ErrorIs(t, err, ErrTooManyPartitions)
}

// The partition field decodes with every other field around it, and the
// scripts' pattern (partOf) finds it in all those shapes: a delayed job
// with a deadline, a window, headers and a type goes to its partition
// when promoted.
func TestPartitionEnvelope(t *testing.T) {
	hs, err := encodeHeaders([]header{{k: "k", v: "v|w"}})
	require.NoError(t, err)
	e := envelope{id: "j1", attempt: 1, maxAttempts: 3, enqueuedAt: time.UnixMilli(1000), unique: true,
		deadline: time.UnixMilli(5000), window: time.Second, headers: hs, typ: "email",
		part: "tenant-7", payload: []byte("p|a|y")}
	got, err := decodeEnvelope(e.encode())
	require.NoError(t, err)
	assert.Equal(t, e.part, got.part)
	assert.Equal(t, e.deadline, got.deadline)
	assert.Equal(t, e.window, got.window)
	assert.Equal(t, e.typ, got.typ)
	assert.Equal(t, e.headers, got.headers)
	assert.Equal(t, e.payload, got.payload)

	for _, bad := range []string{
		"bq1|j|0|1|0|1|0|g|",            // no partition field
		"bq1|j|0|1|0|1|0|g|a b|payload", // a space
		"bq1|j|0|1|0|1|0|g||payload",    // empty
	} {
		_, err := decodeEnvelope([]byte(bad))
		require.ErrorIs(t, err, errMalformed, bad)
	}

	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "env", Config{})
	ctx := context.Background()
	_, err = q.Enqueue(ctx, []byte("x"), Partition("t"), Delay(time.Millisecond), Deadline(time.Now().Add(time.Hour)),
		ID("u1"), UniqueFor(time.Minute), Header("k", "v"), Type("email"))
	require.NoError(t, err)
	_, err = EnqueueJSON(ctx, q, map[string]int{"a": 1}, Partition("t"), Delay(time.Millisecond))
	require.NoError(t, err)
	// Promoted by a clock a second ahead: both are due.
	res, err := promoteScript.Run(ctx, p.Client(), q.k.promoteKeys(),
		time.Now().Add(time.Second).UnixMilli(), promoteLimit, "0").Int64Slice()
	require.NoError(t, err)
	assert.Equal(t, int64(2), res[0])
	n, err := p.Client().ZCard(ctx, q.k.fair()).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(2), n, "both promoted into their partition")
	l, err := p.Client().HGet(ctx, q.k.partLen(), "t").Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(2), l)
}

// A ring handed on (a stopping fetcher's, or the hub's at close) is rung
// again for a queue whose only jobs wait in partitions.
func TestPartitionRingHandedOn(t *testing.T) {
	p := serverPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "handon", Config{})
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"))
	require.NoError(t, err)
	rung := func() bool {
		n, err := p.Client().Exists(ctx, q.k.bell).Result()
		require.NoError(t, err)
		return n == 1
	}
	require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())
	require.NoError(t, ringIfReady(ctx, p.Client(), q.k))
	assert.True(t, rung(), "ringIfReady")

	require.NoError(t, p.Client().Del(ctx, q.k.bell).Err())
	w := startWorker(t, group(t), mustQueue(t, p, "other", Config{}), func(context.Context, *Job) error { return nil },
		WorkerConfig{Concurrency: 1})
	w.hub.handOn(ctx, []string{q.k.bell})
	assert.True(t, rung(), "the hub's handOn")
}
