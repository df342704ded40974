package queue

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// BenchmarkEnqueueBounded measures what Config.MaxLen costs an enqueue, in
// the same run as the unbounded enqueue: round trips per call (counted by a
// client hook), commands per call as the server counts them (those a script
// runs included) and jobs/s, for one producer and for 8
// concurrent ones, one job or a batch of 100 per call. Run with
//
//	go test ./queue -run '^$' -bench EnqueueBounded -count 5
func BenchmarkEnqueueBounded(b *testing.B) {
	srv := redistest.Server(b)
	p, err := pool.New(pool.Config{Addrs: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var trips atomic.Int64
	p.Client().AddHook(tripCounter{&trips})
	ctx := context.Background()
	payload := []byte("a small job payload of some tens of bytes.")
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = payload
	}
	for _, mode := range []struct {
		name   string
		maxLen int64
	}{{"unbounded", 0}, {"maxlen", 1 << 40}} {
		for _, shape := range []struct {
			name      string
			producers int
			batch     bool
		}{{"single", 1, false}, {"single-8producers", 8, false}, {"batch100", 1, true}} {
			b.Run(mode.name+"-"+shape.name, func(b *testing.B) {
				flush(b, srv)
				q, err := New(p, "enq", Config{MaxLen: mode.maxLen})
				if err != nil {
					b.Fatal(err)
				}
				// Load the script outside the measurement.
				if _, err := q.Enqueue(ctx, payload); err != nil {
					b.Fatal(err)
				}
				// Server time: the top-level command's (a script's includes
				// the commands it runs, which are counted apart too).
				top := []string{"lpush"}
				if mode.maxLen > 0 {
					top = []string{"evalsha", "eval"}
				}
				before, beforeTrips, beforeUsec := totalCommands(b, srv), trips.Load(), serverUsec(b, srv, top...)
				b.ResetTimer()
				var wg sync.WaitGroup
				per := (b.N + shape.producers - 1) / shape.producers
				for range shape.producers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							var err error
							if shape.batch {
								_, err = q.EnqueueBatch(ctx, batch)
							} else {
								_, err = q.Enqueue(ctx, payload)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				jobs := per * shape.producers
				if shape.batch {
					jobs *= len(batch)
				}
				cmds, rt := totalCommands(b, srv)-before, trips.Load()-beforeTrips
				usec := serverUsec(b, srv, top...) - beforeUsec
				b.ReportMetric(float64(jobs)/b.Elapsed().Seconds(), "jobs/s")
				b.ReportMetric(float64(cmds)/float64(per*shape.producers), "server-cmds/op")
				b.ReportMetric(float64(rt)/float64(per*shape.producers), "round-trips/op")
				b.ReportMetric(usec/float64(per*shape.producers), "server-us/op")
			})
		}
	}
}

// tripCounter counts the round trips a client makes: a command or a
// pipeline each.
type tripCounter struct{ n *atomic.Int64 }

func (h tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// serverUsec is the server time spent in the commands names, in
// microseconds, from INFO commandstats.
func serverUsec(b *testing.B, srv *redistest.Redis, names ...string) float64 {
	info, err := srv.Do(context.Background(), "INFO", "commandstats")
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		for _, n := range names {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+n+":"); ok {
				for _, f := range strings.Split(rest, ",") {
					if v, ok := strings.CutPrefix(f, "usec="); ok {
						u, _ := strconv.ParseFloat(v, 64)
						total += u
					}
				}
			}
		}
	}
	return total
}
