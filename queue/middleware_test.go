package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

type requestIDKey struct{}

var errNoTenant = errors.New("no tenant")

// BeforeEnqueue sees every new job with the caller's ctx: it adds headers
// (the caller's own win when it checks Header first), refuses jobs (nothing
// written, a batch all or nothing), and is not called again for a retry or
// Requeue.
func TestBeforeEnqueue(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testBeforeEnqueue(t, np) })
	}
}

func testBeforeEnqueue(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	ctx := context.Background()
	var calls atomic.Int64
	var lastSeen atomic.Pointer[Enqueuing]
	q := mustQueue(t, p, "hook", Config{BeforeEnqueue: func(ctx context.Context, e *Enqueuing) error {
		calls.Add(1)
		seen := Enqueuing{Queue: e.Queue, Type: e.Type, Payload: e.Payload}
		lastSeen.Store(&seen)
		if strings.HasPrefix(string(e.Payload), "refuse") {
			return errNoTenant
		}
		if id, ok := ctx.Value(requestIDKey{}).(string); ok {
			if _, set := e.Header("request-id"); !set {
				if err := e.SetHeader("request-id", id); err != nil {
					return err
				}
			}
		}
		return nil
	}})
	runs := make(chan map[string]string, 8)
	g := group(t)
	startWorker(t, g, q, func(_ context.Context, j *Job) error {
		runs <- maps.Clone(j.Headers)
		if string(j.Payload) == "retry" && j.Attempt == 1 {
			return errors.New("once more")
		}
		return nil
	}, WorkerConfig{RetryBase: time.Millisecond, RetryMax: time.Millisecond})

	reqCtx := context.WithValue(ctx, requestIDKey{}, "req-7")
	_, err := q.Enqueue(reqCtx, []byte("plain"), Type("t.x"), Header("a", "1"))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"a": "1", "request-id": "req-7"}, recv(t, runs, 10*time.Second, "the job"))
	require.Equal(t, Enqueuing{Queue: "hook", Type: "t.x", Payload: []byte("plain")}, *lastSeen.Load())

	_, err = q.Enqueue(reqCtx, []byte("own"), Header("request-id", "mine"))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"request-id": "mine"}, recv(t, runs, 10*time.Second, "the job with its own header"))

	_, err = q.Enqueue(ctx, []byte("no ctx value"))
	require.NoError(t, err)
	require.Nil(t, recv(t, runs, 10*time.Second, "the job without"))

	// Refused: nothing written, the hook's error wrapped.
	before := calls.Load()
	_, err = q.Enqueue(reqCtx, []byte("refuse me"))
	require.ErrorIs(t, err, errNoTenant)
	require.EqualError(t, err, `queue "hook": enqueue: queue: Config.BeforeEnqueue refused the job: no tenant`)
	_, err = q.EnqueueBatch(reqCtx, [][]byte{[]byte("b1"), []byte("refuse b2"), []byte("b3")})
	require.ErrorIs(t, err, errNoTenant)
	require.ErrorContains(t, err, "job 1:")
	require.Equal(t, before+3, calls.Load(), "called per job, up to the refused one")
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Ready+st.Delayed, "nothing written")

	// A batch: once per job.
	before = calls.Load()
	_, err = q.EnqueueBatch(reqCtx, [][]byte{[]byte("b1"), []byte("b2")})
	require.NoError(t, err)
	require.Equal(t, before+2, calls.Load())
	for range 2 {
		require.Equal(t, map[string]string{"request-id": "req-7"}, recv(t, runs, 10*time.Second, "a batch's job"))
	}

	// A retry is no new job.
	before = calls.Load()
	_, err = q.Enqueue(reqCtx, []byte("retry"))
	require.NoError(t, err)
	recv(t, runs, 10*time.Second, "the first run")
	require.Equal(t, map[string]string{"request-id": "req-7"}, recv(t, runs, 10*time.Second, "the retry"))
	require.Equal(t, before+1, calls.Load())

	// EnqueueJSON goes through it too.
	_, err = EnqueueJSON(reqCtx, q, map[string]int{"n": 1})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"request-id": "req-7"}, recv(t, runs, 10*time.Second, "the JSON job"))
}

func TestEnqueuingSetHeaderBounds(t *testing.T) {
	p := mustPool(t, pool.Config{Addrs: []string{"127.0.0.1:1"}})
	var errs []error
	q := mustQueue(t, p, "hookb", Config{BeforeEnqueue: func(_ context.Context, e *Enqueuing) error {
		errs = append(errs, e.SetHeader("trace parent", "x"))
		errs = append(errs, e.SetHeader("k", "\n"))
		errs = append(errs, e.SetHeader("k0", "replaces, so it fits"))
		errs = append(errs, e.SetHeader("extra", "one too many"))
		return nil
	}})
	var opts []EnqueueOption
	for i := range MaxHeaders {
		opts = append(opts, Header(fmt.Sprint("k", i), "v"))
	}
	pr, err := q.prepare(nil, q.withHook(context.Background(), nil, opts))
	require.NoError(t, err, "the refused entries were not set")
	require.Len(t, errs, 4)
	for _, i := range []int{0, 1, 3} {
		require.ErrorIs(t, errs[i], ErrInvalidHeader, i)
	}
	require.ErrorContains(t, errs[0], `key "trace parent" has byte ' ' at 5`)
	require.ErrorContains(t, errs[3], `"extra" would be entry 17, the limit is 16`)
	require.NoError(t, errs[2])
	e, err := decodeEnvelope(pr.elem)
	require.NoError(t, err)
	hs := headerMap(e.headers)
	require.Len(t, hs, MaxHeaders)
	require.Equal(t, "replaces, so it fits", hs["k0"])

	errs = errs[:0]
	big := strings.Repeat("v", MaxHeaderBytes-10)
	pr, err = q.prepare(nil, q.withHook(context.Background(), nil, []EnqueueOption{Header("a", big)}))
	require.NoError(t, err)
	require.ErrorContains(t, errs[2], `"k0" would take the headers to 4109 bytes, the limit is 4096`)
	require.ErrorContains(t, errs[3], `"extra" would take the headers to 4104 bytes, the limit is 4096`)
	e, err = decodeEnvelope(pr.elem)
	require.NoError(t, err)
	require.NotContains(t, headerMap(e.headers), "extra")
}

type signup struct {
	Email string `json:"email"`
	Plan  string `json:"plan"`
}

// HandleJSON decodes into T; a payload that does not decode is a permanent
// failure naming the job, its type and T, and f is not called.
func TestHandleJSON(t *testing.T) {
	var got []signup
	h := HandleJSON(func(_ context.Context, j *Job, v signup) error {
		got = append(got, v)
		if v.Plan == "fail" {
			return errors.New("plain error")
		}
		return nil
	})
	ctx := context.Background()
	require.NoError(t, h(ctx, &Job{ID: "1", Payload: []byte(`{"email":"a@b.c","plan":"pro"}`)}))
	require.Equal(t, []signup{{"a@b.c", "pro"}}, got)
	err := h(ctx, &Job{ID: "2", Payload: []byte(`{"plan":"fail"}`)})
	require.EqualError(t, err, "plain error")
	require.False(t, IsPermanent(err), "f's own errors are returned as they are")

	err = h(ctx, &Job{ID: "j-3", Type: "user.signup", Payload: []byte(`{"email":`)})
	require.True(t, IsPermanent(err))
	require.ErrorIs(t, err, ErrDecode)
	var syn *json.SyntaxError
	require.ErrorAs(t, err, &syn)
	require.EqualError(t, err, `queue: cannot decode the job's payload: job j-3 of type "user.signup" into queue.signup: unexpected end of JSON input`)
	err = h(ctx, &Job{ID: "j-4", Payload: []byte(`{"email":5}`)})
	require.ErrorContains(t, err, "job j-4 into queue.signup: json: cannot unmarshal number")
	require.Len(t, got, 2, "f is not called for a payload that does not decode")

	ptr := HandleJSON(func(_ context.Context, _ *Job, v *signup) error { got = append(got, *v); return nil })
	require.NoError(t, ptr(ctx, &Job{Payload: []byte(`{"email":"p"}`)}))
	require.ErrorContains(t, ptr(ctx, &Job{ID: "j-5", Payload: []byte(`[]`)}), "job j-5 into *queue.signup")
}

// EnqueueJSON and HandleJSON through a queue and a worker; a value that
// does not encode fails before anything is sent, naming its type.
func TestEnqueueJSON(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "json", Config{})
	got := make(chan signup, 2)
	g := group(t)
	startWorker(t, g, q, HandleJSON(func(_ context.Context, j *Job, v signup) error {
		got <- v
		return nil
	}), WorkerConfig{})
	_, err := EnqueueJSON(ctx, q, signup{Email: "x@y.z", Plan: "free"}, Type("user.signup"))
	require.NoError(t, err)
	require.Equal(t, signup{"x@y.z", "free"}, recv(t, got, 10*time.Second, "the job"))

	_, err = EnqueueJSON(ctx, q, make(chan int))
	require.ErrorContains(t, err, `queue "json": enqueue: encoding chan int as JSON: json: unsupported type: chan int`)
	_, err = EnqueueJSON(ctx, q, signup{}, Type("bad type"))
	require.ErrorContains(t, err, `Type("bad type")`)
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Ready)

	// A payload that does not decode: to the dead letters at once.
	id, err := q.Enqueue(ctx, []byte("not json"), Type("user.signup"))
	require.NoError(t, err)
	var dead []DeadJob
	testutil.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		dead, err = q.Dead(ctx, 0, 10)
		require.NoError(t, err)
		return len(dead) == 1
	})
	require.Equal(t, 1, dead[0].Attempts)
	require.Contains(t, dead[0].Reason, fmt.Sprintf(`job %s of type "user.signup" into queue.signup: invalid character`, id))
}
