package queue

import (
	"context"
	"fmt"
	"testing"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkPartitionTakeWake measures what partWake costs a take of one
// partitioned job while no producer waits: "wake" is the worker's take
// (the room channel given), "reference" the same take without it (partWake
// does nothing), in the same run on one server. Jobs are spread over 100
// partitions.
func BenchmarkPartitionTakeWake(b *testing.B) {
	srv := redistest.Server(b)
	p := mustPool(b, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	for _, mode := range []string{"reference", "wake"} {
		b.Run(mode, func(b *testing.B) {
			q := mustQueue(b, p, "pwbench-"+mode, Config{})
			for i := 0; i < b.N; i += 1000 {
				n := min(1000, b.N-i)
				for part := range 100 {
					batch := make([][]byte, 0, n/100+1)
					for j := part; j < n; j += 100 {
						batch = append(batch, []byte("x"))
					}
					if len(batch) == 0 {
						continue
					}
					if _, err := q.EnqueueBatch(ctx, batch, Partition(fmt.Sprint("t", part))); err != nil {
						b.Fatal(err)
					}
				}
			}
			ks := q.k.takeKeys(q.k.proc("c1"))
			args := []any{1}
			if mode == "wake" {
				args = append(args, q.k.roomChannel())
			}
			if err := takeScript.Load(ctx, p.Client()).Err(); err != nil {
				b.Fatal(err)
			}
			if _, err := srv.Do(ctx, "CONFIG", "RESETSTAT"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if err := takeScript.EvalSha(ctx, p.Client(), ks, args...).Err(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			st, err := srv.CommandStats(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(redistest.TotalCalls(st, "config|resetstat", "config"))/float64(b.N), "cmds/job")
		})
	}
}
