package queue

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkInspectorPage shows that the Redis work of one page of the
// Inspector depends on the page's limit, not on the size of the data: a
// page of 100 queues, dead letters or delayed jobs costs the same with 10
// queues and 1,000 dead letters as with 1,000 queues and 100,000 dead
// letters (the reference and the target, in the same run, on one real
// redis-server). Reported per page: round trips, commands sent, commands
// the server ran (INFO commandstats, the calls inside scripts included)
// and reply elements read.
func BenchmarkInspectorPage(b *testing.B) {
	for _, size := range []struct {
		name          string
		queues, deadN int
		delayedN      int
	}{
		{"small", 200, 1_000, 1_000},
		{"large", 1_000, 100_000, 100_000},
	} {
		srv := redistest.Server(b)
		var hook countingHook
		p := mustPool(b, pool.Config{Addrs: []string{srv.Addr()}, Hooks: []redis.Hook{&hook}})
		fillForBench(b, p, size.queues, size.deadN, size.delayedN)
		in := mustInspector(b, p, "")
		ctx := context.Background()
		// A page in the middle of the data, so that the cursor is used.
		mid := func(state JobState) string {
			page, err := in.Jobs(ctx, "big", state, "", 500)
			require.NoError(b, err)
			return page.Next
		}
		deadCur, delayedCur := mid(StateDead), mid(StateDelayed)
		cases := []struct {
			name string
			page func() error
		}{
			{"queues", func() error { _, err := in.Queues(ctx, "q000004", 100); return err }},
			{"dead", func() error { _, err := in.Jobs(ctx, "big", StateDead, deadCur, 100); return err }},
			{"delayed", func() error { _, err := in.Jobs(ctx, "big", StateDelayed, delayedCur, 100); return err }},
			{"ready", func() error { _, err := in.Jobs(ctx, "q000007", StateReady, "", 100); return err }},
			{"consumers", func() error { _, err := in.Consumers(ctx); return err }},
		}
		for _, c := range cases {
			b.Run(c.name+"/"+size.name, func(b *testing.B) {
				var trips, cmds, elems, server int64
				for range b.N {
					t0, c0, e0 := hook.trips.Load(), hook.cmds.Load(), hook.elems.Load()
					s0, err := srv.CommandStats(ctx)
					require.NoError(b, err)
					require.NoError(b, c.page())
					s1, err := srv.CommandStats(ctx)
					require.NoError(b, err)
					trips += hook.trips.Load() - t0
					cmds += hook.cmds.Load() - c0
					elems += hook.elems.Load() - e0
					server += redistest.TotalCalls(s1, "info", "ping") - redistest.TotalCalls(s0, "info", "ping")
				}
				n := float64(b.N)
				b.ReportMetric(float64(trips)/n, "trips/page")
				b.ReportMetric(float64(cmds)/n, "cmds/page")
				b.ReportMetric(float64(server)/n, "server-cmds/page")
				b.ReportMetric(float64(elems)/n, "elems/page")
			})
		}
	}
}

// fillForBench writes, with plain pipelines, queues registered queues
// (each with one ready job and one consumer holding one job), and to the
// queue "big" deadN dead letters and delayedN delayed jobs.
func fillForBench(b *testing.B, p *pool.Pool, queues, deadN, delayedN int) {
	b.Helper()
	ctx := context.Background()
	c := p.Client()
	now := time.Now()
	pipe := c.Pipeline()
	flush := func() {
		_, err := pipe.Exec(ctx)
		require.NoError(b, err)
		pipe = c.Pipeline()
	}
	names := make([]string, 0, queues)
	for i := range queues {
		n := fmt.Sprintf("q%06d", i)
		names = append(names, n)
		k := newKeys("bq", n)
		e := envelope{id: "job" + strconv.Itoa(i), maxAttempts: 1, enqueuedAt: now, payload: []byte("payload")}
		pipe.LPush(ctx, k.ready, e.encode())
		pipe.LPush(ctx, k.proc("consumer-a"), e.encode())
		pipe.SAdd(ctx, k.consumers, "consumer-a")
	}
	register(ctx, pipe, "bq", now, names...)
	pipe.ZAdd(ctx, heartbeatKey("bq"), redis.Z{Score: float64(now.Add(time.Hour).UnixMilli()), Member: "consumer-a"})
	pipe.HSet(ctx, consumerQueuesKey("bq"), "consumer-a", "q000000 q000001 q000002")
	flush()
	k := newKeys("bq", "big")
	for i := range deadN {
		id := "dead" + strconv.Itoa(i)
		e := envelope{id: id, maxAttempts: 1, enqueuedAt: now, payload: []byte("payload of a dead job")}
		died := now.Add(-time.Duration(i%5000) * time.Second).UnixMilli() // many share a time of death
		pipe.ZAdd(ctx, k.deadIdx, redis.Z{Score: float64(died), Member: id})
		pipe.HSet(ctx, k.deadData, id, append(deadRecordHead(died, 1, "boom"), e.encode()...))
		if i%5000 == 4999 {
			flush()
		}
	}
	for i := range delayedN {
		e := envelope{id: "later" + strconv.Itoa(i), maxAttempts: 1, enqueuedAt: now, payload: []byte("payload of a delayed job")}
		pipe.ZAdd(ctx, k.delayed, redis.Z{Score: float64(now.Add(time.Duration(i%1000) * time.Minute).UnixMilli()), Member: e.encode()})
		if i%5000 == 4999 {
			flush()
		}
	}
	flush()
}
