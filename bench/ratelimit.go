package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/ratelimit"
)

// rlLimit is one limit, given to both limiters.
type rlLimit struct {
	Rate, Burst int
	Period      time.Duration
}

const (
	// rlGoroutines call Allow at once: 8 per core here, enough to keep a
	// loopback Redis busy within 20 connections (as ratelimit's benchmarks).
	rlGoroutines = 16
	// exactKeys x exactCalls is the decision-sequence case.
	exactKeys  = 1_000
	exactCalls = 15
	// maxSamples caps the latencies kept by one timed loop.
	maxSamples = 1_000_000
)

// decision is one answer of either limiter.
type decision struct {
	allowed   bool
	remaining int
	fallback  bool // bounded answered by its Redis-down policy
}

// limiter is either implementation, as the cases drive it.
type limiter interface {
	Allow(ctx context.Context, key string) (decision, error)
	Close() error
}

type boundedLimiter struct {
	p *pool.Pool
	l *ratelimit.Limiter
}

// newBoundedLimiter: ratelimit.Config{Rate, Period, Burst} on a pool.Config{}
// pool; the other fields at their defaults (FailLocal, denied cache on).
func newBoundedLimiter(addr string, lim rlLimit) (limiter, error) {
	p, err := pool.New(pool.Config{Addrs: []string{addr}})
	if err != nil {
		return nil, err
	}
	l, err := ratelimit.New(p, "bench", ratelimit.Config{Rate: lim.Rate, Period: lim.Period, Burst: lim.Burst})
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	return &boundedLimiter{p: p, l: l}, nil
}

func (b *boundedLimiter) Allow(ctx context.Context, key string) (decision, error) {
	r, err := b.l.Allow(ctx, key)
	return decision{allowed: r.Allowed, remaining: r.Remaining, fallback: r.Source == ratelimit.SourceFallback}, err
}

func (b *boundedLimiter) Close() error { return b.p.Close() }

type redisRate struct {
	c   *redis.Client
	l   *redis_rate.Limiter
	lim redis_rate.Limit
}

// newRedisRate: redis_rate.NewLimiter on a go-redis client with its
// defaults, as redis_rate's README sets it up.
func newRedisRate(addr string, lim rlLimit) (limiter, error) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	return &redisRate{c: c, l: redis_rate.NewLimiter(c), lim: redis_rate.Limit{Rate: lim.Rate, Burst: lim.Burst, Period: lim.Period}}, nil
}

func (r *redisRate) Allow(ctx context.Context, key string) (decision, error) {
	res, err := r.l.Allow(ctx, key, r.lim)
	if err != nil {
		return decision{}, err
	}
	return decision{allowed: res.Allowed > 0, remaining: res.Remaining}, nil
}

func (r *redisRate) Close() error { return r.c.Close() }

type newLimiter func(addr string, lim rlLimit) (limiter, error)

// Ratelimit compares bounded/ratelimit with redis_rate.
func (catalog) Ratelimit(sz Sizes) Scenario {
	both := func(name string, f func(newLimiter) RunFunc) Case {
		return Case{Name: name, Bounded: f(newBoundedLimiter), Peer: f(newRedisRate)}
	}
	keys := make([]string, sz.Keys)
	for i := range keys {
		keys[i] = fmt.Sprint("user:", i)
	}
	one := []string{"user:0"}
	var (
		// Every call runs the script, is admitted and writes the key. Not
		// 1e9/s: one event of a nanosecond is below what redis_rate's float
		// seconds since 2017 can add, so it would skip the write.
		admitAll = rlLimit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
		hot      = rlLimit{Rate: 1, Burst: 1, Period: time.Hour}   // one admission, then denials
		exact    = rlLimit{Rate: 10, Burst: 10, Period: time.Hour} // no refill within a run
		down     = rlLimit{Rate: 100, Burst: 100, Period: time.Second}
	)
	return Scenario{
		Name:  "ratelimit",
		Order: 40,
		Title: "ratelimit: bounded/ratelimit vs redis_rate",
		Peer:  "redis_rate v10.0.1",
		Cases: []Case{
			both("Allow on one key, every call admitted", func(mk newLimiter) RunFunc { return allowRun(mk, admitAll, one, true) }),
			both(fmt.Sprintf("Allow on %s keys, every call admitted", fmtNum(float64(sz.Keys))),
				func(mk newLimiter) RunFunc { return allowRun(mk, admitAll, keys, true) }),
			both("Allow on a hot denied key (1/hour)", func(mk newLimiter) RunFunc { return allowRun(mk, hot, one, false) }),
			both(fmt.Sprintf("decisions: %s keys x %d calls at 10/hour", fmtNum(exactKeys), exactCalls),
				func(mk newLimiter) RunFunc { return exactRun(mk, exact) }),
			both("Allow with Redis stopped", func(mk newLimiter) RunFunc { return downRun(mk, down) }),
		},
		Notes: []string{
			fmt.Sprintf("%d goroutines call Allow for %s (the Redis-stopped case: one goroutine). bounded: ratelimit.Config{Rate, Period, Burst} "+
				"on a pool.Config{} pool, so FailLocal and the denied cache are on; redis_rate: redis_rate.NewLimiter on redis.NewClient with go-redis's "+
				"defaults (20 connections here; 3 command retries 10ms-1s apart, 5 dial retries 100ms apart).", rlGoroutines, sz.RunFor),
			"Redis script µs/call is INFO commandstats' usec of EVALSHA and EVAL over the calls made, so a call answered locally costs 0; " +
				"Redis commands/call counts the commands inside the scripts too.",
			"\"Every call admitted\" is 1,000,000/s with a burst of 1,000,000, and each run checks that every admission wrote its key. " +
				"At 1,000,000,000/s redis_rate writes nothing: one event's nanosecond added to its float seconds since 2017 rounds away, " +
				"so its key never fills (and it would look faster than it is).",
			"Decisions: every key gets 15 calls in turn against 10 per hour, burst 10; exact GCRA admits calls 1-10 with Remaining 9..0 " +
				"and denies calls 11-15 with Remaining 0, and each implementation is compared with that call by call. bounded keeps integer " +
				"state and must match exactly; redis_rate keeps float seconds, and any Remaining it reports one lower is that float drift.",
			"Redis stopped: bounded answers from its policy (FailLocal: a local GCRA) once the pool has marked Redis down (after 3 refused " +
				"connections); redis_rate returns the connection error after go-redis's dial and command retries, which is most of its latency. " +
				"\"answered %\" is the share of calls that got a decision rather than an error.",
		},
	}
}

// allowRun calls Allow from rlGoroutines goroutines for r.Sizes.RunFor,
// spreading the calls over keys, and checks that every decision is the
// expected one: all admitted, or (after one admission) all denied.
func allowRun(mk newLimiter, lim rlLimit, keys []string, wantAllowed bool) RunFunc {
	return func(ctx context.Context, r *Run) error {
		l, err := mk(r.Redis.Addr(), lim)
		if err != nil {
			return err
		}
		defer l.Close()
		if !wantAllowed {
			if d, err := l.Allow(ctx, keys[0]); err != nil || !d.allowed {
				return fmt.Errorf("the first call on the hot key: %+v, %v", d, err)
			}
		}
		if err := resetStats(ctx, r.Redis); err != nil {
			return err
		}
		var wrong atomic.Int64
		var next atomic.Int64
		lat, elapsed, err := hammer(ctx, rlGoroutines, r.Sizes.RunFor, func(g int) error {
			key := keys[int(next.Add(1))%len(keys)]
			d, err := l.Allow(ctx, key)
			if err != nil {
				return err
			}
			if d.allowed != wantAllowed || d.fallback {
				wrong.Add(1)
			}
			return nil
		})
		if err != nil {
			return err
		}
		st, err := r.Redis.CommandStats(ctx)
		if err != nil {
			return err
		}
		calls := recordCalls(r, lat, elapsed)
		r.Record("Redis script µs/call", Lower, float64(st["evalsha"].Usec+st["eval"].Usec)/calls)
		r.Record("Redis commands/call", Lower, float64(totalCalls(st, harnessCommands...))/calls)
		want := "denied"
		if wantAllowed {
			want = "admitted"
		}
		r.Check(wrong.Load() == 0, "%d of %.0f calls were not %s, or were answered by a fallback", wrong.Load(), calls, want)
		if wantAllowed {
			// An admission that writes nothing would not limit anything.
			r.Check(float64(st["set"].Calls) == calls, "%d SETs for %.0f admitted calls: every admission must write its key", st["set"].Calls, calls)
		}
		return nil
	}
}

// recordCalls records the rate and latency of a timed loop's calls (lat
// sorted) and returns their number.
func recordCalls(r *Run, lat []time.Duration, elapsed time.Duration) float64 {
	calls := float64(len(lat))
	r.Record("calls/s", Higher, calls/elapsed.Seconds())
	r.Record("p50 µs", Lower, us(quantile(lat, 0.50)))
	r.Record("p99 µs", Lower, us(quantile(lat, 0.99)))
	return calls
}

// resetStats zeroes commandstats so that a count covers the measured calls
// only.
func resetStats(ctx context.Context, s *Server) error {
	return s.admin.ConfigResetStat(ctx).Err()
}

// hammer runs op from n goroutines until d has passed (or maxSamples calls
// were made) and returns every call's latency, sorted, and the time taken.
// The first error stops every goroutine and is returned.
func hammer(ctx context.Context, n int, d time.Duration, op func(g int) error) ([]time.Duration, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := make([][]time.Duration, n)
	var made atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() { // ends at the deadline, at maxSamples, or at an error
			for ctx.Err() == nil && made.Add(1) <= maxSamples {
				t0 := time.Now()
				if err := op(g); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				t1 := time.Now()
				lat[g] = append(lat[g], t1.Sub(t0))
				if !t1.Before(deadline) {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	return all, elapsed, firstErr
}

// exactRun gives each of exactKeys keys exactCalls calls in turn and
// compares every decision with exact GCRA's.
// exact must not refill within the run.
func exactRun(mk newLimiter, exact rlLimit) RunFunc {
	return func(ctx context.Context, r *Run) error {
		l, err := mk(r.Redis.Addr(), exact)
		if err != nil {
			return err
		}
		defer l.Close()
		var allowedWrong, remainingWrong, admitted atomic.Int64
		start := time.Now()
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		for g := range rlGoroutines {
			wg.Go(func() { // ends with its keys' calls
				for call := range exactCalls {
					for k := g; k < exactKeys; k += rlGoroutines {
						d, err := l.Allow(ctx, fmt.Sprint("user:", k))
						if err != nil {
							once.Do(func() { firstErr = err })
							return
						}
						wantAllowed, wantRemaining := call < exact.Burst, max(exact.Burst-call-1, 0)
						if d.allowed {
							admitted.Add(1)
						}
						if d.allowed != wantAllowed || d.fallback {
							allowedWrong.Add(1)
						}
						if d.remaining != wantRemaining {
							remainingWrong.Add(1)
						}
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		if firstErr != nil {
			return firstErr
		}
		r.Record("calls/s", Higher, float64(exactKeys*exactCalls)/elapsed.Seconds())
		r.Record("calls admitted", Equal, float64(admitted.Load()))
		r.Record("Allowed differing from exact GCRA", Lower, float64(allowedWrong.Load()))
		r.Record("Remaining differing from exact GCRA", Lower, float64(remainingWrong.Load()))
		r.Check(allowedWrong.Load() == 0, "%d of %d decisions differ from exact GCRA", allowedWrong.Load(), exactKeys*exactCalls)
		if r.Impl == Bounded {
			r.Check(remainingWrong.Load() == 0, "%d of %d Remaining values differ from exact GCRA, which bounded documents as exact",
				remainingWrong.Load(), exactKeys*exactCalls)
		}
		return nil
	}
}

// downRun stops Redis, calls Allow from one goroutine for r.Sizes.RunFor
// on 1,000 keys, and starts Redis again.
func downRun(mk newLimiter, lim rlLimit) RunFunc {
	return func(ctx context.Context, r *Run) error {
		l, err := mk(r.Redis.Addr(), lim)
		if err != nil {
			return err
		}
		defer l.Close()
		if _, err := l.Allow(ctx, "warm-up"); err != nil { // connected, scripts loaded
			return fmt.Errorf("warm-up call: %w", err)
		}
		if err := r.Redis.Stop(); err != nil {
			return err
		}
		defer func() {
			if err := r.Redis.Restart(context.WithoutCancel(ctx)); err != nil {
				r.Check(false, "restarting Redis: %v", err)
			}
		}()
		var answered, errs, bad atomic.Int64
		var next atomic.Int64
		lat, elapsed, err := hammer(ctx, 1, r.Sizes.RunFor, func(int) error {
			d, err := l.Allow(ctx, fmt.Sprint("user:", next.Add(1)%1000))
			switch {
			case err != nil:
				errs.Add(1)
			case r.Impl == Bounded && !d.fallback:
				bad.Add(1)
			default:
				answered.Add(1)
			}
			return ctx.Err()
		})
		if err != nil {
			return err
		}
		calls := recordCalls(r, lat, elapsed)
		r.Record("max ms", Lower, ms(quantile(lat, 1)))
		r.Record("answered %", Higher, float64(answered.Load())/calls*100)
		r.Check(bad.Load() == 0, "%d calls claimed an answer from Redis while it was stopped", bad.Load())
		if r.Impl == Bounded {
			r.Check(errs.Load() == 0, "%d calls returned an error instead of the policy's answer", errs.Load())
		} else if errs.Load() == 0 {
			return errors.New("redis_rate answered every call with Redis stopped: is the server really down?")
		}
		return nil
	}
}
