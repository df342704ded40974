package queue

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// takeCase is one call of the take script on a prepared queue.
type takeCase struct {
	name     string
	ready    []string // the ready list, take end last
	paused   bool
	n        int
	took     []string
	left     []string // the ready list after, take end last
	rang     bool     // the doorbell rang
	commands int64    // Redis commands the call costs, EVALSHA included
}

var takeCases = []takeCase{
	{name: "empty", n: 10, commands: 3}, // LMOVE, and EXISTS of the partitions' fair set and the level lists
	{name: "lone job", ready: []string{"a"}, n: 10, took: []string{"a"}, commands: 3},
	{name: "lone job, one slot", ready: []string{"a"}, n: 1, took: []string{"a"}, commands: 3},
	{name: "two jobs, one slot", ready: []string{"b", "a"}, n: 1, took: []string{"a"}, left: []string{"b"}, rang: true, commands: 4},
	{name: "three jobs, three slots", ready: []string{"c", "b", "a"}, n: 3, took: []string{"a", "b", "c"}, commands: 6},
	{name: "three jobs, ten slots", ready: []string{"c", "b", "a"}, n: 10, took: []string{"a", "b", "c"}, commands: 6},
	{name: "four jobs, three slots", ready: []string{"d", "c", "b", "a"}, n: 3, took: []string{"a", "b", "c"}, left: []string{"d"}, rang: true, commands: 7},
	{name: "paused", ready: []string{"b", "a"}, paused: true, n: 10, left: []string{"b", "a"}, commands: 4},
	{name: "paused, lone job", ready: []string{"a"}, paused: true, n: 10, left: []string{"a"}, commands: 4},
	{name: "paused, wake marker at the take end", ready: []string{"a", wakeMarker}, paused: true, n: 10, took: []string{wakeMarker}, left: []string{"a"}, commands: 3},
	{name: "wake marker among jobs", ready: []string{"a", wakeMarker}, n: 10, took: []string{wakeMarker, "a"}, commands: 5},
	{name: "no slot", ready: []string{"a"}, n: 0, left: []string{"a"}, commands: 1},
}

// TestTakeScript runs the take script on miniredis and on a server: what
// it takes, what it leaves (in order), when it rings, and that it takes
// nothing from a paused queue (but its wake marker).
func TestTakeScript(t *testing.T) {
	for _, impl := range []struct {
		name string
		pool newPoolFunc
	}{{"miniredis", miniPool}, {"server", serverPool}} {
		t.Run(impl.name, func(t *testing.T) {
			p := impl.pool(t, pool.Config{})
			q := mustQueue(t, p, "take", Config{})
			for _, tc := range takeCases {
				t.Run(tc.name, func(t *testing.T) {
					took, left, rang := runTake(t, p.Client(), q, tc)
					require.Equal(t, tc.took, took, "taken, in order")
					require.Equal(t, tc.left, left, "left in the ready list")
					require.Equal(t, tc.rang, rang, "rang the doorbell")
				})
			}
		})
	}
}

// TestTakeScriptCommands counts, on a server, the commands one take costs:
// a lone job costs EVALSHA + LMOVE + EXISTS (it cost EVALSHA + EXISTS +
// LMOVE + an empty LMOVE), an empty list EVALSHA + LMOVE + EXISTS (the
// partitions' fair set and the priority level lists: the keys are the
// worker's, keys.takeKeys).
func TestTakeScriptCommands(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "takecmds", Config{})
	ctx := context.Background()
	require.NoError(t, takeScript.Load(ctx, p.Client()).Err())
	for _, tc := range takeCases {
		t.Run(tc.name, func(t *testing.T) {
			prepareTake(t, p.Client(), q, tc)
			_, err := srv.Do(ctx, "CONFIG", "RESETSTAT")
			require.NoError(t, err)
			_, err = takeScript.EvalSha(ctx, p.Client(), takeKeys(q), tc.n).StringSlice()
			if err != nil && err != redis.Nil {
				require.NoError(t, err)
			}
			st, err := srv.CommandStats(ctx)
			require.NoError(t, err)
			require.Equal(t, tc.commands, redistest.TotalCalls(st, "config|resetstat", "config"), "commands by name: %v", st)
		})
	}
}

func takeKeys(q *Queue) []string {
	return q.k.takeKeys(q.k.proc("taker"))
}

func prepareTake(t *testing.T, c redis.UniversalClient, q *Queue, tc takeCase) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, c.Del(ctx, takeKeys(q)...).Err())
	for _, e := range tc.ready {
		require.NoError(t, c.RPush(ctx, q.k.ready, e).Err())
	}
	if tc.paused {
		require.NoError(t, c.Set(ctx, q.k.paused, "1", 0).Err())
	}
}

func runTake(t *testing.T, c redis.UniversalClient, q *Queue, tc takeCase) (took, left []string, rang bool) {
	t.Helper()
	ctx := context.Background()
	prepareTake(t, c, q, tc)
	took, err := takeScript.Run(ctx, c, takeKeys(q), tc.n).StringSlice()
	if err == redis.Nil {
		err = nil
	}
	require.NoError(t, err)
	if len(took) == 0 {
		took = nil
	}
	left, err = c.LRange(ctx, q.k.ready, 0, -1).Result()
	require.NoError(t, err)
	if len(left) == 0 {
		left = nil
	}
	proc, err := c.LRange(ctx, q.k.proc("taker"), 0, -1).Result()
	require.NoError(t, err)
	for i, e := range took {
		require.Equal(t, e, proc[len(proc)-1-i], "the processing list holds what was taken, first taken deepest")
	}
	require.Len(t, proc, len(took))
	n, err := c.Exists(ctx, q.k.bell).Result()
	require.NoError(t, err)
	return took, left, n == 1
}

// TestLoneJobCommands counts, on a server, every command one lone job
// costs from its enqueue to its ack, with the consumer idle before and
// after: the enqueue script (EVALSHA, LPUSH, ZADD), the hub's BZPOPMIN,
// the take (EVALSHA, LMOVE, EXISTS) and the ack (LREM): 8. It was 9 (the
// take read the paused flag first and proved the list empty with a second
// LMOVE); docs/queue.md, "Why not 3", says why it is not 3.
func TestLoneJobCommands(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "lonejob", Config{})
	ctx := context.Background()
	g := group(t)
	w := startWorker(t, g, q, func(context.Context, *Job) error { return nil },
		WorkerConfig{Concurrency: 10, BlockTimeout: time.Minute},
		ConsumerConfig{HeartbeatInterval: time.Minute, HeartbeatTTL: 2 * time.Minute})
	idle := func(processed uint64) func() bool {
		return func() bool {
			st := w.Stats()
			return st.Processed == processed && st.InFlight == 0 && st.FetcherState == "blocking"
		}
	}
	// A warm-up job: scripts loaded, the registry noted, the hub blocked.
	_, err := q.Enqueue(ctx, []byte("warm-up"))
	require.NoError(t, err)
	require.Eventually(t, idle(1), 10*time.Second, time.Millisecond)
	stats := func() map[string]int64 {
		st, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		delete(st, "config|resetstat")
		delete(st, "info")
		return st
	}
	// The hub blocks again once its BZPOPMIN reached Redis.
	require.Eventually(t, func() bool { return stats()["bzpopmin"] >= 2 }, 10*time.Second, time.Millisecond)
	_, err = srv.Do(ctx, "CONFIG", "RESETSTAT")
	require.NoError(t, err)

	_, err = q.Enqueue(ctx, []byte("lone"))
	require.NoError(t, err)
	require.Eventually(t, idle(2), 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return stats()["bzpopmin"] == 1 }, 10*time.Second, time.Millisecond,
		"the hub blocks again")
	require.Equal(t, map[string]int64{
		"evalsha": 2, "lpush": 1, "zadd": 1, // enqueue
		"bzpopmin": 1,              // the hub
		"lmove":    1, "exists": 1, // take
		"lrem": 1, // ack
	}, stats())
}
