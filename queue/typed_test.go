package queue

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func TestEnvelopeTypeRoundTrip(t *testing.T) {
	hs, err := encodeHeaders([]header{{"a", "1"}})
	require.NoError(t, err)
	for _, c := range []struct {
		e    envelope
		want string
	}{
		{envelope{id: "j", maxAttempts: 1, typ: "email.send", payload: []byte("p|q")},
			"bq1|j|0|1|0|0|0|t|10|email.sendp|q"},
		{envelope{id: "j", maxAttempts: 1, typ: "a|b:7", payload: []byte("7|x")},
			"bq1|j|0|1|0|0|0|t|5|a|b:77|x"}, // '|' in a type is no separator
		{envelope{id: "j", maxAttempts: 1, unique: true, typ: "x", ref: "r1"},
			"bq1|j|0|1|0|0|0|urt|1|xr1"},
		{envelope{id: "j", maxAttempts: 1, typ: "x", headers: hs, payload: []byte("p")},
			"bq1|j|0|1|0|0|0|ht|6|1:a1:11|xp"},
		{envelope{id: "j", maxAttempts: 1, typ: "x", deadline: time.UnixMilli(9), window: 3 * time.Millisecond},
			"bq1|j|0|1|0|0|0|dwt|9|3|1|x"},
		{envelope{id: "j", maxAttempts: 1, typ: strings.Repeat("T", MaxTypeLen), payload: []byte("p")},
			"bq1|j|0|1|0|0|0|t|128|" + strings.Repeat("T", MaxTypeLen) + "p"},
	} {
		c.e.enqueuedAt = time.UnixMilli(0)
		b := c.e.encode()
		require.Equal(t, c.want, string(b))
		got, err := decodeEnvelope(b)
		require.NoError(t, err, c.want)
		require.Equal(t, c.e.typ, got.typ)
		require.Equal(t, c.e.ref, got.ref)
		require.Equal(t, string(c.e.payload), string(got.payload))
		require.Equal(t, b, got.encode(), "re-encodes to the same bytes")
	}
}

// A job without a type is written exactly as before types existed.
func TestEnvelopeWithoutTypeCostsNothing(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	now := time.UnixMilli(1764000000123)
	q := mustQueue(t, p, "notype", Config{Now: func() time.Time { return now }})
	pr, err := q.prepare([]byte("payload"), []EnqueueOption{ID("order-1")})
	require.NoError(t, err)
	require.Equal(t, "bq1|order-1|0|5|0|1764000000123|0|u|payload", string(pr.elem))
	pr, err = q.prepare([]byte("payload"), []EnqueueOption{ID("order-1"), Type("order.paid")})
	require.NoError(t, err)
	require.Equal(t, "bq1|order-1|0|5|0|1764000000123|0|ut|10|order.paidpayload", string(pr.elem))
	// Decoding a typed element costs the type's string, no more.
	allocs := testing.AllocsPerRun(100, func() { _, _ = decodeEnvelope(pr.elem) })
	require.Equal(t, 2.0, allocs, "the ID's string and the type's")
}

func TestTypeOptionRefusesBadTypes(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	q := mustQueue(t, p, "badtype", Config{})
	for _, c := range []struct{ typ, want string }{
		{"", `Type(""): a job type must not be empty`},
		{"email send", `Type("email send"): byte " " at 5`},
		{"a\nb", `Type("a\nb"): byte "\n" at 1`},
		{"é", `Type("é"): byte "\xc3" at 0`},
		{"\x7f", `byte "\x7f" at 0`},
		{strings.Repeat("t", MaxTypeLen+1), "129 bytes, the limit is 128 (MaxTypeLen)"},
	} {
		_, err := q.prepare(nil, []EnqueueOption{Type(c.typ)})
		require.ErrorContains(t, err, c.want, "%q", c.typ)
		// Refused before Redis is asked: this pool has no server.
		_, err = q.Enqueue(context.Background(), nil, Type(c.typ))
		require.ErrorContains(t, err, c.want)
		_, err = q.EnqueueBatch(context.Background(), [][]byte{nil}, Type(c.typ))
		require.ErrorContains(t, err, c.want)
		err = q.Schedule(context.Background(), "s", "@daily", nil, JobType(c.typ))
		require.ErrorContains(t, err, c.want)
	}
	_, err := q.prepare(nil, []EnqueueOption{Type("a|b"), Type("later.wins")})
	require.NoError(t, err)
}

func TestDecodeRejectsMalformedTypes(t *testing.T) {
	const pre = "bq1|id|0|1|0|5|0|"
	for _, c := range []struct{ in, want string }{
		{"t|3|abcp", ""}, // the reference: this one is fine
		{"t|", "type length"},
		{"t|x", "type length"},
		{"t||abc", "type length"},
		{"t|0|abc", "type length"},
		{"t|03|abc", "type length"},
		{"t|+3|abc", "type length"},
		{"t|-3|abc", "type length"},
		{"t|4|abc", "out of range"}, // past the end
		{"t|129|" + strings.Repeat("a", 200), "out of range"},
		{"t|1000|abc", "type length"},
		{"t|3|a c", `has byte " " at 1`},
		{"t|2|a\x00", `has byte "\x00" at 1`},
		{"tt|1|a1|b", `unknown flags "tt"`},
		{"th|1|a5|1:a0:", `unknown flags "th"`},
		{"tu|1|a", `unknown flags "tu"`},
		{"rt|1|abad!", "payload ref"},
		{"ht|5|1:a0:1|ap", ""},
		{"dt|1764000000000|1|ap", ""},
	} {
		e, err := decodeEnvelope([]byte(pre + c.in))
		if c.want == "" {
			require.NoError(t, err, c.in)
			require.Equal(t, "p", string(e.payload), c.in)
			continue
		}
		require.ErrorIs(t, err, errMalformed, c.in)
		require.ErrorContains(t, err, c.want, c.in)
	}
}

// FuzzType: whatever type the option accepts, on any kind of job, decodes
// to itself and re-encodes to the same bytes, through a retry too.
func FuzzType(f *testing.F) {
	f.Add("email.send", "k", "", 10)
	f.Add("a|b", "", "order-1", 5000)
	f.Add("1|x", "2:", "id", 0)
	f.Add("t", "", "", 1)
	p, err := pool.New(pool.Config{Addrs: []string{"127.0.0.1:1"}})
	require.NoError(f, err)
	f.Cleanup(func() { _ = p.Close() })
	q, err := New(p, "fzt", Config{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, typ, hk, id string, size int) {
		opts := []EnqueueOption{Type(typ)}
		if hk != "" {
			opts = append(opts, Header(hk, "v"))
		}
		if id != "" {
			opts = append(opts, ID(id))
		}
		payload := bytes.Repeat([]byte(typ+"|"), max(0, size%10000)/max(1, len(typ)+1))
		pr, err := q.prepare(payload, opts)
		if err != nil {
			return
		}
		e, err := decodeEnvelope(pr.elem)
		require.NoError(t, err, "an accepted job must decode: %q", preview(pr.elem))
		require.Equal(t, typ, e.typ)
		require.Equal(t, pr.elem, e.encode())
		if e.ref == "" {
			require.Equal(t, payload, e.payload)
		}
		next := e
		next.attempt, next.deliveries = e.maxAttempts-1, 7
		again, err := decodeEnvelope(next.encode())
		require.NoError(t, err)
		require.Equal(t, typ, again.typ, "a retry keeps it")
	})
}

// The same payload under two types is two jobs for IDFromPayload; without
// a type the ID is the one earlier versions derived.
func TestIDFromPayloadHashesTheType(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "idtype", Config{})
	a, err := q.Enqueue(ctx, []byte("same"), IDFromPayload(), Type("a"))
	require.NoError(t, err)
	b, err := q.Enqueue(ctx, []byte("same"), IDFromPayload(), Type("b"))
	require.NoError(t, err)
	require.NotEqual(t, a, b)
	_, err = q.Enqueue(ctx, []byte("same"), IDFromPayload(), Type("a"))
	require.ErrorIs(t, err, ErrDuplicate)
	none, err := q.Enqueue(ctx, []byte("same"), IDFromPayload())
	require.NoError(t, err)
	require.Equal(t, "sha256-0967115f2813a3541eaef77de9d9d5773f1c0c04314b0bbfe4ff3b3b1c55b5d5", none, "sha256 of the payload alone")
	require.NotContains(t, []string{a, b}, none)
}

type typedRun struct {
	id, typ string
	attempt int
}

// The type travels with a job wherever it goes: plain, delayed, batched,
// unique and large (kept apart) jobs; a retry; the dead letters (DeadJob,
// the Inspector, OnDead) and Requeue; a debounced job replaced (the
// replacing enqueue's type); Get while it waits; recovery from a dead
// consumer and from a previous life of the same consumer ID; occurrences
// of a schedule.
func TestTypeTravelsWithTheJob(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testTypeTravels(t, np) })
	}
}

func testTypeTravels(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "ttravel", Config{})
	large := bytes.Repeat([]byte("L"), 5000)
	c := p.Client()

	// A job this consumer ID held in a previous life, found at Start.
	prev := envelope{id: "previous-life", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("prev"), typ: "t.prev"}
	require.NoError(t, c.LPush(ctx, q.k.proc("stable-id"), prev.encode()).Err())

	runs := make(chan typedRun, 32)
	deadHook := make(chan Outcome, 4)
	var died atomic.Bool
	g := group(t)
	startWorker(t, g, q, func(_ context.Context, j *Job) error {
		runs <- typedRun{j.ID, j.Type, j.Attempt}
		switch string(j.Payload) {
		case "retry":
			if j.Attempt == 1 {
				return errors.New("once more")
			}
		case "die":
			if died.CompareAndSwap(false, true) {
				return Permanent(errors.New("to the dead letters"))
			}
		}
		return nil
	}, WorkerConfig{Concurrency: 2, RetryBase: time.Millisecond, RetryMax: time.Millisecond,
		OnDead: func(o Outcome) { deadHook <- o }},
		ConsumerConfig{ConsumerID: "stable-id", HeartbeatInterval: 100 * time.Millisecond})

	expect := func(what, id, typ string, attempt int) {
		t.Helper()
		r := recv(t, runs, 10*time.Second, what)
		require.Equal(t, typedRun{id, typ, attempt}, r, what)
	}
	expect("a job of a previous life of the consumer", "previous-life", "t.prev", 1)

	id, err := q.Enqueue(ctx, []byte("plain"), Type("t.plain"))
	require.NoError(t, err)
	expect("a plain job", id, "t.plain", 1)

	id, err = q.Enqueue(ctx, []byte("none"))
	require.NoError(t, err)
	expect("a job without a type", id, "", 1)

	id, err = q.Enqueue(ctx, []byte("retry"), Type("t.retry"), Delay(20*time.Millisecond))
	require.NoError(t, err)
	expect("a delayed job", id, "t.retry", 1)
	expect("its retry", id, "t.retry", 2)

	id, err = q.Enqueue(ctx, large, Type("t.large"), ID("big-one"))
	require.NoError(t, err)
	expect("a unique job with its payload kept apart", id, "t.large", 1)

	ids, err := q.EnqueueBatch(ctx, [][]byte{[]byte("b1"), large}, Type("t.batch"))
	require.NoError(t, err)
	got := map[string]string{}
	for range ids {
		r := recv(t, runs, 10*time.Second, "a batch's job")
		got[r.id] = r.typ
	}
	require.Equal(t, map[string]string{ids[0]: "t.batch", ids[1]: "t.batch"}, got)

	// Debounce: the replacing enqueue's type; Get shows it while delayed.
	_, err = q.Enqueue(ctx, []byte("d1"), Type("t.first"), ID("deb"), Delay(time.Hour), Debounce())
	require.NoError(t, err)
	info, err := q.Get(ctx, "deb")
	require.NoError(t, err)
	require.Equal(t, "t.first", info.Type)
	_, err = q.Enqueue(ctx, []byte("d2"), Type("t.second"), ID("deb"), Delay(time.Hour), ReplacePayload())
	require.NoError(t, err)
	info, err = q.Get(ctx, "deb")
	require.NoError(t, err)
	require.Equal(t, "t.second", info.Type)
	_, err = q.Enqueue(ctx, []byte("d3"), Type("t.third"), ID("deb"), Delay(10*time.Millisecond), Debounce())
	require.NoError(t, err)
	expect("a debounced job", "deb", "t.third", 1)

	// The dead letters keep it, and so does Requeue.
	id, err = q.Enqueue(ctx, []byte("die"), Type("t.die"))
	require.NoError(t, err)
	expect("a job that dies", id, "t.die", 1)
	o := recv(t, deadHook, 10*time.Second, "OnDead")
	require.Equal(t, "t.die", o.Job.Type)
	var dead []DeadJob
	testutil.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		dead, err = q.Dead(ctx, 0, 10)
		require.NoError(t, err)
		return len(dead) == 1
	})
	require.Equal(t, "t.die", dead[0].Type)
	in, err := NewInspector(p, q.cfg.Namespace)
	require.NoError(t, err)
	page, err := in.Jobs(ctx, q.name, StateDead, "", 10)
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	require.Equal(t, "t.die", page.Jobs[0].Type)
	n, err := in.Requeue(ctx, q.name, id)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	expect("the requeued job", id, "t.die", 1)

	// Recovery from a dead consumer.
	env := envelope{id: "ghostly", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("ghost"), typ: "t.ghost"}
	require.NoError(t, c.LPush(ctx, q.k.proc("ghost"), env.encode()).Err())
	require.NoError(t, c.ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "ghost"}).Err())
	require.NoError(t, c.SAdd(ctx, q.k.consumers, "ghost").Err())
	expect("a job recovered from a dead consumer", "ghostly", "t.ghost", 1)
}

// The occurrences of a schedule carry its JobType, and so does each
// successor a worker enqueues; a definition without one hashes as before.
func TestCronJobType(t *testing.T) {
	f := newCronFleet(t, 1, Config{})
	ctx := context.Background()
	q := f.qs[0]
	require.NoError(t, q.Schedule(ctx, "typed", Every(time.Minute), nil, JobType("report.daily")))
	for range 2 {
		zs, err := q.p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
		require.NoError(t, err)
		require.Len(t, zs, 1)
		e, err := decodeEnvelope([]byte(zs[0]))
		require.NoError(t, err)
		require.Equal(t, "report.daily", e.typ, e.id)
		_, run := f.take(false)
		require.True(t, run)
	}
}
