package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// typedRunOf is what a handler saw of one run.
type typedRunOf struct {
	id, typ string
	attempt int
}

// The upgrade the docs describe: a schedule registered before job types
// (its pending occurrence enqueued without one) is registered again by the
// new deploy with JobType, and its workers route with a Mux. The pending
// occurrence belongs to the new definition (as its payload does): it must
// run as the registered type, on its first attempt and on its retry, not
// go to the dead letters as a job without a type.
func TestRevMuxCronOccurrenceTakesTheRegisteredType(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			ctx := context.Background()
			// Both deploys register at one instant for the queue: on the
			// wall clock, a second boundary between them gave the new
			// deploy another first occurrence (Every(time.Second)), and one
			// crossed between Schedule's clock read and its enqueue put the
			// occurrence straight in the ready list.
			clock := &pausableClock{}
			q := mustQueue(t, p, "cronup", Config{Now: clock.now})
			clock.pause()
			// The deploy before types: no JobType.
			require.NoError(t, q.Schedule(ctx, "report", Every(time.Second), []byte("r"), Version(1)))
			zs, err := p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
			require.NoError(t, err)
			require.Len(t, zs, 1)
			pending, err := decodeEnvelope([]byte(zs[0]))
			require.NoError(t, err)
			require.Empty(t, pending.typ, "enqueued by the deploy before types")
			// The new deploy: same spec, now typed. The pending occurrence
			// stays as it was enqueued.
			require.NoError(t, q.Schedule(ctx, "report", Every(time.Second), []byte("r"), Version(2), JobType("report.build")))
			zs, err = p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
			require.NoError(t, err)
			require.Equal(t, []string{string(pending.encode())}, zs, "still the untyped occurrence, alone")
			clock.resume()

			runs := make(chan typedRunOf, 64)
			mux := new(Mux)
			mux.Handle("report.build", func(_ context.Context, j *Job) error {
				select {
				case runs <- typedRunOf{j.ID, j.Type, j.Attempt}:
				default:
				}
				if j.ID == pending.id && j.Attempt == 1 {
					return errors.New("once more")
				}
				return nil
			})
			dead := make(chan string, 64)
			g := group(t)
			startWorker(t, g, q, mux.Run, WorkerConfig{Concurrency: 2,
				Backoff: func(int, error) time.Duration { return time.Millisecond },
				OnDead: func(o Outcome) {
					select {
					case dead <- o.Job.ID + ": " + o.Reason:
					default:
					}
				}})
			for _, attempt := range []int{1, 2} {
				for {
					select {
					case r := <-runs:
						if r.id != pending.id {
							continue // a later occurrence
						}
						require.Equal(t, typedRunOf{pending.id, "report.build", attempt}, r)
					case d := <-dead:
						t.Fatalf("went to the dead letters: %s", d)
					case <-time.After(15 * time.Second):
						t.Fatalf("attempt %d of the pending occurrence did not run", attempt)
					}
					break
				}
			}
		})
	}
}

// namedEvent is an interface a handler might mistake for a payload type.
type namedEvent interface{ EventName() string }

// funcWithText decodes from JSON through its UnmarshalText, though a func.
type funcWithText func() string

func (f *funcWithText) UnmarshalText(b []byte) error {
	s := string(b)
	*f = func() string { return s }
	return nil
}

// HandleJSON with a T that no JSON payload can decode into (an interface
// with methods, a channel, a func) is a wiring mistake: every job would go
// to the dead letters as ErrDecode, blaming its payload. It must be found
// when the handler is built, as Mux.Handle's mistakes are.
func TestRevMuxHandleJSONRefusesUndecodableTypes(t *testing.T) {
	mustPanic := func(name string, build func()) {
		t.Helper()
		defer func() {
			v := recover()
			require.NotNil(t, v, "%s: HandleJSON accepted a type JSON cannot decode into", name)
			require.Contains(t, fmt.Sprint(v), name)
		}()
		build()
	}
	mustPanic("queue.namedEvent", func() {
		HandleJSON(func(context.Context, *Job, namedEvent) error { return nil })
	})
	mustPanic("*queue.namedEvent", func() {
		HandleJSON(func(context.Context, *Job, *namedEvent) error { return nil })
	})
	mustPanic("chan int", func() { HandleJSON(func(context.Context, *Job, chan int) error { return nil }) })
	mustPanic("func()", func() { HandleJSON(func(context.Context, *Job, func()) error { return nil }) })

	// What JSON can decode into is accepted, and works.
	ctx := context.Background()
	var got []string
	for _, h := range []Handler{
		HandleJSON(func(_ context.Context, _ *Job, v any) error { got = append(got, fmt.Sprint(v)); return nil }),
		HandleJSON(func(_ context.Context, _ *Job, v json.RawMessage) error { got = append(got, string(v)); return nil }),
		HandleJSON(func(_ context.Context, _ *Job, v funcWithText) error { got = append(got, v()); return nil }),
		HandleJSON(func(_ context.Context, _ *Job, v *funcWithText) error { got = append(got, (*v)()); return nil }),
	} {
		require.NoError(t, h(ctx, &Job{Payload: []byte(`"x"`)}))
	}
	require.Equal(t, []string{"x", `"x"`, "x", "x"}, got)
}

// FuzzRevMuxEnvelopeAllFlags: every combination of flags (unique, ref,
// deadline, window, headers, type) with fields the API accepts encodes to
// an element that decodes to the same job and re-encodes to the same
// bytes; and a decoded element's type is always one the Type option
// accepts.
func FuzzRevMuxEnvelopeAllFlags(f *testing.F) {
	f.Add(uint8(63), "t|1|x", "k", "v|1|", []byte("1|p|"), int64(1), int64(1))
	f.Add(uint8(0), "a", "", "", []byte(""), int64(0), int64(0))
	f.Add(uint8(32), "128", "h", "", []byte("t|3|abc"), int64(5), int64(0))
	f.Fuzz(func(t *testing.T, flags uint8, typ, hk, hv string, payload []byte, dl, win int64) {
		e := envelope{id: "j", attempt: 1, maxAttempts: 3, deliveries: 2, enqueuedAt: time.UnixMilli(77), payload: payload}
		if flags&1 != 0 {
			e.unique = true
		}
		if flags&2 != 0 {
			e.ref, e.payload = "ref9", nil
		}
		if flags&4 != 0 {
			e.deadline = time.UnixMilli(1 + (dl&0x7fffffffffff)%(maxDue.UnixMilli()-1))
		}
		if flags&8 != 0 {
			e.window = time.Duration(1+(win&0x7fffffffff)%(1<<40)) * time.Millisecond
		}
		if flags&16 != 0 {
			if checkHeader(hk, hv) != nil {
				return
			}
			hs, err := encodeHeaders([]header{{hk, hv}})
			require.NoError(t, err)
			e.headers = hs
		}
		if flags&32 != 0 {
			if checkType(typ) != nil {
				return
			}
			e.typ = typ
		}
		b := e.encode()
		got, err := decodeEnvelope(b)
		require.NoError(t, err, "%q", b)
		require.Equal(t, e.unique, got.unique)
		require.Equal(t, e.ref, got.ref)
		require.True(t, e.deadline.Equal(got.deadline))
		require.Equal(t, e.window, got.window)
		require.Equal(t, string(e.headers), string(got.headers))
		require.Equal(t, e.typ, got.typ)
		require.Equal(t, string(e.payload), string(got.payload))
		require.Equal(t, b, got.encode())

		// Any bytes: what decodes has a valid type, and its re-encoding
		// decodes to the same type and payload.
		raw := append([]byte("bq1|j|0|1|0|5|0|"), payload...)
		if d, err := decodeEnvelope(raw); err == nil {
			if d.typ != "" {
				require.NoError(t, checkType(d.typ))
			}
			again, err := decodeEnvelope(d.encode())
			require.NoError(t, err)
			require.Equal(t, d.typ, again.typ)
			require.Equal(t, string(d.payload), string(again.payload))
			require.Equal(t, string(d.headers), string(again.headers))
		}
	})
}

// Enqueuing.Payload is an exported field: a hook that assigns it (to
// compress or encrypt the payload, as producer middleware elsewhere does)
// must not see its new payload silently dropped and the caller's bytes
// enqueued. The enqueue fails, naming what the hook did, and writes
// nothing; a hook that leaves the field alone is unaffected.
func TestRevMuxBeforeEnqueueCannotReplaceThePayload(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "hookpay", Config{BeforeEnqueue: func(_ context.Context, e *Enqueuing) error {
		switch string(e.Payload) {
		case "compress me":
			e.Payload = []byte("zz")
		case "shorten me":
			e.Payload = e.Payload[:7]
		case "nil me":
			e.Payload = nil
		}
		return nil
	}})
	for _, pl := range []string{"compress me", "shorten me", "nil me"} {
		_, err := q.Enqueue(ctx, []byte(pl))
		require.ErrorContains(t, err, "Config.BeforeEnqueue changed Enqueuing.Payload", pl)
		_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("fine"), []byte(pl)})
		require.ErrorContains(t, err, "job 1: queue: Config.BeforeEnqueue changed Enqueuing.Payload", pl)
	}
	n, err := p.Client().LLen(ctx, q.k.ready).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing written")
	_, err = q.Enqueue(ctx, []byte("fine"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, nil)
	require.NoError(t, err, "an empty payload the hook leaves alone")
	_, err = q.Enqueue(ctx, []byte{})
	require.NoError(t, err)
}

// A deploy changes a schedule's payload (and type): the pending occurrence
// runs with the registered payload (TestRevCronPayloadChangeTakesEffect),
// and so must its retry. The retry was re-encoded from the element, which
// holds the payload of the deploy before: the retry ran a payload the
// first attempt never saw, under the new type (a HandleJSON route would
// fail it as ErrDecode). A handler that changes its Job.Payload in place
// does not change what the retry runs.
func TestRevMuxCronRetryRunsTheRegisteredPayload(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			ctx := context.Background()
			q := mustQueue(t, p, "cronpay", Config{})
			require.NoError(t, q.Schedule(ctx, "report", Every(time.Second), []byte(`{"v":1}`), Version(1)))
			zs, err := p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
			require.NoError(t, err)
			require.Len(t, zs, 1)
			pending, err := decodeEnvelope([]byte(zs[0]))
			require.NoError(t, err)
			require.NoError(t, q.Schedule(ctx, "report", Every(time.Second), []byte(`{"v":2}`), Version(2), JobType("report.v2")))

			type run struct {
				attempt int
				typ, v  string
			}
			runs := make(chan run, 64)
			mux := new(Mux)
			mux.Handle("report.v2", func(_ context.Context, j *Job) error {
				if j.ID != pending.id {
					return nil // a later occurrence
				}
				select {
				case runs <- run{j.Attempt, j.Type, string(j.Payload)}:
				default:
				}
				if j.Attempt == 1 {
					copy(j.Payload, "XXXXXXX") // in place: the retry must not see it
					return errors.New("once more")
				}
				return nil
			})
			g := group(t)
			startWorker(t, g, q, mux.Run, WorkerConfig{Concurrency: 2,
				Backoff: func(int, error) time.Duration { return time.Millisecond }})
			require.Equal(t, run{1, "report.v2", `{"v":2}`}, recv(t, runs, 15*time.Second, "the first attempt"))
			require.Equal(t, run{2, "report.v2", `{"v":2}`}, recv(t, runs, 15*time.Second, "the retry"))
		})
	}
}
