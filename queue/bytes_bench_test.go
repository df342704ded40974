package queue

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkBytesPerJob measures what a job costs in Redis traffic and
// memory, for 1 KiB and 1 MiB payloads, through four life cycles: run once
// ("ok"), fail once then succeed ("retry"), fail permanently ("dead"), and
// delayed then run ("delayed"). It uses the public API only, so the same
// file measures an earlier version in the same run:
//
//	go test ./queue -run '^$' -bench BytesPerJob -benchtime 1x -count 5
//
// in-B/job and out-B/job are the server's network bytes in and out from the
// first enqueue until the worker closed, per job; stored-B/job is
// used_memory per job once they are enqueued, dead-B/job once they are all
// in the dead letters; max-call-us is the longest single command (server
// time, from SLOWLOG) in the run.
func BenchmarkBytesPerJob(b *testing.B) {
	srv := redistest.Server(b)
	for _, size := range []int{1 << 10, 1 << 20} {
		n, name := 1000, "1KiB"
		if size == 1<<20 {
			n, name = 16, "1MiB"
		}
		for _, life := range []string{"ok", "retry", "dead", "delayed"} {
			b.Run(name+"-"+life, func(b *testing.B) {
				for range b.N {
					flush(b, srv)
					bytesPerJob(b, srv, size, n, life)
				}
			})
		}
	}
}

func bytesPerJob(b *testing.B, srv *redistest.Redis, size, n int, life string) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	for _, kv := range [][2]string{{"slowlog-log-slower-than", "0"}, {"slowlog-max-len", "100000"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			b.Fatal(err)
		}
	}
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	q, err := New(p, "bytes", Config{})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	in0, out0 := infoInt(b, c, "stats", "total_net_input_bytes"), infoInt(b, c, "stats", "total_net_output_bytes")
	if err := c.SlowLogReset(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	due := time.Now().Add(300 * time.Millisecond)
	for range n {
		var opts []EnqueueOption
		if life == "delayed" {
			opts = append(opts, At(due))
		}
		if _, err := q.Enqueue(ctx, payload, opts...); err != nil {
			b.Fatal(err)
		}
	}
	stored := keysMemory(b, c)
	var done atomic.Int64
	all := make(chan struct{})
	finish := func() {
		if done.Add(1) == int64(n) {
			close(all)
		}
	}
	g := lifecycle.New()
	w, err := newWorker(b, q, func(ctx context.Context, j *Job) error {
		switch {
		case life == "dead":
			return Permanent(errors.New("no"))
		case life == "retry" && j.Attempt == 1:
			return errors.New("once more")
		}
		finish()
		return nil
	}, WorkerConfig{Backoff: func(int, error) time.Duration { return time.Millisecond }})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(g); err != nil {
		b.Fatal(err)
	}
	if life == "dead" {
		go func() {
			for w.Stats().Dead < uint64(n) {
				time.Sleep(time.Millisecond)
			}
			close(all)
		}()
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		b.Fatalf("jobs did not finish: %+v", w.Stats())
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	in1, out1 := infoInt(b, c, "stats", "total_net_input_bytes"), infoInt(b, c, "stats", "total_net_output_bytes")
	logs, err := c.SlowLogGet(ctx, -1).Result()
	if err != nil {
		b.Fatal(err)
	}
	var longest time.Duration
	var what string
	for _, l := range logs {
		if len(l.Args) > 0 && strings.EqualFold(l.Args[0], "info") || strings.EqualFold(l.Args[0], "slowlog") {
			continue
		}
		if l.Duration > longest {
			longest, what = l.Duration, strings.Join(l.Args[:min(len(l.Args), 2)], " ")
			if len(l.Args) > 1 && scriptNames[l.Args[1]] != "" {
				what = "evalsha " + scriptNames[l.Args[1]]
			}
		}
	}
	b.Logf("%d x %d %s: longest call %s: %s", size, n, life, longest, what)
	b.ReportMetric(float64(in1-in0)/float64(n), "in-B/job")
	b.ReportMetric(float64(out1-out0)/float64(n), "out-B/job")
	b.ReportMetric(float64(stored)/float64(n), "stored-B/job")
	if life == "dead" {
		b.ReportMetric(float64(keysMemory(b, c))/float64(n), "dead-B/job")
	}
	b.ReportMetric(float64(longest.Microseconds()), "max-call-us")
}

// scriptNames names the scripts that every version has, by SHA.
var scriptNames = map[string]string{
	takeScript.Hash(): "take", promoteScript.Hash(): "promote", retryScript.Hash(): "retry",
	deadScript.Hash(): "dead", recoverScript.Hash(): "recover", enqueueManyScript.Hash(): "enqueueMany",
	scheduleScript.Hash(): "schedule", enqueueUniqueScript.Hash(): "enqueueUnique",
}

// keysMemory is MEMORY USAGE summed over every key but the heartbeats: what
// the jobs take in Redis, allocator rounding included, client buffers not.
func keysMemory(b *testing.B, c *redis.Client) int64 {
	ctx := context.Background()
	keys, err := c.Keys(ctx, "{bq:bytes}*").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, k := range keys {
		n, err := c.MemoryUsage(ctx, k, 0).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			b.Fatal(err)
		}
		total += n
	}
	return total
}

func infoInt(b *testing.B, c *redis.Client, section, field string) int64 {
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatalf("no %s in INFO %s", field, section)
	return 0
}
