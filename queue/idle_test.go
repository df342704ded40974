package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestIdleTrafficBudget runs the post-mortem's shape, 3 queues x 5 workers in
// one process with the default configuration, idle, on a real server, and
// counts what reaches Redis with INFO commandstats: at most one command per
// second in total, heartbeats and sweeps included, and exactly one blocked
// connection per queue. The post-mortem's service ran 30 polling timers for
// this.
//
// The measuring window is bounded by events, not by a sleep: it ends when
// the fetchers have completed six more BLMOVE timeouts each (about 30s with
// the default 5s block), so it holds three or four heartbeats of 10s. A
// 15s window held one or two, and a second heartbeat plus a sporadic
// command put one run in ~50 at 1.0001 commands/s against a steady state
// of about 0.9.
func TestIdleTrafficBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 35s")
	}
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	g := group(t)
	ctx := context.Background()
	for i := range 3 {
		q := mustQueue(t, p, fmt.Sprint("idle", i), Config{})
		startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 5})
	}
	calls := func() (total, blmove int64) {
		s, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return redistest.TotalCalls(s, "info"), s["blmove"]
	}
	// Let start-up work (first heartbeat, first promote, consumer checks)
	// finish: wait for the first BLMOVE of each fetcher to time out.
	_, b0 := calls()
	testutil.Eventually(t, 15*time.Second, "first round of BLMOVE timeouts", func() bool { _, b := calls(); return b >= b0+6 })

	total0, blmove0 := calls()
	start := time.Now()
	testutil.Eventually(t, 60*time.Second, "six more rounds of BLMOVE timeouts", func() bool { _, b := calls(); return b >= blmove0+18 })
	total1, _ := calls()
	elapsed := time.Since(start)
	perSecond := float64(total1-total0) / elapsed.Seconds()
	t.Logf("idle: %d commands in %s = %.2f commands/s for 3 queues x 5 workers", total1-total0, elapsed.Round(time.Millisecond), perSecond)
	require.LessOrEqual(t, perSecond, 1.0)

	clients, err := srv.Clients(ctx)
	require.NoError(t, err)
	blocked := 0
	for _, c := range clients {
		if strings.Contains(c, "cmd=blmove") {
			blocked++
		}
	}
	require.Equal(t, 3, blocked, "one blocked connection per queue, not per worker:\n%s", strings.Join(clients, "\n"))
	require.Equal(t, 3, p.Stats().Blocking.Reserved)
	require.Len(t, g.Tasks(), 3*(5+3)+2, "per queue 5 handlers, a fetcher, an acker, a scheduler; one heartbeat, one sweeper")
}
