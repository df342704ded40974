package queue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// Close cancels every running handler's context whatever the Close context:
// a deadline ahead (shortly before it), a deadline already past, and a
// context without deadline that is already done (at once). Every task of the
// worker then returns, and no job is lost. The past-deadline case used to
// lose the race between its cancel and give-up timers about half the time,
// so it runs several rounds.
func TestCloseCancelsHandlersInEveryCase(t *testing.T) {
	cases := []struct {
		name    string
		rounds  int
		ctx     func() (context.Context, context.CancelFunc)
		putBack bool // the drain has time to put the jobs back in ready
	}{
		{"deadline ahead", 1, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 2*time.Second)
		}, true},
		{"deadline past", 8, func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}, false},
		{"done without deadline", 2, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for round := range c.rounds {
				testCloseCancels(t, fmt.Sprint(round), c.ctx, c.putBack)
			}
		})
	}
}

func testCloseCancels(t *testing.T, round string, closeCtx func() (context.Context, context.CancelFunc), putBack bool) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "close"+round, Config{})
	ctx := context.Background()
	g := lifecycle.New()
	// A handler that ignored its cancellation must not outlive the test.
	release := make(chan struct{})
	defer close(release)
	running := make(chan context.Context, 2)
	startWorker(t, g, q, func(ctx context.Context, j *Job) error {
		running <- ctx
		select {
		case <-ctx.Done():
		case <-release:
		}
		return ctx.Err()
	}, WorkerConfig{Concurrency: 2})
	for range 2 {
		_, err := q.Enqueue(ctx, []byte("long"))
		require.NoError(t, err)
	}
	var handlerCtxs []context.Context
	for range 2 {
		select {
		case hc := <-running:
			handlerCtxs = append(handlerCtxs, hc)
		case <-time.After(10 * time.Second):
			t.Fatal("the handlers did not start")
		}
	}

	cctx, cancel := closeCtx()
	defer cancel()
	err := g.Close(cctx)
	if putBack {
		require.NoError(t, err)
	}
	for i, hc := range handlerCtxs {
		select {
		case <-hc.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("round %s: handler %d was never cancelled", round, i)
		}
	}
	testutil.Eventually(t, 5*time.Second, "every task of the worker returned", func() bool { return len(g.Tasks()) == 0 })

	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), s.Ready+s.InFlight, "no job lost")
	if putBack {
		require.Equal(t, int64(2), s.Ready, "the jobs are back in ready")
	}
}
