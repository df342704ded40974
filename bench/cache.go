package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// cacheKeys are the keys of the hit cases (a power of two: i&(n-1)).
	cacheKeys = 1024
	// cacheGoroutines call Get at once in the parallel Redis-hit case, as
	// in the ratelimit scenario.
	cacheGoroutines = 16

	// The stampede: stampedeInstances instances of the cache (each its own
	// pool or client, as separate processes would have) with
	// stampedeCallers callers each, all let go at once on a cold key whose
	// loader takes stampedeLoad; stampedes cold keys in a row per run.
	stampedeInstances = 4
	stampedeCallers   = 100
	stampedeLoad      = 2 * time.Millisecond
	stampedes         = 20

	// The deadline case: a waiter with waiterDeadline joins a load of
	// slowLoad.
	slowLoad       = 300 * time.Millisecond
	waiterDeadline = 20 * time.Millisecond

	// shortTTL is under a second, which go-redis/cache replaces with 1h.
	shortTTL = 500 * time.Millisecond
)

// Cache compares bounded/cache with go-redis/cache.
func (catalog) Cache(sz Sizes) Scenario {
	both := func(name string, f func(newCacher) RunFunc) Case {
		return Case{Name: name, Bounded: f(newBoundedCache), Peer: f(newGoRedisCache)}
	}
	procs := runtime.GOMAXPROCS(0)
	return Scenario{
		Name:  "cache",
		Order: 30,
		Title: "cache: bounded/cache vs go-redis/cache",
		Peer:  "go-redis/cache v9.0.0",
		Cases: []Case{
			both(fmt.Sprintf("local hit, serial, %s keys", fmtNum(cacheKeys)), func(mk newCacher) RunFunc { return localHitRun(mk, 1) }),
			both(fmt.Sprintf("local hit, parallel, %d goroutines", procs), func(mk newCacher) RunFunc { return localHitRun(mk, procs) }),
			both("Redis hit (local tier off), serial", func(mk newCacher) RunFunc { return redisHitRun(mk, 1) }),
			both(fmt.Sprintf("Redis hit (local tier off), %d goroutines", cacheGoroutines),
				func(mk newCacher) RunFunc { return redisHitRun(mk, cacheGoroutines) }),
			both(fmt.Sprintf("stampede: %d instances x %d callers on a cold key, %d keys in turn", stampedeInstances, stampedeCallers, stampedes), stampedeRun),
			both(fmt.Sprintf("a waiter with a %s deadline joins a %s load", waiterDeadline, slowLoad), deadlineRun),
			both(fmt.Sprintf("Set with a TTL of %s", shortTTL), shortTTLRun),
		},
		Notes: []string{
			fmt.Sprintf("bounded: cache.Config[V]{TTL: 1h} on a pool.Config{} pool (JSON in Redis, a local tier of 10,000 entries and 64 MiB, "+
				"the cross-instance load lock; the stampede and waiter cases Start it on a lifecycle group). go-redis/cache: "+
				"cache.New(&cache.Options{Redis: rdb, LocalCache: cache.NewTinyLFU(10_000, time.Minute), StatsEnabled: true}) on "+
				"redis.NewClient with go-redis's defaults, as its README sets it up, with bounded's 10,000 entries instead of the README's 1,000 "+
				"so that the %s keys fit; msgpack in Redis. Values are a struct{ID int; Name string; Score int64}.", fmtNum(cacheKeys)),
			fmt.Sprintf("Hit cases call Get for %s in batches; ns/op and µs/op are wall time over calls, across all goroutines as in "+
				"b.RunParallel. allocs/op is the process's runtime.MemStats.Mallocs delta over the loop divided by the calls, "+
				"to hundredths (the harness allocates nothing meanwhile). Every Get's value is compared with the one written, and the local-hit "+
				"cases check that Redis received no command during the loop.", sz.RunFor),
			"go-redis/cache's local tier holds encoded bytes, so every local hit decodes (msgpack) into the caller's variable; bounded's " +
				"holds the typed value. \"hits counted by its Stats\" is Stats().LocalHits+RedisHits for bounded and Stats().Hits for " +
				"go-redis/cache, over the calls made: go-redis/cache counts Redis hits only. Redis hit with the local tier off is one GET " +
				"for both (with a local tier, bounded reads GET+PTTL in one round trip so a local copy never outlives Redis's).",
			fmt.Sprintf("Stampede: %d instances, each its own pool or client, %d GetOrLoad (go-redis/cache: Once) callers each, all "+
				"released together on a cold key whose loader takes %s; %d keys one after another. Time is from the release until the "+
				"last of the %d callers has its value. Every caller must get the loaded value, and a fresh instance without a local tier "+
				"must read it back from Redis. go-redis/cache's singleflight works within one process only: each instance sends one GET, "+
				"loads, and sends one SET. bounded's instances each send a GET+PTTL pipeline and a lock script; the one that takes the lock "+
				"loads and runs one script that writes, releases and publishes; the others run the lock script again when the note arrives. "+
				"Redis commands count the commands inside scripts, so they are more than the round trips.",
				stampedeInstances, stampedeCallers, stampedeLoad, stampedes, stampedeInstances*stampedeCallers),
			fmt.Sprintf("Waiter: one caller starts a load that takes %s; once the loader runs, a second caller of the same instance asks "+
				"for the key with a %s deadline. bounded's waiter leaves when its own context ends, with an error matching "+
				"context.DeadlineExceeded, and the load goes on; go-redis/cache's waits inside singleflight.Do for the load and returns "+
				"its value (no error) whenever it is done.", slowLoad, waiterDeadline),
			fmt.Sprintf("TTL: Set with a TTL of %s, then PTTL of the key in Redis. go-redis/cache replaces any TTL under a second with "+
				"1h (and logs \"too short TTL\" through the standard logger); bounded sends milliseconds.", shortTTL),
		},
	}
}

// cacheKeyValues returns the keys of the hit cases and the value of each.
func cacheKeyValues() ([]string, []cacheItem) {
	keys := make([]string, cacheKeys)
	vals := make([]cacheItem, cacheKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%04d", i)
		vals[i] = cacheItem{ID: i, Name: "name", Score: int64(i) * 7}
	}
	return keys, vals
}

// fillCache writes every key's value through c.
func fillCache(ctx context.Context, c cacher, keys []string, vals []cacheItem) error {
	for i, k := range keys {
		if err := c.Set(ctx, k, vals[i], cacheTTL); err != nil {
			return fmt.Errorf("Set %q: %w", k, err)
		}
	}
	return nil
}

// localHitRun fills a cache with a local tier and calls Get on its keys
// from goroutines goroutines for r.Sizes.RunFor.
func localHitRun(mk newCacher, goroutines int) RunFunc {
	return func(ctx context.Context, r *Run) error {
		c, err := mk(ctx, r.Redis.Addr(), cacheOpts{})
		if err != nil {
			return err
		}
		defer c.Close()
		hits := c.Hits()
		st, cmds, err := hitLoop(ctx, r, c, goroutines, 256)
		if err != nil {
			return err
		}
		hits = c.Hits() - hits
		r.Record("ns/op", Lower, st.nsPerOp())
		r.Record("allocs/op", Lower, st.allocsPerOp())
		if goroutines == 1 {
			r.Record("hits counted by its Stats, %", Higher, float64(hits)/float64(st.calls)*100)
		}
		r.Check(cmds == 0, "%d Redis commands during %d Gets of keys that were all written through this instance: not local hits", cmds, st.calls)
		if r.Impl == Bounded {
			r.Check(hits == uint64(st.calls), "Stats counted %d hits for %d local hits", hits, st.calls)
		}
		return nil
	}
}

// redisHitRun fills Redis through a cache without a local tier and calls
// Get on its keys from goroutines goroutines for r.Sizes.RunFor.
func redisHitRun(mk newCacher, goroutines int) RunFunc {
	return func(ctx context.Context, r *Run) error {
		c, err := mk(ctx, r.Redis.Addr(), cacheOpts{noLocal: true})
		if err != nil {
			return err
		}
		defer c.Close()
		st, cmds, err := hitLoop(ctx, r, c, goroutines, 1)
		if err != nil {
			return err
		}
		if goroutines == 1 {
			r.Record("µs/op", Lower, st.nsPerOp()/1e3)
		} else {
			r.Record("calls/s", Higher, st.perSecond())
		}
		r.Record("allocs/op", Lower, st.allocsPerOp())
		r.Record("Redis commands/op", Lower, float64(cmds)/float64(st.calls))
		return nil
	}
}

// hitLoop writes the hit cases' keys through c, zeroes the server's
// statistics, and calls Get on the keys from goroutines goroutines for
// r.Sizes.RunFor (looking at the clock every batch calls). It checks every
// value, and returns what the loop measured and the Redis commands sent
// during it.
func hitLoop(ctx context.Context, r *Run, c cacher, goroutines, batch int) (opsStats, int64, error) {
	keys, vals := cacheKeyValues()
	if err := fillCache(ctx, c, keys, vals); err != nil {
		return opsStats{}, 0, err
	}
	if err := resetStats(ctx, r.Redis); err != nil {
		return opsStats{}, 0, err
	}
	var wrong atomic.Int64
	st, err := opsLoop(ctx, goroutines, r.Sizes.RunFor, batch, func(_, i int) error {
		k := i & (cacheKeys - 1)
		v, err := c.Get(ctx, keys[k])
		if err != nil {
			return fmt.Errorf("Get %q: %w", keys[k], err)
		}
		if v != vals[k] {
			wrong.Add(1)
		}
		return nil
	})
	if err != nil {
		return opsStats{}, 0, err
	}
	cmds, err := r.Redis.Calls(ctx)
	if err != nil {
		return opsStats{}, 0, err
	}
	r.Check(wrong.Load() == 0, "%d of %d Gets returned a wrong value", wrong.Load(), st.calls)
	return st, cmds, nil
}

// stampedeRun lets stampedeInstances x stampedeCallers callers at once
// at each of stampedes cold keys and counts the loader calls.
func stampedeRun(mk newCacher) RunFunc {
	return func(ctx context.Context, r *Run) error {
		insts := make([]cacher, 0, stampedeInstances)
		defer func() {
			for _, c := range insts {
				_ = c.Close()
			}
		}()
		for range stampedeInstances {
			c, err := mk(ctx, r.Redis.Addr(), cacheOpts{start: true})
			if err != nil {
				return err
			}
			insts = append(insts, c)
		}
		if err := resetStats(ctx, r.Redis); err != nil {
			return err
		}
		took := make([]time.Duration, stampedes)
		var loads, overLoaded, wrong, failed int64
		var firstErr error
		for s := range stampedes {
			key := fmt.Sprint("cold:", s)
			want := cacheItem{ID: s, Name: "loaded", Score: int64(s)}
			var n atomic.Int64
			load := func(ctx context.Context) (cacheItem, error) {
				n.Add(1)
				if err := sleep(ctx, stampedeLoad); err != nil { // a database round trip
					return cacheItem{}, err
				}
				return want, nil
			}
			res := stampede(ctx, insts, stampedeCallers, key, load)
			took[s] = res.took
			loads += n.Load()
			if n.Load() != 1 {
				overLoaded++
			}
			for _, o := range res.results {
				switch {
				case o.err != nil:
					failed++
					if firstErr == nil {
						firstErr = o.err
					}
				case o.v != want:
					wrong++
				}
			}
		}
		cmds, err := r.Redis.Calls(ctx)
		if err != nil {
			return err
		}
		inRedis, err := readBack(ctx, mk, r.Redis.Addr(), stampedes, func(s int) (string, cacheItem) {
			return fmt.Sprint("cold:", s), cacheItem{ID: s, Name: "loaded", Score: int64(s)}
		})
		if err != nil {
			return err
		}
		slices.Sort(took)
		r.Record("loader calls/stampede", Lower, float64(loads)/stampedes)
		r.Record("p50 ms until all have the value", Lower, ms(quantile(took, 0.5)))
		r.Record("max ms until all have the value", Lower, ms(quantile(took, 1)))
		r.Record("Redis commands/stampede", Lower, float64(cmds)/stampedes)
		calls := int64(stampedes * stampedeInstances * stampedeCallers)
		r.Check(failed == 0, "%d of %d callers got an error, e.g. %v", failed, calls, firstErr)
		r.Check(wrong == 0, "%d of %d callers got a value other than the one loaded", wrong, calls)
		r.Check(inRedis == stampedes, "a fresh instance read back %d of %d loaded values from Redis", inRedis, stampedes)
		if r.Impl == Bounded {
			r.Check(overLoaded == 0, "%d of %d stampedes called the loader more than once (%d calls in all): bounded loads once across instances",
				overLoaded, stampedes, loads)
		}
		return nil
	}
}

// outcome is what one caller got.
type outcome struct {
	v   cacheItem
	err error
}

type stampedeResult struct {
	results []outcome
	took    time.Duration // from the release until the last caller returned
}

// stampede starts callers goroutines per instance, all waiting, then
// releases them at once on key and waits for every one.
func stampede(ctx context.Context, insts []cacher, callers int, key string, load func(context.Context) (cacheItem, error)) stampedeResult {
	res := make([]outcome, len(insts)*callers)
	release := make(chan struct{})
	var ready, done sync.WaitGroup
	for i, c := range insts {
		for j := range callers {
			ready.Add(1)
			done.Go(func() { // ends with its call
				ready.Done()
				<-release
				v, err := c.GetOrLoad(ctx, key, load)
				res[i*callers+j] = outcome{v, err}
			})
		}
	}
	ready.Wait()
	start := time.Now()
	close(release)
	done.Wait()
	return stampedeResult{results: res, took: time.Since(start)}
}

// readBack counts the n values that a fresh instance without a local tier
// reads back from Redis as want(i) gives them: what was stored decodes to
// what was loaded.
func readBack(ctx context.Context, mk newCacher, addr string, n int, want func(i int) (string, cacheItem)) (int, error) {
	c, err := mk(ctx, addr, cacheOpts{noLocal: true})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ok := 0
	for i := range n {
		k, w := want(i)
		if v, err := c.Get(ctx, k); err == nil && v == w {
			ok++
		}
	}
	return ok, nil
}

// deadlineRun starts a slow load, then sends a second caller with a short
// deadline after it, and measures when that caller returns.
func deadlineRun(mk newCacher) RunFunc {
	return func(ctx context.Context, r *Run) error {
		c, err := mk(ctx, r.Redis.Addr(), cacheOpts{start: true})
		if err != nil {
			return err
		}
		defer c.Close()
		const key = "slow"
		want := cacheItem{ID: 1, Name: "slow", Score: 300}
		running := make(chan struct{})
		var loads atomic.Int64
		load := func(ctx context.Context) (cacheItem, error) {
			if loads.Add(1) == 1 {
				close(running)
			}
			if err := sleep(ctx, slowLoad); err != nil { // a slow query
				return cacheItem{}, err
			}
			return want, nil
		}
		leader := make(chan outcome, 1)
		go func() { // ends with the leader's call, waited for below
			v, err := c.GetOrLoad(ctx, key, load)
			leader <- outcome{v, err}
		}()
		select {
		case <-running:
		case <-ctx.Done():
			return ctx.Err()
		}
		wctx, cancel := context.WithTimeout(ctx, waiterDeadline)
		t0 := time.Now()
		v, werr := c.GetOrLoad(wctx, key, load)
		waited := time.Since(t0)
		cancel()
		lead := <-leader
		honoured := 0.0
		if errors.Is(werr, context.DeadlineExceeded) {
			honoured = 100
		}
		r.Record("ms until the waiter returned", Lower, ms(waited))
		r.Record("waiter got its deadline's error, %", Higher, honoured)
		r.Record("loader calls", Lower, float64(loads.Load()))
		r.Check(lead.err == nil && lead.v == want, "the first caller got %+v, %v, want %+v", lead.v, lead.err, want)
		r.Check(werr != nil || v == want, "the waiter got %+v with no error, want %+v", v, want)
		if r.Impl == Bounded {
			r.Check(honoured == 100, "the waiter with a %s deadline returned %v after %s, want an error matching context.DeadlineExceeded",
				waiterDeadline, werr, waited.Round(time.Millisecond))
		}
		n, err := readBack(ctx, mk, r.Redis.Addr(), 1, func(int) (string, cacheItem) { return key, want })
		if err != nil {
			return err
		}
		r.Check(n == 1, "a fresh instance did not read the loaded value back from Redis")
		return nil
	}
}

// shortTTLRun sets a key with a TTL under a second and reads its TTL in
// Redis.
func shortTTLRun(mk newCacher) RunFunc {
	return func(ctx context.Context, r *Run) error {
		c, err := mk(ctx, r.Redis.Addr(), cacheOpts{})
		if err != nil {
			return err
		}
		defer c.Close()
		const key = "short"
		want := cacheItem{ID: 2, Name: "short", Score: 500}
		var serr error
		logged := captureLog(func() { serr = c.Set(ctx, key, want, shortTTL) })
		if serr != nil {
			return serr
		}
		pttl, err := r.Redis.admin.PTTL(ctx, c.RedisKey(key)).Result()
		if err != nil {
			return err
		}
		v, err := c.Get(ctx, key)
		if err != nil {
			return err
		}
		r.Record("PTTL in Redis right after, ms", Equal, ms(pttl))
		r.Check(v == want, "Get returned %+v, want %+v", v, want)
		if logged != "" {
			r.Note("%s logged %q for the %s TTL.", r.column(), logged, shortTTL)
		}
		if r.Impl == Bounded {
			r.Check(pttl > 0 && pttl <= shortTTL, "PTTL %s after Set with a TTL of %s", pttl, shortTTL)
		}
		return nil
	}
}

// captureLog runs f with the standard logger writing, without date or
// prefix, to a buffer, and returns what was logged (trimmed). It restores
// the logger's output, flags and prefix. Nothing else may log meanwhile.
func captureLog(f func()) string {
	w, flags, prefix := log.Writer(), log.Flags(), log.Prefix()
	var buf bytes.Buffer
	log.SetOutput(&buf)
	log.SetFlags(0)
	log.SetPrefix("")
	defer func() {
		log.SetOutput(w)
		log.SetFlags(flags)
		log.SetPrefix(prefix)
	}()
	f()
	return strings.TrimSpace(buf.String())
}

// opsStats is what opsLoop measured.
type opsStats struct {
	calls   int64
	elapsed time.Duration
	mallocs uint64 // heap allocations of the whole process meanwhile
}

func (s opsStats) nsPerOp() float64 {
	if s.calls == 0 {
		return 0
	}
	return float64(s.elapsed.Nanoseconds()) / float64(s.calls)
}

// allocsPerOp is rounded to hundredths: the delta is the whole process's,
// and a few allocations of the runtime's own over millions of calls are not
// the call's.
func (s opsStats) allocsPerOp() float64 {
	if s.calls == 0 {
		return 0
	}
	return math.Round(float64(s.mallocs)/float64(s.calls)*100) / 100
}

func (s opsStats) perSecond() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.calls) / s.elapsed.Seconds()
}

// opsLoop calls op from n goroutines until d has passed, looking at the
// clock every batch calls (a clock read costs as much as a local hit), and
// returns the calls made, the wall time and the heap allocations of the
// process meanwhile. Goroutine g passes i = g*7919, g*7919+1, ... so that
// goroutines start on different keys. The first error stops every
// goroutine and is returned.
func opsLoop(ctx context.Context, n int, d time.Duration, batch int, op func(g, i int) error) (opsStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var calls atomic.Int64
	var firstErr error
	var once sync.Once
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() { // ends at the deadline or at an error
			i, made := g*7919, int64(0)
			defer func() { calls.Add(made) }()
			for ctx.Err() == nil {
				for range batch {
					if err := op(g, i); err != nil {
						once.Do(func() { firstErr = err; cancel() })
						return
					}
					i++
					made++
				}
				if !time.Now().Before(deadline) {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return opsStats{calls: calls.Load(), elapsed: elapsed, mallocs: after.Mallocs - before.Mallocs}, firstErr
}
