package queue

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// A worker whose Start returned is alive, also before its fetcher goroutine
// first ran: a health check right after start (examples/chatservice's
// /healthz) must not report "fetcher not alive (state not started)".
func TestFetcherAliveRightAfterStart(t *testing.T) {
	p := miniPool(t, pool.Config{})
	g := group(t)
	for i := range 20 {
		q := mustQueue(t, p, "alive"+string(rune('a'+i)), Config{})
		w := startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 1})
		require.True(t, w.FetcherAlive(0), "worker %d: fetcher state %q right after Start", i, w.Stats().FetcherState)
	}
}
