package main

import (
	"context"
	"errors"
	"log"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestOpsStats(t *testing.T) {
	s := opsStats{calls: 4, elapsed: 2 * time.Microsecond, mallocs: 13}
	require.Equal(t, 500.0, s.nsPerOp())
	require.Equal(t, 3.25, s.allocsPerOp())
	require.Equal(t, 2e6, s.perSecond())
	require.Equal(t, 0.0, opsStats{calls: 10_000_000, mallocs: 3}.allocsPerOp(), "a few runtime allocations over millions of calls round away")
	require.Equal(t, 0.01, opsStats{calls: 1000, mallocs: 7}.allocsPerOp())
	require.Zero(t, opsStats{}.nsPerOp(), "no calls")
	require.Zero(t, opsStats{}.allocsPerOp(), "no calls")
	require.Zero(t, opsStats{calls: 3}.perSecond(), "no time")
}

func TestOpsLoop(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	seen := map[int][]int{}
	st, err := opsLoop(ctx, 3, 20*time.Millisecond, 4, func(g, i int) error {
		mu.Lock()
		seen[g] = append(seen[g], i)
		mu.Unlock()
		return nil
	})
	require.NoError(t, err)
	require.GreaterOrEqual(t, st.elapsed, 20*time.Millisecond, "runs until the deadline")
	total := 0
	for g := range 3 {
		is := seen[g]
		require.NotEmpty(t, is, "goroutine %d ran", g)
		require.Zero(t, len(is)%4, "whole batches: %d calls", len(is))
		require.Equal(t, g*7919, is[0], "goroutine %d starts on its own key", g)
		require.True(t, slices.IsSorted(is) && is[len(is)-1] == is[0]+len(is)-1, "consecutive i")
		total += len(is)
	}
	require.EqualValues(t, total, st.calls)

	// An error in goroutine 0 must stop goroutine 1 too, or this runs for
	// an hour.
	boom := errors.New("boom")
	st, err = opsLoop(ctx, 2, time.Hour, 1, func(g, i int) error {
		if g == 0 && i == 5 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
	require.GreaterOrEqual(t, st.calls, int64(5), "the calls before the error count, the failed one does not")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	st, err = opsLoop(cctx, 2, time.Hour, 1, func(int, int) error { return nil })
	require.NoError(t, err)
	require.Zero(t, st.calls, "a cancelled context makes no call")
}

func TestCaptureLog(t *testing.T) {
	var out strings.Builder
	w, flags, prefix := log.Writer(), log.Flags(), log.Prefix()
	log.SetOutput(&out)
	log.SetPrefix("app: ")
	defer func() { log.SetOutput(w); log.SetFlags(flags); log.SetPrefix(prefix) }()

	got := captureLog(func() { log.Printf("too short TTL for key=%q: %s", "k", 500*time.Millisecond) })
	require.Equal(t, `too short TTL for key="k": 500ms`, got, "no date, no prefix, trimmed")
	require.Empty(t, out.String(), "nothing reached the logger's own output")
	require.Empty(t, captureLog(func() {}))

	log.Print("after")
	require.Equal(t, "app: ", log.Prefix(), "prefix restored")
	require.Equal(t, flags, log.Flags(), "flags restored")
	require.True(t, strings.HasPrefix(out.String(), "app: ") && strings.HasSuffix(out.String(), "after\n"), "output restored: %q", out.String())
}

func TestCacheKeyValues(t *testing.T) {
	keys, vals := cacheKeyValues()
	require.Len(t, keys, cacheKeys)
	require.Len(t, vals, cacheKeys)
	require.Zero(t, cacheKeys&(cacheKeys-1), "a power of two: the cases index with i&(n-1)")
	require.Len(t, slices.Compact(slices.Sorted(slices.Values(keys))), cacheKeys, "distinct keys")
	require.Len(t, slices.CompactFunc(slices.Clone(vals), func(a, b cacheItem) bool { return a == b }), cacheKeys, "distinct values")
}

// fakeCacher answers GetOrLoad by calling load every time.
type fakeCacher struct {
	cacher
	calls atomic.Int64
}

func (f *fakeCacher) GetOrLoad(ctx context.Context, _ string, load func(context.Context) (cacheItem, error)) (cacheItem, error) {
	f.calls.Add(1)
	return load(ctx)
}

func TestStampede(t *testing.T) {
	insts := []cacher{&fakeCacher{}, &fakeCacher{}, &fakeCacher{}}
	// Every caller blocks in load until all 30 are in it: stampede must
	// run them all at once.
	var inLoad atomic.Int64
	all := make(chan struct{})
	load := func(context.Context) (cacheItem, error) {
		if inLoad.Add(1) == 30 {
			close(all)
		}
		<-all
		return cacheItem{ID: 7}, nil
	}
	res := stampede(context.Background(), insts, 10, "k", load)
	require.Len(t, res.results, 30)
	for _, o := range res.results {
		require.NoError(t, o.err)
		require.Equal(t, cacheItem{ID: 7}, o.v)
	}
	for _, c := range insts {
		require.EqualValues(t, 10, c.(*fakeCacher).calls.Load())
	}
	require.Positive(t, res.took)
}

// TestCacheScenario runs every case of the cache scenario once for both
// implementations on a real redis-server, with short loops, and requires
// every correctness check to pass and every metric to be recorded for both.
func TestCacheScenario(t *testing.T) {
	requireRedis(t)
	ctx := context.Background()
	srv, err := startServer(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()

	sz := quickSizes()
	sz.RunFor = 50 * time.Millisecond
	s := (catalog{}).Cache(sz)
	res := &Results{}
	rn := &runner{srv: srv, sizes: sz, reps: 1, res: res, prog: newProgress(&strings.Builder{}, steps([]Scenario{s}, 1))}
	require.NoError(t, rn.scenario(ctx, &s))
	require.Empty(t, res.Failures())

	md := res.Markdown()
	require.Regexp(t, `\| Set with a TTL of 500ms \| PTTL in Redis right after, ms \| equal \| (?:4\d\d|500) \| 3,[56]\d\d,\d\d\d \|`, md,
		"bounded keeps 500ms; go-redis/cache makes it an hour")
	require.Contains(t, md, "| loader calls/stampede | lower | 1 |")
	require.Contains(t, md, `logged "too short TTL for key=\"short\": 500ms"`)
	rows := 0
	for line := range strings.SplitSeq(md, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| case") || strings.HasPrefix(line, "| ---") {
			continue
		}
		rows++
		cells := strings.Split(line, " | ")
		require.Len(t, cells, 6, line)
		require.NotEmpty(t, strings.TrimSpace(cells[3]), "bounded recorded: %s", line)
		require.NotEmpty(t, strings.TrimSpace(cells[4]), "go-redis/cache recorded: %s", line)
	}
	require.Equal(t, 19, rows)
}
