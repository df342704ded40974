package main

import (
	"cmp"
	"context"
	"math"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want summary
	}{
		{nil, summary{}},
		{[]float64{5}, summary{5, 5, 5, 1}},
		{[]float64{3, 1, 2}, summary{2, 1, 3, 3}},
		{[]float64{4, 1, 3, 2}, summary{2.5, 1, 4, 4}},
		{[]float64{7, 7, 7}, summary{7, 7, 7, 3}},
	} {
		require.Equal(t, c.want, summarize(c.in), "%v", c.in)
	}
	in := []float64{3, 1, 2}
	summarize(in)
	require.Equal(t, []float64{3, 1, 2}, in, "summarize must not reorder its input")
}

func TestQuantile(t *testing.T) {
	require.Zero(t, quantile(nil, 0.5))
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, time.Duration(1), quantile(d, 0))
	require.Equal(t, time.Duration(5), quantile(d, 0.5))
	require.Equal(t, time.Duration(9), quantile(d, 0.99))
	require.Equal(t, time.Duration(10), quantile(d, 1))
}

func TestFmtNum(t *testing.T) {
	for v, want := range map[float64]string{
		0:          "0",
		7:          "7",
		-3:         "-3",
		1000:       "1,000",
		50000:      "50,000",
		1234567:    "1,234,567",
		41237.5:    "41,200",
		0.12345:    "0.123",
		0.00015432: "0.000154",
		2.24:       "2.24",
		-1234.5:    "-1,230",
		999.95:     "1,000",
		3099999.9:  "3,100,000",
		math.NaN(): "NaN",
	} {
		require.Equal(t, want, fmtNum(v), "%v", v)
	}
}

func TestFmtSummary(t *testing.T) {
	require.Equal(t, "", fmtSummary(summary{}))
	require.Equal(t, "12", fmtSummary(summarize([]float64{12, 12, 12})))
	require.Equal(t, "41,237 (39,800-43,100)", fmtSummary(summarize([]float64{43100, 41237, 39800})), "integers exactly")
	require.Equal(t, "41,200 (39,800-43,100)", fmtSummary(summarize([]float64{43100, 41237.4, 39800})))
}

func TestFmtRatio(t *testing.T) {
	s := func(v ...float64) summary { return summarize(v) }
	require.Equal(t, "4.1x", fmtRatio(s(46600), s(11300)))
	require.Equal(t, "0.12x", fmtRatio(s(2.24), s(18)))
	require.Equal(t, "4,500x", fmtRatio(s(86400), s(19)))
	require.Equal(t, "0.00015x", fmtRatio(s(0.122), s(795)))
	require.Equal(t, "1x", fmtRatio(s(5), s(5)))
	require.Equal(t, "3,100,000x", fmtRatio(s(1_820_000), s(0.584)), "no tail of 9s")
	require.Equal(t, "-", fmtRatio(s(0), s(0)), "zero peer")
	require.Equal(t, "-", fmtRatio(s(3), summary{}), "missing peer")
	require.Equal(t, "-", fmtRatio(summary{}, s(3)), "missing bounded")
}

const commandstats = "# Commandstats\r\n" +
	"cmdstat_set:calls=1,usec=9,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_evalsha:calls=10,usec=60,usec_per_call=6.00,rejected_calls=0,failed_calls=1\r\n" +
	"cmdstat_client|setinfo:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_info:calls=4,usec=100,usec_per_call=25.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_config|resetstat:calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
	"garbage line\r\ncmdstat_broken\r\n"

func TestParseCommandStats(t *testing.T) {
	st := parseCommandStats(commandstats)
	require.Equal(t, map[string]cmdStat{
		"set":              {Calls: 1, Usec: 9},
		"evalsha":          {Calls: 10, Usec: 60},
		"client|setinfo":   {Calls: 2, Usec: 3},
		"info":             {Calls: 4, Usec: 100},
		"config|resetstat": {Calls: 1, Usec: 5},
	}, st)
	require.EqualValues(t, 13, totalCalls(st, harnessCommands...))
	require.EqualValues(t, 18, totalCalls(st))
	require.Empty(t, parseCommandStats(""))
}

func TestInfoField(t *testing.T) {
	info := "# Clients\r\nconnected_clients:7\r\nblocked_clients:3\r\n"
	v, ok := infoField(info, "connected_clients")
	require.True(t, ok)
	require.Equal(t, "7", v)
	v, ok = infoField(info, "blocked_clients")
	require.True(t, ok)
	require.Equal(t, "3", v)
	_, ok = infoField(info, "maxclients")
	require.False(t, ok)
}

func TestCPUModel(t *testing.T) {
	m, ok := cpuModel("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nprocessor\t: 1\nmodel name\t: other\n")
	require.True(t, ok)
	require.Equal(t, "Intel(R) Xeon(R) CPU @ 2.20GHz", m)
	_, ok = cpuModel("processor: 0\n")
	require.False(t, ok)
}

func TestRotate(t *testing.T) {
	all := []Impl{Bounded, Peer, Reference}
	require.Equal(t, []Impl{Bounded, Peer, Reference}, rotate(all, 0))
	require.Equal(t, []Impl{Peer, Reference, Bounded}, rotate(all, 1))
	require.Equal(t, []Impl{Reference, Bounded, Peer}, rotate(all, 2))
	require.Equal(t, []Impl{Bounded, Peer, Reference}, rotate(all, 3))
	require.Equal(t, []Impl{Peer, Bounded}, rotate([]Impl{Bounded, Peer}, 1))
	require.Nil(t, rotate(nil, 4))
	require.Equal(t, []Impl{Bounded, Peer, Reference}, all, "rotate must not change its input")
}

func TestSplit(t *testing.T) {
	require.Equal(t, []int{0, 50000}, split(50000, 1))
	require.Equal(t, []int{0, 16667, 33334, 50000}, split(50000, 3))
	require.Equal(t, []int{0, 1, 2, 2}, split(2, 3))
}

func TestCatalogFindsEveryScenario(t *testing.T) {
	all := allScenarios(quickSizes())
	var names []string
	for _, s := range all {
		names = append(names, s.Name)
		require.NotEmpty(t, s.Title, s.Name)
		require.NotEmpty(t, s.Peer, s.Name)
		require.NotEmpty(t, s.Cases, s.Name)
		for _, c := range s.Cases {
			require.NotNil(t, c.Bounded, "%s: %s has no bounded run", s.Name, c.Name)
			require.NotNil(t, c.Peer, "%s: %s has no peer run", s.Name, c.Name)
			require.Equal(t, s.Reference != "", c.Reference != nil, "%s: %s: a reference run goes with a Reference column", s.Name, c.Name)
		}
	}
	require.Subset(t, names, []string{"queue", "pool", "cache", "ratelimit"})
	require.True(t, slices.IsSortedFunc(all, func(a, b Scenario) int { return cmp.Compare(a.Order, b.Order) }), "in Order: %v", names)
	require.Len(t, slices.Compact(slices.Sorted(slices.Values(names))), len(names), "unique names: %v", names)
}

func TestSelectScenarios(t *testing.T) {
	all := []Scenario{{Name: "queue", Order: 10}, {Name: "pool", Order: 20}, {Name: "ratelimit", Order: 40}}
	got, err := selectScenarios(all, nil)
	require.NoError(t, err)
	require.Len(t, got, 3)
	got, err = selectScenarios(all, []string{"ratelimit", "queue", "queue"})
	require.NoError(t, err)
	require.Equal(t, "queue", got[0].Name, "in Order, not in flag order")
	require.Equal(t, "ratelimit", got[1].Name)
	require.Len(t, got, 2)
	_, err = selectScenarios(all, []string{"queue", "stream", "nope"})
	require.ErrorContains(t, err, `unknown scenario ["stream" "nope"]`)
	require.ErrorContains(t, err, `known: ["queue" "pool" "ratelimit"]`)
}

func TestParseFlags(t *testing.T) {
	var out strings.Builder
	o, err := parseFlags(nil, &out)
	require.NoError(t, err)
	require.Equal(t, 3, o.reps)
	require.Equal(t, defaultSizes(), o.sizes)
	require.Empty(t, o.scenarios)

	o, err = parseFlags([]string{"-quick", "-scenarios", "queue, pool", "-write"}, &out)
	require.NoError(t, err)
	require.Equal(t, 1, o.reps, "-quick makes one repetition")
	require.Equal(t, quickSizes(), o.sizes)
	require.Equal(t, []string{"queue", "pool"}, o.scenarios)
	require.True(t, o.write)

	o, err = parseFlags([]string{"-quick", "-reps", "2", "-jobs", "300"}, &out)
	require.NoError(t, err)
	require.Equal(t, 2, o.reps, "an explicit -reps wins over -quick")
	require.Equal(t, 300, o.sizes.Jobs, "an explicit -jobs wins over -quick")

	for _, bad := range [][]string{{"-reps", "0"}, {"-jobs", "10"}, {"-keys", "0"}, {"extra"}, {"-nope"}} {
		_, err := parseFlags(bad, &out)
		require.Error(t, err, "%q", bad)
	}
}

func TestCommandLine(t *testing.T) {
	require.Equal(t, "cd bench && go run .", commandLine(nil))
	require.Equal(t, "cd bench && go run . -quick -scenarios 'queue pool' -write", commandLine([]string{"-quick", "-scenarios", "queue pool", "-write"}))
}

func TestLedger(t *testing.T) {
	l := newLedger(3)
	p0, p1, p2 := l.payload(0), l.payload(1), l.payload(2)
	l.ran(p1)
	l.ran(p0)
	l.ran(p0) // a second run
	l.ran([]byte("not a job"))
	l.ran(newLedger(10).payload(7)) // no job of this ledger
	missing, repeated, bad := l.tally()
	require.Equal(t, 1, missing)
	require.Equal(t, 1, repeated)
	require.Equal(t, 2, bad)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	require.ErrorContains(t, l.wait(ctx), "only 2 of 3 jobs ran")
	require.NoError(t, l.waitFor(context.Background(), 0))

	l.ran(p2)
	require.NoError(t, l.wait(context.Background()))
	require.NoError(t, l.waitFor(context.Background(), 2))
	for _, d := range l.latencies(0, 3) {
		require.GreaterOrEqual(t, d, time.Duration(0))
	}
	require.NoError(t, newLedger(0).wait(context.Background()), "no jobs: done at once")
}

func TestMarkdown(t *testing.T) {
	s := &Scenario{Name: "queue", Title: "queue: a vs b", Peer: "asynq v0.26.0", Reference: "by hand", Notes: []string{"a note"}}
	res := &Results{}
	rec := func(impl Impl, metric string, b Better, vs ...float64) {
		for _, v := range vs {
			res.record(s, "drain", metric, b, impl, v)
		}
	}
	rec(Bounded, "jobs/s", Higher, 40000, 42000, 41000)
	rec(Peer, "jobs/s", Higher, 10000, 11000, 10500)
	rec(Reference, "jobs/s", Higher, 30000, 30000, 30000)
	rec(Bounded, "p99 ms", Lower, 1.5)
	rec(Peer, "p99 ms", Lower, 3)
	res.check(s, true, "fine")
	res.note(s, "dynamic note")
	res.note(s, "dynamic note")
	md := res.Markdown()
	require.Equal(t, "### queue: a vs b\n\n"+
		"| case | metric | better | bounded | asynq v0.26.0 | bounded/asynq | by hand |\n"+
		"| --- | --- | --- | --: | --: | --: | --: |\n"+
		"| drain | jobs/s | higher | 41,000 (40,000-42,000) | 10,500 (10,000-11,000) | 3.9x | 30,000 |\n"+
		"|  | p99 ms | lower | 1.5 | 3 | 0.5x |  |\n"+
		"\n- a note\n- dynamic note\n- Correctness checks: all 1 passed.\n\n", md)
	require.Empty(t, res.Failures())

	res.check(s, false, "queue, drain, asynq, rep 1: 3 jobs never ran")
	require.Contains(t, res.Markdown(), "**Correctness checks: 1 FAILED**, 1 passed:\n  - queue, drain, asynq, rep 1: 3 jobs never ran\n")
	require.Equal(t, []string{"queue, drain, asynq, rep 1: 3 jobs never ran"}, res.Failures())
}

// TestRunner drives a fake scenario through the runner on a real
// redis-server: every implementation runs once per repetition, in rotated
// order, on a reset server; isolated cases get servers of their own; a
// failing run becomes a failed check, not a crash.
func TestRunner(t *testing.T) {
	requireRedis(t)
	ctx := context.Background()
	srv, err := startServer(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()

	var order []Impl
	var addrs []string
	shared := func(impl Impl) RunFunc {
		return func(ctx context.Context, r *Run) error {
			require.Equal(t, impl, r.Impl)
			n, err := r.Redis.admin.DBSize(ctx).Result()
			require.NoError(t, err)
			require.Zero(t, n, "the server is reset before each run")
			require.NoError(t, r.Redis.admin.Set(ctx, "left-over", "x", 0).Err())
			order = append(order, impl)
			r.Record("value", Higher, float64(impl+1))
			r.Check(true, "ok")
			return nil
		}
	}
	isolated := make(chan string, 10)
	s := &Scenario{Name: "fake", Title: "fake", Peer: "peer v1", Cases: []Case{
		{Name: "shared", Bounded: shared(Bounded), Peer: shared(Peer)},
		{Name: "failing", Bounded: func(context.Context, *Run) error { return nil },
			Peer: func(context.Context, *Run) error { return context.Canceled }},
		{Name: "isolated", Isolated: true,
			Bounded: func(_ context.Context, r *Run) error { isolated <- r.Redis.Addr(); return nil },
			Peer:    func(_ context.Context, r *Run) error { isolated <- r.Redis.Addr(); return nil }},
	}}
	res := &Results{}
	var progress strings.Builder
	rn := &runner{srv: srv, sizes: quickSizes(), reps: 2, res: res, prog: newProgress(&progress, steps([]Scenario{*s}, 2))}
	require.NoError(t, rn.scenario(ctx, s))
	close(isolated)
	for a := range isolated {
		addrs = append(addrs, a)
	}

	require.Equal(t, []Impl{Bounded, Peer, Peer, Bounded}, order, "rep 2 starts with the peer")
	require.Len(t, addrs, 4)
	for _, a := range addrs {
		require.NotEqual(t, srv.Addr(), a, "an isolated run has a server of its own")
	}
	require.Equal(t, []string{
		"fake, failing, peer v1, rep 1: run failed: context canceled",
		"fake, failing, peer v1, rep 2: run failed: context canceled",
	}, res.Failures())
	require.Contains(t, res.Markdown(), "| shared | value | higher | 1 | 2 | 0.5x |")
	require.Equal(t, 2*2+2*2+2, strings.Count(progress.String(), "\n"), "one line per run, one per isolated repetition")
	require.Contains(t, progress.String(), "[ 1/10 0:00] fake: shared, rep 1/2, bounded\n")
}

func TestServer(t *testing.T) {
	requireRedis(t)
	ctx := context.Background()
	srv, err := startServer(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()
	require.NotEqual(t, "127.0.0.1:6379", srv.Addr())

	require.NoError(t, srv.Reset(ctx))
	require.NoError(t, srv.admin.Set(ctx, "k", "v", 0).Err())
	n, err := srv.Calls(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the SET, and none of the harness's own commands")
	c, err := srv.Clients(ctx)
	require.NoError(t, err)
	require.Zero(t, c, "the harness's connection is left out")

	require.NoError(t, srv.Stop())
	if c, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil { // not through go-redis, whose redial goroutine outlives a test
		_ = c.Close()
		t.Fatal("the stopped server still accepts connections")
	}
	require.NoError(t, srv.Restart(ctx))
	require.Error(t, srv.Restart(ctx), "already running")
	require.NoError(t, srv.admin.Ping(ctx).Err())
	require.Zero(t, srv.admin.DBSize(ctx).Val(), "no persistence: empty after a restart")
}

func requireRedis(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("BOUNDED_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found and BOUNDED_REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not found")
	}
}
