package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Issue 13 item 2: whatever the public API accepts must decode, or the job
// is dead-lettered as malformed on its first fetch.
func TestExtremeAcceptedOptionsRunAndRetry(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "extreme", Config{})
	ctx := context.Background()
	runs := make(chan int, 4)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		runs <- j.Attempt
		if j.Attempt == 1 {
			return errTestFail
		}
		return nil
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})
	_, err := q.Enqueue(ctx, []byte("x"), MaxAttempts(math.MaxInt32), Timeout(math.MaxInt64))
	require.NoError(t, err)
	for want := 1; want <= 2; want++ {
		select {
		case got := <-runs:
			require.Equal(t, want, got)
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d never came; stats %+v", want, w.Stats())
		}
	}
	testutil.Eventually(t, 5*time.Second, "processed", func() bool { return w.Stats().Processed == 1 })
	require.Zero(t, w.Stats().Malformed)
	require.Zero(t, w.Stats().Dead)

	// What the decoder cannot hold is refused with a clear error.
	_, err = q.Enqueue(ctx, []byte("x"), MaxAttempts(math.MaxInt32+1))
	require.ErrorContains(t, err, "MaxAttempts(2147483648): must be at most 2147483647")
	_, err = New(p, "x", Config{MaxAttempts: math.MaxInt32 + 1})
	require.ErrorContains(t, err, "Config.MaxAttempts must be at most 2147483647")
	_, err = newWorker(t, q, func(context.Context, *Job) error { return nil }, WorkerConfig{MaxDeliveries: math.MaxInt32 + 1})
	require.ErrorContains(t, err, "WorkerConfig.MaxDeliveries must be at most 2147483647")
}

// FuzzEnqueueDecodes: every job Enqueue accepts decodes to what was given,
// and so do its next attempt and its next delivery.
func FuzzEnqueueDecodes(f *testing.F) {
	f.Add(int64(1), int64(0), int64(0), "", []byte("p"), int64(0))
	f.Add(int64(math.MaxInt32), int64(math.MaxInt64), int64(math.MaxInt64), "order-42", []byte{}, int64(-1))
	f.Add(int64(math.MaxInt64), int64(1), int64(-1), "a~b", []byte("x|y"), int64(math.MinInt64))
	f.Add(int64(5), int64(time.Millisecond), int64(time.Hour), "id", make([]byte, 5000), int64(1<<62))
	p, err := pool.New(pool.Config{Addrs: []string{"127.0.0.1:1"}})
	require.NoError(f, err)
	f.Cleanup(func() { _ = p.Close() })
	f.Fuzz(func(t *testing.T, maxAttempts, timeout, delay int64, id string, payload []byte, nowNs int64) {
		now := time.Unix(0, nowNs)
		q, err := New(p, "fz", Config{MaxAttempts: int(maxAttempts), Now: func() time.Time { return now }})
		if err != nil {
			return
		}
		opts := []EnqueueOption{Delay(time.Duration(delay))}
		if timeout != 0 {
			opts = append(opts, Timeout(time.Duration(timeout)))
		}
		if id != "" {
			opts = append(opts, ID(id))
		}
		if maxAttempts%3 == 0 {
			opts = append(opts, MaxAttempts(int(maxAttempts/3)))
		}
		pr, err := q.prepare(payload, opts)
		if err != nil {
			return
		}
		e, err := decodeEnvelope(pr.elem)
		require.NoError(t, err, "an accepted job must decode: %q", preview(pr.elem))
		require.Equal(t, pr.id, e.id)
		require.GreaterOrEqual(t, e.maxAttempts, 1)
		if !pr.due.IsZero() {
			require.Positive(t, q.uniqueTTL(pr.due), "the idempotency key's TTL")
		}
		next := e
		next.attempt = e.maxAttempts - 1
		next.deliveries = math.MaxInt32
		_, err = decodeEnvelope(next.encode())
		require.NoError(t, err, "its last attempt and any delivery count decode")
	})
}

var errTestFail = errors.New("test failure")

// Issue 13 item 9: the idempotency key's TTL never overflows, and a
// UniqueTTL Redis cannot express is refused by New.
func TestUniqueTTLIsValid(t *testing.T) {
	testUniqueTTLIsValid(t, miniPool, false)
}

func TestUniqueTTLIsValid_Server(t *testing.T) {
	testUniqueTTLIsValid(t, serverPool, true)
}

// real: miniredis keeps TTLs as a time.Duration, which overflows beyond
// 292 years; only a real Redis can hold the far key.
func testUniqueTTLIsValid(t *testing.T, np newPoolFunc, real bool) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "ttl", Config{})
	far := time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := q.Enqueue(ctx, []byte("x"), ID("far"), At(far))
	require.NoError(t, err)
	if real {
		ttl, err := p.Client().Do(ctx, "PTTL", q.k.unique("far")).Int64()
		require.NoError(t, err)
		require.Greater(t, ttl, time.Until(far).Milliseconds(), "the key lives until the job is due and beyond")
		_, err = q.Enqueue(ctx, []byte("x"), ID("far"), At(far))
		require.ErrorIs(t, err, ErrDuplicate)
	}

	_, err = q.Enqueue(ctx, []byte("x"), At(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)))
	require.ErrorContains(t, err, "At(10000-01-01 00:00:00 +0000 UTC): must be before the year 10000")
	_, err = New(p, "ttl", Config{UniqueTTL: time.Microsecond})
	require.ErrorContains(t, err, "Config.UniqueTTL must be at least 1ms, got 1µs")
	q2 := mustQueue(t, p, "ttl2", Config{UniqueTTL: math.MaxInt64})
	_, err = q2.Enqueue(ctx, []byte("x"), ID("long"), At(far))
	require.NoError(t, err)
	_, err = q2.Enqueue(ctx, []byte("x"), ID("now"))
	require.NoError(t, err)
}

// netBytes reads the server's total network input and output so far.
func netBytes(t testing.TB, c redis.UniversalClient) (in, out int64) {
	t.Helper()
	info, err := c.Info(context.Background(), "stats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "total_net_input_bytes":
			in = n
		case "total_net_output_bytes":
			out = n
		}
	}
	return in, out
}

// Issue 13 item 12: a large job costs its size once into Redis and once per
// run out of it, not once per command that touches it; a dead letter holds
// its payload raw.
func TestLargeJobTraffic(t *testing.T) {
	p := serverPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "big", Config{})
	ctx := context.Background()
	c := p.Client()
	const size = 1 << 20
	payload := bytes.Repeat([]byte{0xfe}, size)
	runs := make(chan int, 8)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		if !bytes.Equal(j.Payload, payload) {
			return Permanent(errors.New("payload differs"))
		}
		runs <- j.Attempt
		if string(j.ID) == "dies" || j.Attempt == 1 {
			return errTestFail
		}
		return nil
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})
	in0, out0 := netBytes(t, c)
	_, err := q.Enqueue(ctx, payload)
	require.NoError(t, err)
	for range 2 {
		select {
		case <-runs:
		case <-time.After(10 * time.Second):
			t.Fatalf("job did not run twice: %+v", w.Stats())
		}
	}
	testutil.Eventually(t, 10*time.Second, "the job done", func() bool { return w.Stats().Processed == 1 })
	in1, out1 := netBytes(t, c)
	t.Logf("retried 1 MiB job: %d bytes in, %d out", in1-in0, out1-out0)
	require.Less(t, in1-in0, int64(size+size/4), "into Redis: the payload once (was 4x: enqueue, retry old+new, ack)")
	require.Less(t, out1-out0, int64(2*size+size/4), "out of Redis: once per run")

	_, err = q.Enqueue(ctx, payload, ID("dies"), MaxAttempts(1))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "dead", func() bool { return w.Stats().Dead == 1 })
	var stored int64
	for _, k := range []string{q.k.deadData, q.k.payloads} {
		vals, err := c.HVals(ctx, k).Result()
		require.NoError(t, err)
		for _, v := range vals {
			stored += int64(len(v))
		}
	}
	require.Less(t, stored, int64(size+size/64), "a dead letter holds its payload raw (was JSON + base64)")
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, payload, dead[0].Payload)
	n, err := q.Requeue(ctx, "dies")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	testutil.Eventually(t, 10*time.Second, "dead again", func() bool { return w.Stats().Dead == 2 })
	dead, err = q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, payload, dead[0].Payload, "requeued with its payload")
	_, err = q.Purge(ctx)
	require.NoError(t, err)
	left, err := c.Keys(ctx, q.k.tag+"*").Result()
	require.NoError(t, err)
	for _, k := range left {
		require.NotContains(t, k, "payload", "nothing of the jobs is left behind")
	}
	require.Equal(t, []int{1, 1}, drainOut(runs), "the dead job ran once, and once more when requeued")
}

func drainOut(ch chan int) []int {
	var got []int
	for {
		select {
		case v := <-ch:
			got = append(got, v)
		default:
			return got
		}
	}
}

// Issue 13 item 8: a dead letter is never overwritten by a later job with
// the same ID; both are kept.
func TestDeadLetterOfReusedIDKeepsBoth(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	q := mustQueue(t, p, "reuse", Config{})
	ctx := context.Background()
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		return Permanent(errors.New(string(j.Payload)))
	}, WorkerConfig{})
	_, err := q.Enqueue(ctx, []byte("first"), ID("order-7"))
	require.NoError(t, err)
	testutil.Eventually(t, 10*time.Second, "first dead", func() bool { return w.Stats().Dead == 1 })
	_, err = q.Enqueue(ctx, []byte("second"), ID("order-7"))
	require.NoError(t, err, "the ID is free once its job is dead")
	testutil.Eventually(t, 10*time.Second, "second dead", func() bool { return w.Stats().Dead == 2 })
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 2)
	got := map[string]string{}
	for _, d := range dead {
		got[string(d.Payload)] = d.ID
	}
	require.Equal(t, "order-7", got["first"], "the first keeps its ID")
	require.True(t, strings.HasPrefix(got["second"], "order-7~"), "the second gets a dead-letter ID of its own: %q", got["second"])
	n, err := q.Requeue(ctx, got["second"])
	require.NoError(t, err)
	require.Equal(t, 1, n)
	testutil.Eventually(t, 10*time.Second, "requeued and dead again", func() bool { return w.Stats().Dead == 3 })
}

// Also-fix: Stats.Ready does not count a wake marker wherever it is.
func TestStatsReadyIgnoresMarkerAnywhere(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "marker", Config{})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("a"))
	require.NoError(t, err)
	require.NoError(t, p.Client().RPush(ctx, q.k.ready, wakeMarker).Err())
	e := envelope{id: "recovered", maxAttempts: 1, payload: []byte("b")}
	require.NoError(t, p.Client().RPush(ctx, q.k.ready, e.encode()).Err(), "a recovered job lands past the marker")
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), s.Ready)
}

// loseReply makes the first pipeline that matches look failed after Redis
// ran it: a reply lost to a broken connection.
type loseReply struct {
	match func(cmds []redis.Cmder) bool
	armed atomic.Bool
}

func (h *loseReply) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *loseReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *loseReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err == nil && h.match(cmds) && h.armed.CompareAndSwap(true, false) {
			for _, c := range cmds {
				c.SetErr(io.ErrUnexpectedEOF)
			}
			return io.ErrUnexpectedEOF
		}
		return err
	}
}

func hasCmd(cmds []redis.Cmder, name, sha string) bool {
	for _, c := range cmds {
		a := c.Args()
		if len(a) > 0 && a[0] == name && (sha == "" || (len(a) > 1 && a[1] == sha)) {
			return true
		}
	}
	return false
}

// Also-fix: an outcome whose reply was lost is written again; that second
// write finds the job already moved, which is not a lost lease, and the
// retry or dead letter still counts.
func TestLostReplyOutcomeCountsOnce(t *testing.T) {
	for _, c := range []struct {
		name    string
		match   func([]redis.Cmder) bool
		handler func(*Job) error
		check   func(t *testing.T, s WorkerStats)
	}{
		{"done", func(c []redis.Cmder) bool { return hasCmd(c, "lrem", "") || hasCmd(c, "evalsha", ackScript.Hash()) },
			func(*Job) error { return nil },
			func(t *testing.T, s WorkerStats) { require.Equal(t, uint64(1), s.Processed) }},
		{"retry", func(c []redis.Cmder) bool { return hasCmd(c, "evalsha", retryScript.Hash()) },
			func(j *Job) error {
				if j.Attempt == 1 {
					return errTestFail
				}
				return nil
			},
			func(t *testing.T, s WorkerStats) { require.Equal(t, uint64(1), s.Retried) }},
		{"dead", func(c []redis.Cmder) bool { return hasCmd(c, "evalsha", deadScript.Hash()) },
			func(*Job) error { return Permanent(errTestFail) },
			func(t *testing.T, s WorkerStats) { require.Equal(t, uint64(1), s.Dead) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := serverPool(t, pool.Config{})
			g := group(t)
			q := mustQueue(t, p, "lost", Config{})
			h := &loseReply{match: c.match}
			h.armed.Store(true)
			p.Background().AddHook(h)
			w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { return c.handler(j) },
				WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})
			_, err := q.Enqueue(context.Background(), []byte("x"))
			require.NoError(t, err)
			testutil.Eventually(t, 10*time.Second, "the outcome written", func() bool {
				s := w.Stats()
				return !h.armed.Load() && s.InFlight == 0 && s.AckErrors > 0
			})
			s := w.Stats()
			require.Zero(t, s.LostLeases, "the job was not lost: the first write went through")
			c.check(t, s)
		})
	}
}

// Issue 13 item 10: one Redis call of the library moves or returns a
// bounded number of bytes, however many large jobs are due, held by a dead
// consumer, or dead. The elements here are written in the inline format
// (as older versions stored every job), so each carries its payload.
func TestCallsAreBoundedByBytes(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "bytes", Config{})
	ctx := context.Background()
	c := p.Client()
	const jobs, size = 24, 512 << 10 // 12 MiB in all
	payload := bytes.Repeat([]byte{'x'}, size)
	elem := func(i int) []byte {
		e := envelope{id: fmt.Sprint("j", i), maxAttempts: 1, payload: payload}
		return e.encode()
	}
	// Promotion.
	now := time.Now()
	for i := range jobs {
		require.NoError(t, c.ZAdd(ctx, q.k.delayed, redis.Z{Score: float64(now.UnixMilli() - 1), Member: elem(i)}).Err())
	}
	res, err := promoteScript.Run(ctx, c, q.k.promoteKeys(), now.UnixMilli(), promoteLimit, "0").Int64Slice()
	require.NoError(t, err)
	require.Positive(t, res[0])
	require.LessOrEqual(t, res[0]*size, int64(maxLuaBytes+size), "one promote call moves a bounded number of bytes")
	require.LessOrEqual(t, res[1], now.UnixMilli(), "and says more are due")

	// A batch fetch.
	require.NoError(t, c.Del(ctx, q.k.ready).Err())
	for i := range jobs {
		require.NoError(t, c.LPush(ctx, q.k.ready, elem(i)).Err())
	}
	took, err := takeScript.Run(ctx, c, q.k.takeKeys(q.k.proc("taker")), 10).StringSlice()
	require.NoError(t, err)
	require.NotEmpty(t, took)
	require.LessOrEqual(t, len(took)*size, maxLuaBytes+size, "one batch fetch moves a bounded number of bytes")
	require.NoError(t, c.Del(ctx, q.k.ready, q.k.proc("taker")).Err())

	// Dead letters read.
	for i := range jobs {
		ks, args := q.deadAddArgs(elem(i), deadLetter{id: fmt.Sprint("d", i), reason: "r", attempts: 1})
		require.NoError(t, deadScript.Run(ctx, c, ks, args...).Err())
	}
	dead, err := q.Dead(ctx, 0, 1000)
	require.NoError(t, err)
	require.NotEmpty(t, dead)
	require.LessOrEqual(t, len(dead)*size, maxCallBytes+size, "one Dead call returns a bounded number of bytes")
	seen := len(dead)
	for seen < jobs {
		more, err := q.Dead(ctx, seen, 1000)
		require.NoError(t, err)
		require.NotEmpty(t, more, "paging on with the offset reads the rest")
		seen += len(more)
	}

	// Recovery of a dead consumer's processing list.
	for i := range jobs {
		require.NoError(t, c.LPush(ctx, q.k.proc("ghost"), elem(i)).Err())
	}
	require.NoError(t, c.Del(ctx, q.k.ready, q.k.delayed).Err())
	before, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	w, err := newWorker(t, q, func(ctx context.Context, j *Job) error { return nil }, WorkerConfig{Concurrency: 1})
	require.NoError(t, err)
	n, err := w.recoverPairs(ctx, q.k.proc("ghost"), pairsOf(t, c, q.k.proc("ghost")))
	require.NoError(t, err)
	require.Equal(t, jobs, n)
	after, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, after["evalsha"]-before["evalsha"], int64(jobs*size*2/(maxLuaBytes+2*size)),
		"recovery moves its pairs in calls of bounded bytes")

	// Purge frees them in bounded calls too.
	purged, err := q.Purge(ctx)
	require.NoError(t, err)
	require.Equal(t, jobs, purged)
}

func pairsOf(t *testing.T, c redis.UniversalClient, key string) []any {
	elems, err := c.LRange(context.Background(), key, 0, -1).Result()
	require.NoError(t, err)
	var pairs []any
	for _, e := range elems {
		pairs = append(pairs, e, e)
	}
	return pairs
}

// Dead letters written by earlier versions (JSON, the element in base64)
// are still listed and requeued, including a job with a payload kept apart
// that an earlier worker could not decode (a rolling upgrade).
func TestOldFormatDeadLettersAreRead(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "compat", Config{})
	ctx := context.Background()
	c := p.Client()
	old := func(id string, element []byte) {
		rec, err := json.Marshal(map[string]any{"reason": "old", "died_ms": 1764000000000, "attempts": 2, "element": element})
		require.NoError(t, err)
		require.NoError(t, c.ZAdd(ctx, q.k.deadIdx, redis.Z{Score: 1764000000000, Member: id}).Err())
		require.NoError(t, c.HSet(ctx, q.k.deadData, id, rec).Err())
	}
	inline := envelope{id: "a", attempt: 1, maxAttempts: 2, payload: []byte("inline payload")}
	old("a", inline.encode())
	apart := envelope{id: "b", maxAttempts: 5, ref: "r1"}
	require.NoError(t, c.HSet(ctx, q.k.payloads, "r1", "payload kept apart").Err())
	old("b", apart.encode())

	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 2)
	for _, d := range dead {
		require.Equal(t, "old", d.Reason)
		require.Equal(t, 2, d.Attempts)
		require.False(t, d.Malformed)
	}
	n, err := q.Requeue(ctx, "a", "b")
	require.NoError(t, err)
	require.Equal(t, 2, n)

	g := group(t)
	got := make(chan string, 2)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error { got <- string(j.Payload); return nil }, WorkerConfig{})
	var payloads []string
	for range 2 {
		select {
		case s := <-got:
			payloads = append(payloads, s)
		case <-time.After(10 * time.Second):
			t.Fatal("requeued jobs did not run")
		}
	}
	require.ElementsMatch(t, []string{"inline payload", "payload kept apart"}, payloads)
	testutil.Eventually(t, 5*time.Second, "the payload deleted with the ack", func() bool {
		return c.Exists(ctx, q.k.payloads).Val() == 0
	})
}

// Issue 13 item 10: a batch's jobs never pass through Lua, where they would
// cost about ten times the server time of a plain command (up to
// Config.MaxBatchBytes, 16 MiB, in one call).
func TestBatchSendsNoJobsThroughLua(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "batchlua", Config{})
	ctx := context.Background()
	c := p.Client()
	require.NoError(t, c.ConfigSet(ctx, "slowlog-log-slower-than", "0").Err())
	require.NoError(t, c.ConfigSet(ctx, "slowlog-max-len", "1000").Err())
	payloads := make([][]byte, 100)
	for i := range payloads {
		payloads[i] = bytes.Repeat([]byte{'p'}, 1000+i*100) // some inline, some kept apart
	}
	for _, opts := range [][]EnqueueOption{nil, {Delay(time.Hour)}} {
		require.NoError(t, c.SlowLogReset(ctx).Err())
		_, err := q.EnqueueBatch(ctx, payloads, opts...)
		require.NoError(t, err)
		logs, err := c.SlowLogGet(ctx, -1).Result()
		require.NoError(t, err)
		for _, l := range logs {
			if strings.HasPrefix(l.Args[0], "eval") {
				require.LessOrEqual(t, len(l.Args), 10, "a script call carries the jobs: %.200v", l.Args)
			}
		}
	}
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(100), s.Ready)
	require.Equal(t, int64(100), s.Delayed)
}

// A job whose payload kept apart is gone (deleted by hand) goes to the dead
// letters with the reason; it never reaches a handler.
func TestJobWithoutItsPayloadIsDeadLettered(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "nopayload", Config{})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, make([]byte, inlineMax+1), ID("lost"))
	require.NoError(t, err)
	ok, err := q.Enqueue(ctx, make([]byte, inlineMax+1))
	require.NoError(t, err)
	refs, err := p.Client().HKeys(ctx, q.k.payloads).Result()
	require.NoError(t, err)
	require.Len(t, refs, 2)
	elems, err := p.Client().LRange(ctx, q.k.ready, 0, -1).Result()
	require.NoError(t, err)
	for _, e := range elems {
		env, err := decodeEnvelope([]byte(e))
		require.NoError(t, err)
		if env.id == "lost" {
			require.NoError(t, p.Client().HDel(ctx, q.k.payloads, env.ref).Err())
		}
	}
	g := group(t)
	ran := make(chan string, 2)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { ran <- j.ID; return nil }, WorkerConfig{})
	select {
	case id := <-ran:
		require.Equal(t, ok, id)
	case <-time.After(10 * time.Second):
		t.Fatal("the job with its payload did not run")
	}
	testutil.Eventually(t, 10*time.Second, "the other dead", func() bool { return w.Stats().Dead == 1 && w.Stats().Malformed == 1 })
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "lost", dead[0].ID)
	require.Contains(t, dead[0].Reason, "is missing")
	require.Empty(t, drainStrings(ran))
	testutil.Eventually(t, 5*time.Second, "nothing left", func() bool { return p.Client().Exists(ctx, q.k.payloads, q.k.unique("lost")).Val() == 0 })
}

func drainStrings(ch chan string) []string {
	var got []string
	for {
		select {
		case v := <-ch:
			got = append(got, v)
		default:
			return got
		}
	}
}

// A duplicate ID leaves no payload behind, delayed or not.
func TestDuplicateLargeJobLeavesNoPayload(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "dup", Config{})
	ctx := context.Background()
	big := make([]byte, inlineMax+1)
	_, err := q.Enqueue(ctx, big, ID("x"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, big, ID("x"))
	require.ErrorIs(t, err, ErrDuplicate)
	_, err = q.Enqueue(ctx, big, ID("x"), Delay(time.Hour))
	require.ErrorIs(t, err, ErrDuplicate)
	n, err := p.Client().HLen(ctx, q.k.payloads).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}
