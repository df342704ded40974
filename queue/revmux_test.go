package queue

import (
	"context"
	"errors"
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
			q := mustQueue(t, p, "cronup", Config{})
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
			require.Equal(t, []string{zs[0]}, []string{string(pending.encode())}, "still the untyped occurrence")

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
