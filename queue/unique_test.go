package queue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// onEveryRedis runs f on miniredis, on a real redis-server and on a real
// 3-master cluster (the last two skipped when there is no redis-server,
// unless BOUNDED_REQUIRE_REDIS is set).
func onEveryRedis(t *testing.T, f func(t *testing.T, newPool newPoolFunc)) {
	t.Run("miniredis", func(t *testing.T) { f(t, miniPool) })
	t.Run("server", func(t *testing.T) { f(t, serverPool) })
	t.Run("cluster", func(t *testing.T) { f(t, clusterPools(redistest.Cluster(t))) })
}

func TestUniqueForKeepsTheIDAfterSuccess(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, newPool newPoolFunc) {
		p := newPool(t, pool.Config{})
		g := group(t)
		q := mustQueue(t, p, "window", Config{})
		ctx := context.Background()
		w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
			if string(j.Payload) == "die" {
				return Permanent(errors.New("no"))
			}
			return nil
		}, WorkerConfig{})

		_, err := q.Enqueue(ctx, []byte("a"), ID("plain"))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("a"), ID("kept"), UniqueFor(time.Hour))
		require.NoError(t, err)
		testutil.Eventually(t, 10*time.Second, "both done and acked", func() bool { s := w.Stats(); return s.Processed == 2 && s.InFlight == 0 })

		_, err = q.Enqueue(ctx, []byte("b"), ID("plain"))
		require.NoError(t, err, "without UniqueFor the ID is free once the job succeeded")
		_, err = q.Enqueue(ctx, []byte("b"), ID("kept"), UniqueFor(time.Hour))
		require.ErrorIs(t, err, ErrDuplicate, "UniqueFor keeps the ID after the success")
		_, err = q.Enqueue(ctx, []byte("b"), ID("kept"))
		require.ErrorIs(t, err, ErrDuplicate, "whatever the options of the later enqueue")
		ttl, err := p.Client().PTTL(ctx, q.k.unique("kept")).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 59*time.Minute, "the window starts at the success")
		require.LessOrEqual(t, ttl, time.Hour)

		// A job that dies frees its ID at once, window or not.
		_, err = q.Enqueue(ctx, []byte("die"), ID("dies"), UniqueFor(time.Hour))
		require.NoError(t, err)
		testutil.Eventually(t, 10*time.Second, "dead and written", func() bool { s := w.Stats(); return s.Dead == 1 && s.InFlight == 0 })
		_, err = q.Enqueue(ctx, []byte("die"), ID("dies"), UniqueFor(time.Hour))
		require.NoError(t, err, "a dead job's ID is free")
	})
}

func TestUniqueForValues(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "windowv", Config{})
	ctx := context.Background()
	for _, d := range []time.Duration{0, -time.Second, time.Microsecond, 101 * 365 * 24 * time.Hour} {
		_, err := q.Enqueue(ctx, nil, ID("x"), UniqueFor(d))
		require.ErrorContains(t, err, "UniqueFor", "%s", d)
	}
	_, err := q.Enqueue(ctx, nil, UniqueFor(time.Hour))
	require.ErrorContains(t, err, "needs the ID or IDFromPayload option")
	_, err = q.EnqueueBatch(ctx, [][]byte{nil}, UniqueFor(time.Hour))
	require.ErrorContains(t, err, "UniqueFor")

	// 1.5ms rounds up: the job is never free before the window asked for.
	pr, err := q.prepare(nil, []EnqueueOption{ID("r"), UniqueFor(1500 * time.Microsecond)})
	require.NoError(t, err)
	e, err := decodeEnvelope(pr.elem)
	require.NoError(t, err)
	require.Equal(t, 2*time.Millisecond, e.window)
	pr, err = q.prepare(nil, []EnqueueOption{ID("r"), UniqueFor(100 * 365 * 24 * time.Hour)})
	require.NoError(t, err)
	e, err = decodeEnvelope(pr.elem)
	require.NoError(t, err, "the longest window decodes")
	require.Equal(t, 100*365*24*time.Hour, e.window)
}

func TestIDFromPayload(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, newPool newPoolFunc) {
		p := newPool(t, pool.Config{})
		q := mustQueue(t, p, "pid", Config{})
		ctx := context.Background()
		id1, err := q.Enqueue(ctx, []byte("report 42"), IDFromPayload())
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(id1, "sha256-"), id1)
		require.Len(t, id1, len("sha256-")+64)
		id2, err := q.Enqueue(ctx, []byte("report 42"), IDFromPayload())
		require.ErrorIs(t, err, ErrDuplicate)
		require.Equal(t, id1, id2)
		id3, err := q.Enqueue(ctx, []byte("report 43"), IDFromPayload())
		require.NoError(t, err)
		require.NotEqual(t, id1, id3)
		big := make([]byte, 10_000) // kept apart: the ID is still the payload's
		id4, err := q.Enqueue(ctx, big, IDFromPayload(), Delay(time.Hour))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, big, IDFromPayload())
		require.ErrorIs(t, err, ErrDuplicate)
		require.Equal(t, payloadID("", big), id4)

		_, err = q.Enqueue(ctx, []byte("x"), IDFromPayload(), ID("given"))
		require.ErrorContains(t, err, "use one of them")
		_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("x")}, IDFromPayload())
		require.ErrorContains(t, err, "IDFromPayload")
	})
}

// delayedPayloads returns the delayed jobs' payloads with their due times
// (unix ms).
func delayedPayloads(t *testing.T, p *pool.Pool, q *Queue) map[string]int64 {
	t.Helper()
	zs, err := p.Client().ZRangeWithScores(context.Background(), q.k.delayed, 0, -1).Result()
	require.NoError(t, err)
	got := map[string]int64{}
	for _, z := range zs {
		e, err := decodeEnvelope([]byte(z.Member.(string)))
		require.NoError(t, err)
		got[string(e.payload)] = int64(z.Score)
	}
	return got
}

func TestDebounceReplacesTheDelayedJob(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, newPool newPoolFunc) {
		p := newPool(t, pool.Config{})
		clock := testutil.NewClock()
		q := mustQueue(t, p, "deb", Config{Now: clock.Now})
		ctx := context.Background()
		t0 := clock.Now()

		_, err := q.Enqueue(ctx, []byte("a"), ID("d"), Debounce(), Delay(time.Minute))
		require.NoError(t, err)
		clock.Advance(10 * time.Second)
		id, err := q.Enqueue(ctx, []byte("b"), ID("d"), Debounce(), Delay(time.Minute))
		require.NoError(t, err, "a replaced job is no error")
		require.Equal(t, "d", id)
		require.Equal(t, map[string]int64{"b": t0.Add(70 * time.Second).UnixMilli()}, delayedPayloads(t, p, q),
			"one job: the new payload at the new due time")

		_, err = q.Enqueue(ctx, []byte("c"), ID("d"), ReplacePayload(), Delay(time.Hour))
		require.NoError(t, err)
		require.Equal(t, map[string]int64{"c": t0.Add(70 * time.Second).UnixMilli()}, delayedPayloads(t, p, q),
			"ReplacePayload keeps the due time")
		ttl, err := p.Client().PTTL(ctx, q.k.unique("d")).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, q.cfg.UniqueTTL, "the ID is held past the due time")

		// A job with the ID enqueued without Debounce is not replaced.
		_, err = q.Enqueue(ctx, []byte("x"), ID("plain"), Delay(time.Minute))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("y"), ID("plain"), Debounce(), Delay(time.Minute))
		require.ErrorIs(t, err, ErrDuplicate)

		// Once the job is no longer delayed (promoted, running, retrying)
		// it is not replaced either.
		elem, err := p.Client().ZRange(ctx, q.k.delayed, 0, 0).Result()
		require.NoError(t, err)
		require.Len(t, elem, 1)
		require.NoError(t, p.Client().ZRem(ctx, q.k.delayed, elem[0]).Err())
		require.NoError(t, p.Client().LPush(ctx, q.k.ready, elem[0]).Err())
		_, err = q.Enqueue(ctx, []byte("z"), ID("d"), Debounce(), Delay(time.Minute))
		require.ErrorIs(t, err, ErrDuplicate)
		s, err := q.Stats(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, s.Ready, "nothing added")
	})
}

func TestDebounceRunsTheLastPayloadOnce(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, newPool newPoolFunc) {
		p := newPool(t, pool.Config{})
		g := group(t)
		// The burst happens at one instant for the queue: on the wall
		// clock, a loaded machine took more than the 200ms window between
		// two enqueues, and the job became due (and ran) in the middle of
		// the burst.
		clock := &pausableClock{}
		q := mustQueue(t, p, "debrun", Config{Now: clock.now})
		ctx := context.Background()
		var mu sync.Mutex
		var ran []string
		w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
			mu.Lock()
			ran = append(ran, string(j.Payload))
			mu.Unlock()
			return nil
		}, WorkerConfig{})
		clock.pause()
		for i := range 5 {
			_, err := q.Enqueue(ctx, []byte{'a' + byte(i)}, ID("burst"), Debounce(), Delay(200*time.Millisecond))
			require.NoError(t, err, "enqueue %d", i)
		}
		clock.resume()
		testutil.Eventually(t, 10*time.Second, "the job ran", func() bool { return w.Stats().Processed == 1 })
		s, err := q.Stats(ctx)
		require.NoError(t, err)
		require.Zero(t, s.Ready+s.Delayed, "nothing else can run")
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []string{"e"}, ran)
		// The ID is free again once the success is written: a new burst
		// starts a new job.
		testutil.Eventually(t, 10*time.Second, "the ack", func() bool {
			return p.Client().Exists(ctx, q.k.unique("burst")).Val() == 0
		})
		_, err = q.Enqueue(ctx, []byte("f"), ID("burst"), Debounce(), Delay(time.Hour))
		require.NoError(t, err)
	})
}

func TestDebounceRefusals(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "debv", Config{})
	bq := mustQueue(t, p, "debb", Config{MaxLen: 10})
	ctx := context.Background()
	cases := map[string]struct {
		q    *Queue
		opts []EnqueueOption
		want string
	}{
		"no ID":       {q, []EnqueueOption{Debounce(), Delay(time.Minute)}, "needs the ID"},
		"not delayed": {q, []EnqueueOption{Debounce(), ID("a")}, "needs Delay or At"},
		"past":        {q, []EnqueueOption{ReplacePayload(), ID("a"), At(time.Now().Add(-time.Hour))}, "needs Delay or At"},
		"durable":     {q, []EnqueueOption{Debounce(), ID("a"), Delay(time.Minute), Durable(1, time.Second)}, "Durable"},
		"bounded":     {bq, []EnqueueOption{Debounce(), ID("a"), Delay(time.Minute)}, "Config.MaxLen"},
	}
	for name, c := range cases {
		_, err := c.q.Enqueue(ctx, nil, c.opts...)
		require.ErrorContains(t, err, c.want, name)
	}
	_, err := q.EnqueueBatch(ctx, [][]byte{nil}, Debounce(), Delay(time.Minute))
	require.ErrorContains(t, err, "Debounce")
	n, err := p.Client().DBSize(ctx).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing written")
}

func TestDeadlineExpiresJobsNotStartedInTime(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, newPool newPoolFunc) {
		p := newPool(t, pool.Config{})
		g := group(t)
		clock := testutil.NewClock()
		q := mustQueue(t, p, "deadline", Config{Now: clock.Now})
		ctx := context.Background()
		t0 := clock.Now()
		_, err := q.Enqueue(ctx, []byte("late"), ID("late"), Deadline(t0.Add(time.Second)))
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("fine"), Deadline(t0.Add(time.Hour)))
		require.NoError(t, err)
		clock.Advance(2 * time.Second)
		var ran sync.Map
		w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
			ran.Store(string(j.Payload), j.Deadline)
			return nil
		}, WorkerConfig{})
		testutil.Eventually(t, 10*time.Second, "one ran, one died", func() bool {
			s := w.Stats()
			return s.Processed == 1 && s.Dead == 1 && s.InFlight == 0
		})
		_, lateRan := ran.Load("late")
		require.False(t, lateRan)
		dl, ok := ran.Load("fine")
		require.True(t, ok)
		require.True(t, t0.Add(time.Hour).Equal(dl.(time.Time)), "the handler sees the deadline: %v", dl)
		dead, err := q.Dead(ctx, 0, 10)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Contains(t, dead[0].Reason, "deadline exceeded")
		_, err = q.Enqueue(ctx, []byte("again"), ID("late"))
		require.NoError(t, err, "the expired job freed its ID")

		// Requeueing an expired job asks for the run: the deadline no
		// longer holds.
		n, err := q.Requeue(ctx, "late")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		testutil.Eventually(t, 10*time.Second, "requeued job ran", func() bool { _, ok := ran.Load("late"); return ok })
	})
}

func TestDeadlineStopsRetriesThatWouldStartLate(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	clock := testutil.NewClock()
	q := mustQueue(t, p, "deadretry", Config{Now: clock.Now})
	ctx := context.Background()
	var runs atomic.Int32
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		runs.Add(1)
		return errors.New("flaky")
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Minute }})
	_, err := q.Enqueue(ctx, []byte("x"), MaxAttempts(5), Deadline(clock.Now().Add(30*time.Second)))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "dead after one run", func() bool { s := w.Stats(); return s.Dead == 1 && s.InFlight == 0 })
	require.EqualValues(t, 1, runs.Load())
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Contains(t, dead[0].Reason, "after the deadline")
	require.Contains(t, dead[0].Reason, "flaky")

	// A retry that starts in time is made as usual.
	_, err = q.Enqueue(ctx, []byte("y"), MaxAttempts(5), Deadline(clock.Now().Add(time.Hour)))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "retrying", func() bool { return w.Stats().Retried == 1 })
}

func TestDeadlineValues(t *testing.T) {
	p := miniPool(t, pool.Config{})
	clock := testutil.NewClock()
	q := mustQueue(t, p, "deadv", Config{Now: clock.Now})
	ctx := context.Background()
	now := clock.Now()
	for name, c := range map[string]struct {
		opts []EnqueueOption
		want string
	}{
		"passed":         {[]EnqueueOption{Deadline(now)}, "it has passed"},
		"before due":     {[]EnqueueOption{Deadline(now.Add(time.Minute)), Delay(time.Hour)}, "would be due after it"},
		"year 10000":     {[]EnqueueOption{Deadline(maxDue)}, "before the year 10000"},
		"before 1970":    {[]EnqueueOption{Deadline(time.Unix(-5, 0))}, "after 1970"},
		"zero time":      {[]EnqueueOption{Deadline(time.Time{})}, "after 1970"},
		"due = deadline": {[]EnqueueOption{Deadline(now.Add(time.Hour)), At(now.Add(time.Hour))}, ""},
	} {
		_, err := q.Enqueue(ctx, nil, c.opts...)
		if c.want == "" {
			require.NoError(t, err, name)
			continue
		}
		require.ErrorContains(t, err, c.want, name)
	}
	pr, err := q.prepare([]byte("p|q"), []EnqueueOption{Deadline(maxDue.Add(-time.Millisecond)), ID("i"), UniqueFor(time.Hour)})
	require.NoError(t, err)
	e, err := decodeEnvelope(pr.elem)
	require.NoError(t, err, "%q", pr.elem)
	require.Equal(t, maxDue.Add(-time.Millisecond).UnixMilli(), e.deadline.UnixMilli())
	require.Equal(t, time.Hour, e.window)
	require.Equal(t, "p|q", string(e.payload))
}

func TestEnvelopeFlagsAreStrict(t *testing.T) {
	for _, elem := range []string{
		"bq1|i|0|1|0|0|0|du|5|p",    // letters out of order
		"bq1|i|0|1|0|0|0|dd|5|5|p",  // twice
		"bq1|i|0|1|0|0|0|x|p",       // unknown
		"bq1|i|0|1|0|0|0|d|p",       // field missing
		"bq1|i|0|1|0|0|0|d|0|p",     // not positive
		"bq1|i|0|1|0|0|0|w|-5|p",    // negative
		"bq1|i|0|1|0|0|0|dw|5|p",    // one field of two
		"bq1|i|0|1|0|0|0|rd|5|bad!", // a bad ref after the fields
	} {
		_, err := decodeEnvelope([]byte(elem))
		require.ErrorIs(t, err, errMalformed, elem)
	}
	e, err := decodeEnvelope([]byte("bq1|i|0|1|0|0|0|urdw|5|7|abc"))
	require.NoError(t, err)
	require.True(t, e.unique)
	require.Equal(t, "abc", e.ref)
	require.Equal(t, int64(5), e.deadline.UnixMilli())
	require.Equal(t, 7*time.Millisecond, e.window)
	again, err := decodeEnvelope(e.encode())
	require.NoError(t, err)
	require.Equal(t, e, again)
}
