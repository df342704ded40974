package queue

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// A wake marker the fetcher takes while the worker stops may be dispatched
// after the scheduler already stopped (and handed over only what it knew):
// dropping it then would leave the delayed job it announced known to no
// live worker. Once the worker stops, the marker must stay in the
// processing list, for the drain to put back at the head of the ready list.
func TestWakeMarkerTakenWhileStoppingIsNotDropped(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "markerstop", Config{})
	w, err := NewWorker(q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 1})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the worker is stopping
	for range 40 {
		w.slots <- struct{}{}
		w.dispatch(ctx, delivery{elem: wakeMarker})
		select {
		case op := <-w.acks:
			t.Fatalf("a marker taken while stopping was handed to the acker to be dropped (kind %d)", op.kind)
		default:
		}
	}
}
