package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// clusterSuite is every test onBoth runs, to run once more on a cluster.
var clusterSuite = []struct {
	name string
	test func(t *testing.T, b backend)
}{
	{"HotDeniedKeyCostsNoCommand", testHotDeniedKeyCostsNoCommand},
	{"GCRATables", testGCRATables},
	{"BurstAdmitsExactlyBurst", testBurstAdmitsExactlyBurst},
	{"LongRunExact", testLongRunExact},
	{"ScriptMatchesModel", testScriptMatchesModel},
	{"ScriptMatchesModelAtExtremes", testScriptMatchesModelAtExtremes},
	{"ScriptMatchesRationalModel", testScriptMatchesRationalModel},
	{"NewLimitReadsTheSameInstant", testNewLimitReadsTheSameInstant},
	{"UnitsWithoutCommonMultiple", testUnitsWithoutCommonMultiple},
	{"PreviousVersionReadsState", testPreviousVersionReadsState},
	{"PreviousVersionNeverAdmitsEarly", testPreviousVersionNeverAdmitsEarly},
	{"StateExpires", testStateExpires},
	{"BadArguments", testBadArguments},
	{"WaitDeadline", testWaitDeadline},
	{"WindowsMatchRationalModel", testWindowsMatchRationalModel},
	{"WindowsAllOrNone", testWindowsAllOrNone},
	{"LimitChangesBetweenCalls", testLimitChangesBetweenCalls},
	{"AllowLimitsEdgeValues", testAllowLimitsEdgeValues},
	{"Reset", testReset},
}

// TestCluster runs the Redis-semantics tests on one real 3-master Redis
// Cluster (starting one takes about two seconds).
func TestCluster(t *testing.T) {
	c := redistest.Cluster(t)
	b := clusterBackend(c)
	for _, s := range clusterSuite {
		t.Run(s.name, func(t *testing.T) { s.test(t, b) })
	}
	t.Run("LimitersOnEveryMaster", func(t *testing.T) { testLimitersOnEveryMaster(t, c, b) })
}

// testLimitersOnEveryMaster runs one limiter per master from one pool,
// concurrently: each admits exactly its burst, denials come from its own
// master or the denied cache, and every master served its limiter.
func testLimitersOnEveryMaster(t *testing.T, c *redistest.RedisCluster, b backend) {
	ctx := context.Background()
	names := c.OnEveryMaster(func(i int) string { return fmt.Sprint("api", i) }, func(n string) string { return "{rl:" + n + "}:k" })
	p := b.newPool(t)
	before := map[string]int64{}
	for _, name := range names {
		m, err := c.MasterOf(ctx, "{rl:"+name+"}:k")
		require.NoError(t, err)
		st, err := m.CommandStats(ctx)
		require.NoError(t, err)
		before[m.Addr()] = st["evalsha"] + st["eval"]
	}
	clk := testutil.NewClock()
	type outcome struct{ admitted, denied int }
	results := make([]outcome, len(names))
	done := make(chan int, len(names))
	for i, name := range names {
		l := newLimiter(t, p, name, Config{Rate: 10, Period: time.Minute, Burst: 7, Now: clk.Now})
		keepState(t, l)
		go func() {
			for j := range 50 {
				r, err := l.Allow(ctx, fmt.Sprint("user", j%5))
				if err != nil || r.Source == SourceFallback {
					t.Errorf("%s: %+v %v", name, r, err)
					break
				}
				if r.Allowed {
					results[i].admitted++
				} else {
					results[i].denied++
				}
			}
			done <- i
		}()
	}
	timeout := time.After(time.Minute)
	for range names {
		select {
		case <-done:
		case <-timeout:
			t.Fatal("limiters still running after a minute")
		}
	}
	for i, r := range results {
		require.Equal(t, outcome{admitted: 5 * 7, denied: 50 - 5*7}, r, names[i])
	}
	for _, name := range names {
		m, err := c.MasterOf(ctx, "{rl:"+name+"}:k")
		require.NoError(t, err)
		st, err := m.CommandStats(ctx)
		require.NoError(t, err)
		require.Greater(t, st["evalsha"]+st["eval"], before[m.Addr()], "%s on %s", name, m.Addr())
	}
	require.True(t, p.Healthy())
}
