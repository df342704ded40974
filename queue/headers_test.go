package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestEnvelopeHeadersRoundTrip(t *testing.T) {
	hs, err := encodeHeaders([]header{{"traceparent", "tp"}, {"a", ""}, {"b", "é"}})
	require.NoError(t, err)
	require.Equal(t, "1:a0:1:b2:é11:traceparent2:tp", string(hs), "sorted by key, lengths in bytes")
	for _, c := range []struct {
		e    envelope
		want string
	}{
		{envelope{id: "j", maxAttempts: 1, headers: hs, payload: []byte("p|q")},
			"bq1|j|0|1|0|0|0|h|30|1:a0:1:b2:é11:traceparent2:tpp|q"},
		{envelope{id: "j", maxAttempts: 1, unique: true, headers: hs, ref: "r1"},
			"bq1|j|0|1|0|0|0|urh|30|1:a0:1:b2:é11:traceparent2:tpr1"},
		{envelope{id: "j", maxAttempts: 1, headers: hs, ref: "r1"},
			"bq1|j|0|1|0|0|0|rh|30|1:a0:1:b2:é11:traceparent2:tpr1"},
		{envelope{id: "j", maxAttempts: 1, unique: true, headers: hs},
			"bq1|j|0|1|0|0|0|uh|30|1:a0:1:b2:é11:traceparent2:tp"},
	} {
		c.e.enqueuedAt = time.UnixMilli(0)
		b := c.e.encode()
		require.Equal(t, c.want, string(b))
		got, err := decodeEnvelope(b)
		require.NoError(t, err, c.want)
		require.Equal(t, hs, got.headers)
		require.Equal(t, c.e.unique, got.unique)
		require.Equal(t, c.e.ref, got.ref)
		require.Equal(t, string(c.e.payload), string(got.payload))
		require.Equal(t, map[string]string{"a": "", "b": "é", "traceparent": "tp"}, headerMap(got.headers))
		require.Equal(t, b, got.encode(), "re-encodes to the same bytes")
	}
}

// A job without headers is written exactly as before headers existed (no
// flag, not one byte more), and decoding it allocates no more than the ID.
func TestEnvelopeWithoutHeadersCostsNothing(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	now := time.UnixMilli(1764000000123)
	q := mustQueue(t, p, "noh", Config{Now: func() time.Time { return now }})
	pr, err := q.prepare([]byte("payload"), []EnqueueOption{ID("order-1")})
	require.NoError(t, err)
	require.Equal(t, "bq1|order-1|0|5|0|1764000000123|0|u|payload", string(pr.elem))
	pr, err = q.prepare([]byte("payload"), []EnqueueOption{ID("order-1"), Headers(nil), Headers(map[string]string{})})
	require.NoError(t, err)
	require.NotContains(t, string(pr.elem), "h|", "empty header options add nothing")

	e, err := decodeEnvelope(pr.elem)
	require.NoError(t, err)
	require.Nil(t, e.headers)
	require.Nil(t, headerMap(e.headers))
	allocs := testing.AllocsPerRun(100, func() {
		e, _ := decodeEnvelope(pr.elem)
		_ = headerMap(e.headers)
	})
	require.Equal(t, 1.0, allocs, "the ID's string only")
}

func TestHeaderOptionsRefuseBadEntries(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	q := mustQueue(t, p, "badh", Config{})
	many := map[string]string{}
	for i := range MaxHeaders + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	var sixteen, seventeen []EnqueueOption
	for i := range MaxHeaders + 1 {
		o := Header(fmt.Sprint("k", i), "v")
		if i < MaxHeaders {
			sixteen = append(sixteen, o)
		}
		seventeen = append(seventeen, o)
	}
	half := strings.Repeat("x", MaxHeaderBytes/2)
	for _, c := range []struct {
		name string
		opts []EnqueueOption
		want string // "" for accepted
	}{
		{"empty key", []EnqueueOption{Header("", "v")}, "empty key"},
		{"space in key", []EnqueueOption{Header("trace parent", "v")}, `key "trace parent" has byte ' ' at 5`},
		{"newline in key", []EnqueueOption{Header("a\nb", "v")}, `key "a\nb" has byte '\n' at 1`},
		{"non-ASCII key", []EnqueueOption{Header("clé", "v")}, `key "clé" has byte`},
		{"key too long", []EnqueueOption{Header(strings.Repeat("k", MaxHeaderKeyLen+1), "v")}, "is 257 bytes, the limit is 256"},
		{"longest key", []EnqueueOption{Header(strings.Repeat("k", MaxHeaderKeyLen), "v")}, ""},
		{"invalid UTF-8 value", []EnqueueOption{Header("k", "\xff")}, `the value of "k" is not valid UTF-8`},
		{"control in value", []EnqueueOption{Header("k", "a\r\nb")}, `the value of "k" has control character '\r' at 1`},
		{"DEL in value", []EnqueueOption{Header("k", "\x7f")}, `control character`},
		{"empty value", []EnqueueOption{Header("k", "")}, ""},
		{"bad entry in a map", []EnqueueOption{Headers(map[string]string{"ok": "v", "x y": "v"})}, `key "x y"`},
		{"17 in a map", []EnqueueOption{Headers(many)}, "17 entries, the limit is 16"},
		{"16 options", sixteen, ""},
		{"17 options", seventeen, "17 entries, the limit is 16"},
		{"a key set twice counts once", append(sixteen, Header("k0", "again")), ""},
		{"4 KiB", []EnqueueOption{Header("a", half[2:]), Header("b", half)}, ""},
		{"over 4 KiB", []EnqueueOption{Header("a", half), Header("b", half)}, "4098 bytes, the limit is 4096"},
	} {
		_, err := q.prepare(nil, c.opts)
		if c.want == "" {
			require.NoError(t, err, c.name)
			continue
		}
		require.ErrorIs(t, err, ErrInvalidHeader, c.name)
		require.ErrorContains(t, err, c.want, c.name)
	}

	// Through Enqueue, EnqueueBatch and Schedule: refused before Redis is
	// asked (this pool has no server).
	ctx := context.Background()
	_, err := q.Enqueue(ctx, nil, Header("", "v"))
	require.ErrorIs(t, err, ErrInvalidHeader)
	_, err = q.EnqueueBatch(ctx, [][]byte{nil}, Headers(many))
	require.ErrorIs(t, err, ErrInvalidHeader)
	err = q.Schedule(ctx, "s", "@daily", nil, JobHeaders(map[string]string{"k": "\n"}))
	require.ErrorIs(t, err, ErrInvalidHeader)
	err = q.Schedule(ctx, "s", "@daily", nil, JobHeaders(map[string]string{"a": half, "b": half}))
	require.ErrorIs(t, err, ErrInvalidHeader)
}

func TestHeaderLaterOptionWins(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	q := mustQueue(t, p, "hwin", Config{})
	src := map[string]string{"a": "1", "b": "2"}
	opt := Headers(src)
	src["a"] = "changed after the option was made"
	pr, err := q.prepare(nil, []EnqueueOption{Header("b", "0"), opt, Header("a", "3")})
	require.NoError(t, err)
	e, err := decodeEnvelope(pr.elem)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"a": "3", "b": "2"}, headerMap(e.headers))
}

func TestDecodeRejectsMalformedHeaders(t *testing.T) {
	const pre = "bq1|id|0|1|0|5|0|"
	for _, c := range []struct{ in, want string }{
		{"h|", "header section length"},
		{"h|x", "header section length"},
		{"h|0|", "out of range"},
		{"h|05|1:a0:", "out of range"},
		{"h|+5|1:a0:", "out of range"},
		{"h|-5|1:a0:", "out of range"},
		{"h|6|1:a0:", "out of range"}, // past the end
		{"h|999999|1:a0:", "header section length"},
		{"h|5|1:a0:payload", ""}, // the reference: this one is fine
		{"h|2|1:", "key: length 1 past the section's end"},
		{"h|3|1:a", "value: bad length"},
		{"h|4|0:0:", "empty key"},
		{"h|6|01:a0:", "key: bad length"},
		{"h|10|1:b0:1:a0:", "keys must be distinct and sorted"},
		{"h|10|1:a0:1:a0:", "keys must be distinct and sorted"},
		{"h|6|1:a1:\n", "control character"},
		{"h|7|3:a b0:", "has byte ' '"},
		{"h|6|1:a9:0", "value: length 9 past the section's end"},
		{"hu|5|1:a0:", `unknown flags "hu"`},
		{"hr|5|1:a0:r1", `unknown flags "hr"`},
		{"hh|5|1:a0:", `unknown flags "hh"`},
		{"rh|5|1:a0:", "payload ref"},
		{"dh|1764000000000|5|1:a0:p", ""}, // a deadline, then the headers
		{"hd|5|1:a0:p", `unknown flags "hd"`},
	} {
		_, err := decodeEnvelope([]byte(pre + c.in))
		if c.want == "" {
			require.NoError(t, err, c.in)
			continue
		}
		require.ErrorIs(t, err, errMalformed, c.in)
		require.ErrorContains(t, err, c.want, c.in)
	}
	// The bounds: 17 entries, and 4097 bytes.
	var b bytes.Buffer
	for i := range MaxHeaders + 1 {
		k := fmt.Sprintf("k%02d", i)
		fmt.Fprintf(&b, "%d:%s0:", len(k), k)
	}
	_, err := decodeEnvelope(fmt.Appendf(nil, "%sh|%d|%s", pre, b.Len(), b.String()))
	require.ErrorContains(t, err, "more than 16 headers")
	v := strings.Repeat("v", MaxHeaderBytes)
	sec := "1:a" + fmt.Sprint(len(v)) + ":" + v
	_, err = decodeEnvelope(fmt.Appendf(nil, "%sh|%d|%s", pre, len(sec), sec))
	require.ErrorContains(t, err, "headers over 4096 bytes")
}

// FuzzHeaders: whatever headers the options accept, on any kind of job,
// decode to the same map, and the element re-encodes to the same bytes.
func FuzzHeaders(f *testing.F) {
	f.Add("traceparent", testTraceparent, "tracestate", "rojo=00f067aa0ba902b7", "", 10)
	f.Add("a", "", "a", "x", "order-1", 5000)
	f.Add("k", "é\u2028", "K", "|:|", "id", 0)
	f.Add("x", "\x00", "", "", "", 1)
	p, err := pool.New(pool.Config{Addrs: []string{"127.0.0.1:1"}})
	require.NoError(f, err)
	f.Cleanup(func() { _ = p.Close() })
	q, err := New(p, "fzh", Config{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, id string, size int) {
		opts := []EnqueueOption{Header(k1, v1), Headers(map[string]string{k2: v2})}
		if id != "" {
			opts = append(opts, ID(id))
		}
		pr, err := q.prepare(make([]byte, max(0, size%10000)), opts)
		if err != nil {
			return
		}
		e, err := decodeEnvelope(pr.elem)
		require.NoError(t, err, "an accepted job must decode: %q", preview(pr.elem))
		want := map[string]string{k1: v1}
		maps.Copy(want, map[string]string{k2: v2})
		require.Equal(t, want, headerMap(e.headers))
		require.Equal(t, pr.elem, e.encode())
		next := e
		next.attempt, next.deliveries = e.maxAttempts-1, 7
		again, err := decodeEnvelope(next.encode())
		require.NoError(t, err)
		require.Equal(t, want, headerMap(again.headers), "a retry keeps them")
	})
}

// Headers travel with a job wherever it goes: a plain, delayed, batched,
// unique and large (kept apart) job; a retry; the dead letters and
// Requeue; recovery from a dead consumer; occurrences of a schedule.
func TestHeadersTravelWithTheJob(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testHeadersTravel(t, np) })
	}
}

type run struct {
	id      string
	attempt int
	headers map[string]string
}

func testHeadersTravel(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "travel", Config{})
	tp := map[string]string{"traceparent": testTraceparent}
	large := bytes.Repeat([]byte("L"), 5000)

	runs := make(chan run, 32)
	var died atomic.Bool
	g := group(t)
	startWorker(t, g, q, func(_ context.Context, j *Job) error {
		runs <- run{j.ID, j.Attempt, maps.Clone(j.Headers)}
		maps.DeleteFunc(j.Headers, func(string, string) bool { return true }) // the run's own map
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
	}, WorkerConfig{Concurrency: 2, RetryBase: time.Millisecond, RetryMax: time.Millisecond},
		ConsumerConfig{HeartbeatInterval: 100 * time.Millisecond})

	expect := func(what, id string, attempt int, want map[string]string) {
		t.Helper()
		r := recv(t, runs, 10*time.Second, what)
		require.Equal(t, id, r.id, what)
		require.Equal(t, attempt, r.attempt, what)
		require.Equal(t, want, r.headers, what)
	}

	id, err := q.Enqueue(ctx, []byte("plain"), Headers(tp))
	require.NoError(t, err)
	expect("a plain job", id, 1, tp)

	id, err = q.Enqueue(ctx, []byte("none"))
	require.NoError(t, err)
	expect("a job without headers", id, 1, nil)

	id, err = q.Enqueue(ctx, []byte("retry"), Headers(tp), Delay(20*time.Millisecond))
	require.NoError(t, err)
	expect("a delayed job", id, 1, tp)
	expect("its retry, despite the handler emptying the map", id, 2, tp)

	id, err = q.Enqueue(ctx, large, Headers(tp), ID("big-one"))
	require.NoError(t, err)
	expect("a unique job with its payload kept apart", id, 1, tp)

	ids, err := q.EnqueueBatch(ctx, [][]byte{[]byte("b1"), large}, Header("tenant", "t1"))
	require.NoError(t, err)
	got := map[string]map[string]string{}
	for range ids {
		r := recv(t, runs, 10*time.Second, "a batch's job")
		got[r.id] = r.headers
	}
	for _, id := range ids {
		require.Equal(t, map[string]string{"tenant": "t1"}, got[id])
	}

	// The dead letters keep them, and so does Requeue.
	id, err = q.Enqueue(ctx, []byte("die"), Headers(tp))
	require.NoError(t, err)
	expect("a job that dies", id, 1, tp)
	var dead []DeadJob
	testutil.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		dead, err = q.Dead(ctx, 0, 10)
		require.NoError(t, err)
		return len(dead) == 1
	})
	require.Equal(t, tp, dead[0].Headers)
	n, err := q.Requeue(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	expect("the requeued job", id, 1, tp)

	// Recovery from a dead consumer.
	c := p.Client()
	env := envelope{id: "ghostly", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("ghost")}
	env.headers, err = encodeHeaders([]header{{"traceparent", testTraceparent}})
	require.NoError(t, err)
	require.NoError(t, c.LPush(ctx, q.k.proc("ghost"), env.encode()).Err())
	require.NoError(t, c.ZAdd(ctx, heartbeatKey(q.cfg.Namespace), redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "ghost"}).Err())
	require.NoError(t, c.SAdd(ctx, q.k.consumers, "ghost").Err())
	expect("a job recovered from a dead consumer", "ghostly", 1, tp)
}

// The occurrences of a schedule carry its JobHeaders, and so does each
// successor a worker enqueues.
func TestCronJobHeaders(t *testing.T) {
	f := newCronFleet(t, 1, Config{})
	ctx := context.Background()
	q := f.qs[0]
	h := map[string]string{"team": "billing"}
	require.NoError(t, q.Schedule(ctx, "h", Every(time.Minute), nil, JobHeaders(h)))
	h["team"] = "changed after"
	for range 2 {
		zs, err := q.p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
		require.NoError(t, err)
		require.Len(t, zs, 1)
		e, err := decodeEnvelope([]byte(zs[0]))
		require.NoError(t, err)
		require.Equal(t, map[string]string{"team": "billing"}, headerMap(e.headers), e.id)
		_, run := f.take(false)
		require.True(t, run)
	}
	// A definition without headers hashes as before headers existed: the
	// same schedule registered again by an older build is not a new one.
	d := scheduleDef{Spec: "@daily", MaxCatchUp: 1}
	blob, err := json.Marshal(d)
	require.NoError(t, err)
	require.NotContains(t, string(blob), "headers")
}

func TestCheckHeader(t *testing.T) {
	require.NoError(t, CheckHeader("traceparent", testTraceparent))
	require.NoError(t, CheckHeader("k", "é"))
	require.ErrorIs(t, CheckHeader("a b", ""), ErrInvalidHeader)
	require.ErrorIs(t, CheckHeader("k", "\xff"), ErrInvalidHeader)
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = CheckHeader("traceparent", testTraceparent) }),
		"middleware checks every entry it adds: an ASCII one costs no allocation")
}
