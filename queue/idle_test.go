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
// second in total, heartbeats and sweeps included, and exactly ONE blocked
// connection for the three queues (the consumer's fetch hub). The
// post-mortem's service ran 30 polling timers for this.
//
// The measuring window is bounded by events, not by a sleep: it ends when
// the hub has completed six more BZPOPMIN timeouts (about 30s with the
// default 5s block), so it holds three or four heartbeats of 10s.
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
	calls := func() (total, bzpopmin int64) {
		s, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return redistest.TotalCalls(s, "info"), s["bzpopmin"]
	}
	// Let start-up work (first heartbeat, first promote, consumer checks)
	// finish: wait for the hub's first BZPOPMIN to time out.
	_, b0 := calls()
	testutil.Eventually(t, 15*time.Second, "first BZPOPMIN timeout", func() bool { _, b := calls(); return b >= b0+2 })

	total0, bz0 := calls()
	start := time.Now()
	testutil.Eventually(t, 60*time.Second, "six more BZPOPMIN timeouts", func() bool { _, b := calls(); return b >= bz0+6 })
	total1, _ := calls()
	elapsed := time.Since(start)
	perSecond := float64(total1-total0) / elapsed.Seconds()
	t.Logf("idle: %d commands in %s = %.2f commands/s for 3 queues x 5 workers", total1-total0, elapsed.Round(time.Millisecond), perSecond)
	require.LessOrEqual(t, perSecond, 1.0)

	require.Equal(t, 1, blockedClients(t, srv, "bzpopmin"), "one blocked connection for the three queues")
	require.Zero(t, blockedClients(t, srv, "blmove"))
	require.Equal(t, 1, p.Stats().Blocking.Reserved)
	require.Len(t, g.Tasks(), 3*(5+3)+3, "per queue 5 handlers, a fetcher, an acker, a scheduler; one heartbeat, one sweeper, one fetch hub")
}

// blockedClients counts the connections whose last command was cmd.
func blockedClients(t *testing.T, srv *redistest.Redis, cmd string) int {
	t.Helper()
	clients, err := srv.Clients(context.Background())
	require.NoError(t, err)
	n := 0
	for _, c := range clients {
		if strings.Contains(c, " cmd="+cmd+" ") {
			n++
		}
	}
	return n
}
