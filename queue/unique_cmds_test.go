package queue

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// cmdCalls reads INFO commandstats: calls per command (scripts' own calls
// included).
func cmdCalls(t *testing.T, p *pool.Pool) map[string]int64 {
	t.Helper()
	info, err := p.Client().Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.ParseInt(n, 10, 64)
	}
	return out
}

// TestUniqueAckCommands counts the commands of the acks of jobs with and
// without an ID: the owner check of the idempotency key (uniqueOwnLua) is
// one GET inside the ack script of a job with an ID, and adds nothing to a
// job without one (its ack is a plain LREM, no script, no GET).
func TestUniqueAckCommands(t *testing.T) {
	const n = 50
	for _, withID := range []bool{false, true} {
		t.Run(map[bool]string{false: "noID", true: "ID"}[withID], func(t *testing.T) {
			p := mustPool(t, pool.Config{Addrs: []string{redistest.Server(t).Addr()}})
			q := mustQueue(t, p, "uniq-cmds", Config{})
			ctx := context.Background()
			for i := range n {
				var opts []EnqueueOption
				if withID {
					opts = append(opts, ID("job-"+strconv.Itoa(i)))
				}
				_, err := q.Enqueue(ctx, []byte("x"), opts...)
				require.NoError(t, err)
			}
			before := cmdCalls(t, p)
			var handled atomic.Int64
			w := startWorker(t, group(t), q, func(context.Context, *Job) error { handled.Add(1); return nil }, WorkerConfig{Concurrency: 4})
			// LLEN only: the counted commands are not polled.
			testutil.Eventually(t, testutil.Wait, "all acked", func() bool {
				l, err := p.Client().LLen(ctx, w.proc).Result()
				return handled.Load() == n && err == nil && l == 0
			})
			after := cmdCalls(t, p)
			d := func(c string) int64 { return after[c] - before[c] }
			t.Logf("withID=%v per job: lrem %.2f get %.2f del %.2f set %.2f evalsha %.2f",
				withID, float64(d("lrem"))/n, float64(d("get"))/n, float64(d("del"))/n, float64(d("set"))/n, float64(d("evalsha"))/n)
			if withID {
				require.EqualValues(t, n, d("get"), "one GET per ack of a job with an ID (the owner check)")
			} else {
				require.Zero(t, d("get"), "no GET for jobs without an ID")
			}
		})
	}
}
