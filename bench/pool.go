package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/pool"
)

// The post-mortem's shape: blocking consumers (3 queues x 5 workers x 2
// kinds of poller) next to request-path GETs, on a budget of 20.
const (
	starveBlockers = 30
	starveGetLoops = 20
	starvePoolSize = 20
)

// Pool compares bounded/pool with one plain go-redis client shared by
// everything, as the post-mortem's service had.
func (catalog) Pool(sz Sizes) Scenario {
	name := fmt.Sprintf("starvation: %d BLMOVE loops + %d GET loops for %s", starveBlockers, starveGetLoops, sz.RunFor)
	return Scenario{
		Name:  "pool",
		Order: 20,
		Title: "pool: bounded/pool vs one shared go-redis client",
		Peer:  "go-redis v9 client",
		Cases: []Case{{
			Name: name,
			Bounded: func(ctx context.Context, r *Run) error {
				p, err := pool.New(pool.Config{
					Addrs:    []string{r.Redis.Addr()},
					Request:  pool.LaneConfig{Size: starvePoolSize},
					Blocking: pool.BlockingConfig{Size: starveBlockers},
				})
				if err != nil {
					return err
				}
				defer p.Close()
				res, err := p.ReserveBlocking("blocking consumers", starveBlockers)
				if err != nil {
					return err
				}
				return starvation(ctx, r, p.Client(), res.Client(), starveBlockers, func() { _ = res.Release() })
			},
			Peer: func(ctx context.Context, r *Run) error {
				c := redis.NewClient(&redis.Options{Addr: r.Redis.Addr(), PoolSize: starvePoolSize})
				defer c.Close()
				return starvation(ctx, r, c, c, starvePoolSize, func() { _ = c.Close() })
			},
		}},
		Notes: []string{
			fmt.Sprintf("%d goroutines loop BLMOVE on empty lists (1s timeout) while %d goroutines loop GET on one key, each client with its out-of-the-box "+
				"timeouts: go-redis waits up to its PoolTimeout (4s) for a connection, bounded's request lane up to its MaxWait (250ms).", starveBlockers, starveGetLoops),
			fmt.Sprintf("go-redis: redis.Options{PoolSize: %d} shared by the BLMOVE and GET loops. bounded: pool.Config{Request: {Size: %d}, Blocking: {Size: %d}}, "+
				"the BLMOVE loops on a ReserveBlocking reservation, the GETs on Client(); it opens more connections because its budget says so up front.",
				starvePoolSize, starvePoolSize, starveBlockers),
			"timeouts counts GETs that returned an error (pool or lane wait exceeded); latency percentiles include them.",
		},
	}
}

// starvation runs the blocking loops on blockc and the GET loops on getc
// for r.Sizes.RunFor, then stops the blocking loops with stopBlockers.
// blocked is how many BLMOVEs can be in Redis at once.
func starvation(ctx context.Context, r *Run, getc, blockc redis.UniversalClient, blocked int, stopBlockers func()) error {
	if err := getc.Set(ctx, "k", "v", 0).Err(); err != nil {
		return err
	}
	bctx, cancel := context.WithCancel(ctx)
	var blockers sync.WaitGroup
	defer func() {
		cancel()
		stopBlockers() // ends the BLMOVEs waiting in Redis
		blockers.Wait()
	}()
	for i := range starveBlockers {
		blockers.Go(func() { // ends when bctx ends and its BLMOVE returns
			key := fmt.Sprintf("empty:%d", i)
			for bctx.Err() == nil {
				_ = blockc.BLMove(bctx, key, key+":p", "RIGHT", "LEFT", time.Second).Err()
			}
		})
	}
	if err := r.Redis.waitBlocked(ctx, blocked); err != nil {
		return err
	}

	lat := make([][]time.Duration, starveGetLoops)
	var timeouts, wrong atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(r.Sizes.RunFor)
	start := time.Now()
	var loops sync.WaitGroup
	for i := range starveGetLoops {
		loops.Go(func() { // ends at the deadline
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				v, err := getc.Get(ctx, "k").Result()
				lat[i] = append(lat[i], time.Since(t0))
				switch {
				case err != nil && ctx.Err() == nil:
					timeouts.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case err == nil && v != "v":
					wrong.Add(1)
				}
			}
		})
	}
	loops.Wait()
	elapsed := time.Since(start)
	conns, err := r.Redis.Clients(ctx)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	all := slices.Concat(lat...)
	slices.Sort(all)
	ok := int64(len(all)) - timeouts.Load()
	r.Record("GETs/s", Higher, float64(ok)/elapsed.Seconds())
	r.Record("p50 ms", Lower, ms(quantile(all, 0.50)))
	r.Record("p99 ms", Lower, ms(quantile(all, 0.99)))
	r.Record("timeouts", Lower, float64(timeouts.Load()))
	r.Record("connections", Lower, float64(conns))
	if e, _ := firstErr.Load().(string); e != "" && r.Impl == Bounded {
		r.Note("bounded's GETs failed (%d), e.g. %q", timeouts.Load(), e)
	}
	r.Check(wrong.Load() == 0, "%d GETs returned a wrong value", wrong.Load())
	r.Check(ok > 0, "no GET succeeded")
	return nil
}

// waitBlocked waits until n clients are blocked in Redis (the blocking
// loops hold their connections), for at most 10s.
func (s *Server) waitBlocked(ctx context.Context, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := s.admin.Info(ctx, "clients").Result()
		if err != nil {
			return err
		}
		v, _ := infoField(info, "blocked_clients")
		if v == fmt.Sprint(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("blocked_clients is %s after 10s, want %d", v, n)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil { // a condition with a deadline
			return err
		}
	}
}
