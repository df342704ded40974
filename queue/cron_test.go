package queue

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// cronFleet is processes sharing one miniredis and one manual clock,
// without workers: take plays a worker taking the earliest occurrence.
type cronFleet struct {
	t     *testing.T
	clock *testutil.Clock
	qs    []*Queue
	turn  int
	copy  map[time.Time]int64 // the copy (enqueue ms) of each occurrence taken
}

func newCronFleet(t *testing.T, n int, cfg Config) *cronFleet {
	m := redistest.Mini(t)
	f := &cronFleet{t: t, clock: testutil.NewClock(), copy: map[time.Time]int64{}}
	cfg.Now = f.clock.Now
	for range n {
		p := mustPool(t, pool.Config{Addrs: []string{m.Addr()}})
		f.qs = append(f.qs, mustQueue(t, p, "cron", cfg))
	}
	return f
}

// pending returns the IDs of the queue's delayed and ready jobs, sorted.
func (f *cronFleet) pending() []string {
	q := f.qs[0]
	ctx := context.Background()
	var ids []string
	zs, err := q.p.Client().ZRange(ctx, q.k.delayed, 0, -1).Result()
	require.NoError(f.t, err)
	ls, err := q.p.Client().LRange(ctx, q.k.ready, 0, -1).Result()
	require.NoError(f.t, err)
	for _, e := range append(zs, ls...) {
		if e == wakeMarker {
			continue
		}
		env, err := decodeEnvelope([]byte(e))
		require.NoError(f.t, err)
		ids = append(ids, env.id)
	}
	sort.Strings(ids)
	return ids
}

// take moves the clock to the earliest pending occurrence (if later),
// removes it as a fetch would, and lets the next process take it: it
// returns the occurrence's due time and whether its handler would run
// (marking it done at once unless keepRunning).
func (f *cronFleet) take(keepRunning bool) (time.Time, bool) {
	f.t.Helper()
	q := f.qs[f.turn%len(f.qs)]
	f.turn++
	ctx := context.Background()
	c := q.p.Client()
	var elem string
	for {
		e, err := c.RPop(ctx, q.k.ready).Result()
		if err != nil || e != wakeMarker {
			elem = e
			break
		}
	}
	if elem == "" { // nothing ready: promote the earliest delayed one
		zs, err := c.ZRangeWithScores(ctx, q.k.delayed, 0, 0).Result()
		require.NoError(f.t, err)
		require.Len(f.t, zs, 1, "one occurrence pending")
		elem = zs[0].Member.(string)
		if due := time.UnixMilli(int64(zs[0].Score)); due.After(f.clock.Now()) {
			f.clock.Set(due)
		}
		require.NoError(f.t, c.ZRem(ctx, q.k.delayed, elem).Err())
	}
	env, err := decodeEnvelope([]byte(elem))
	require.NoError(f.t, err)
	name, due, run, _, err := q.cronTake(ctx, env.id, env.enqueuedAt.UnixMilli(), env.deliveries, time.Minute, time.Second)
	require.NoError(f.t, err)
	f.copy[due] = env.enqueuedAt.UnixMilli()
	require.NoError(f.t, c.Del(ctx, q.k.unique(env.id)).Err()) // acked
	if run && !keepRunning {
		require.NoError(f.t, q.cronDone(ctx, name, due, f.copy[due]))
	}
	return due, run
}

func TestCronBadSpecNamesIt(t *testing.T) {
	f := newCronFleet(t, 1, Config{})
	ctx := context.Background()
	for _, spec := range []string{"61 * * * *", "* * *", Every(500 * time.Millisecond), "CRON_TZ=Nowhere/Land * * * * *", "@every fortnight"} {
		err := f.qs[0].Schedule(ctx, "bad", spec, nil)
		require.ErrorIs(t, err, ErrBadSchedule, spec)
		require.Contains(t, err.Error(), spec)
	}
	require.Error(t, f.qs[0].Schedule(ctx, "has space", "* * * * *", nil))
	_, err := f.qs[0].Enqueue(ctx, nil, ID("cron:x:1"))
	require.ErrorContains(t, err, "reserved")
	require.Empty(t, f.pending())
}

func TestCronMaxSchedules(t *testing.T) {
	f := newCronFleet(t, 1, Config{MaxSchedules: 2})
	ctx := context.Background()
	q := f.qs[0]
	require.NoError(t, q.Schedule(ctx, "a", "* * * * *", nil))
	require.NoError(t, q.Schedule(ctx, "b", "* * * * *", nil))
	require.ErrorIs(t, q.Schedule(ctx, "c", "* * * * *", nil), ErrTooManySchedules)
	f.clock.Advance(time.Millisecond) // a later deploy: equal versions tie on the hash
	require.NoError(t, q.Schedule(ctx, "a", "*/2 * * * *", nil), "changing a registered one is no new schedule")
	require.NoError(t, q.Unschedule(ctx, "b"))
	require.NoError(t, q.Schedule(ctx, "c", "* * * * *", nil))
	names, err := q.Schedules(ctx)
	require.NoError(t, err)
	sort.Strings(names)
	require.Equal(t, []string{"a", "c"}, names)
}

// Every process registers the same schedule (again and again): each
// occurrence is pending once and runs once, in order, none missing.
func TestCronTwoProcessesEachOccurrenceOnce(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	for _, q := range f.qs {
		require.NoError(t, q.Schedule(ctx, "tick", Every(time.Minute), []byte("p")))
	}
	want := testutil.T0.Add(time.Minute)
	for i := range 20 {
		require.Equal(t, []string{occurrenceID("tick", want.UnixMilli())}, f.pending(), "occurrence %d", i)
		due, run := f.take(false)
		require.True(t, run)
		require.Equal(t, want.UnixMilli(), due.UnixMilli())
		want = want.Add(time.Minute)
		// A process restarting registers again: nothing doubles.
		require.NoError(t, f.qs[i%2].Schedule(ctx, "tick", Every(time.Minute), []byte("p")))
	}
}

// A newer deploy changes the spec: the occurrence pending under the old
// one is skipped and enqueues nothing; the new spec's run. An older
// deploy registering the old spec again does not win.
func TestCronSpecChangeNewestDeployWins(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	old, cur := f.qs[0], f.qs[1]
	require.NoError(t, old.Schedule(ctx, "job", "*/10 * * * *", nil, Version(1)))
	due, run := f.take(false) // 15:10
	require.True(t, run)
	require.True(t, testutil.T0.Add(10*time.Minute).Equal(due))
	// Pending: 15:20 of the old spec. The new deploy runs every 3 minutes.
	require.NoError(t, cur.Schedule(ctx, "job", "*/3 * * * *", nil, Version(2)))
	require.Len(t, f.pending(), 2)
	require.ErrorIs(t, old.Schedule(ctx, "job", "*/10 * * * *", nil, Version(1)), ErrScheduleSuperseded)
	var ran []time.Time
	for len(ran) < 5 {
		due, run := f.take(false)
		if due.Equal(testutil.T0.Add(20 * time.Minute)) {
			require.False(t, run, "the old spec's occurrence is stale")
			continue
		}
		require.True(t, run)
		ran = append(ran, due)
	}
	base := testutil.T0.Add(12 * time.Minute)
	for i, d := range ran {
		require.True(t, base.Add(time.Duration(3*i)*time.Minute).Equal(d), "%v", ran)
	}
	require.Len(t, f.pending(), 1)
}

func TestCronUnschedule(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	require.NoError(t, f.qs[0].Schedule(ctx, "gone", Every(time.Minute), nil))
	_, run := f.take(false)
	require.True(t, run)
	require.NoError(t, f.qs[1].Unschedule(ctx, "gone"))
	_, run = f.take(false)
	require.False(t, run, "the pending occurrence of a removed schedule is skipped")
	require.Empty(t, f.pending(), "and enqueues no successor")
	names, err := f.qs[0].Schedules(ctx)
	require.NoError(t, err)
	require.Empty(t, names)
}

func TestCronNoOverlap(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	require.NoError(t, f.qs[0].Schedule(ctx, "slow", Every(time.Minute), nil, NoOverlap()))
	first, run := f.take(true) // still running in process 0
	require.True(t, run)
	_, run = f.take(false)
	require.False(t, run, "skipped while the previous run runs, in another process")
	require.Len(t, f.pending(), 1, "the schedule goes on")
	require.NoError(t, f.qs[0].cronDone(ctx, "slow", first, f.copy[first]))
	_, run = f.take(false)
	require.True(t, run)

	// Without NoOverlap, runs overlap.
	require.NoError(t, f.qs[0].Schedule(ctx, "slow", Every(time.Minute), nil))
	for len(f.pending()) > 1 {
		f.take(false)
	}
	_, run = f.take(true)
	require.True(t, run)
	_, run = f.take(true)
	require.True(t, run)
}

// After a downtime of 10 occurrences, MaxCatchUp(n) runs the latest n of
// them, then the schedule resumes on time.
func TestCronMaxCatchUpAfterGap(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		f := newCronFleet(t, 2, Config{})
		ctx := context.Background()
		var opts []ScheduleOption
		if n != 1 {
			opts = append(opts, MaxCatchUp(n)) // 1 is the default
		}
		require.NoError(t, f.qs[0].Schedule(ctx, "c", Every(time.Minute), nil, opts...))
		f.clock.Advance(10*time.Minute + 30*time.Second) // 15:01 .. 15:10 missed
		var ran []time.Time
		for {
			due, run := f.take(false)
			if due.After(f.clock.Now().Add(-time.Second)) && due.Minute() == 11 {
				require.True(t, run)
				break
			}
			if run {
				ran = append(ran, due)
			}
		}
		require.Len(t, ran, n, "MaxCatchUp(%d)", n)
		for i, d := range ran {
			require.True(t, testutil.T0.Add(time.Duration(10-n+1+i)*time.Minute).Equal(d), "MaxCatchUp(%d): %v", n, ran)
		}
	}
}

func TestCronSuccessorArithmetic(t *testing.T) {
	occ := every(time.Minute)
	at := func(m int) time.Time { return testutil.T0.Add(time.Duration(m) * time.Minute) }
	run, next := successor(occ, at(1), at(1).Add(time.Second), 1)
	require.True(t, run)
	require.Equal(t, at(2), next)
	run, next = successor(occ, at(1), at(5).Add(cronLateGrace+time.Second), 1) // 2..5 missed
	require.False(t, run)
	require.Equal(t, at(5), next)
	run, next = successor(occ, at(1), at(5).Add(cronLateGrace+time.Second), 2)
	require.False(t, run)
	require.Equal(t, at(4), next)
	run, next = successor(occ, at(4), at(5).Add(cronLateGrace+time.Second), 2)
	require.True(t, run)
	require.Equal(t, at(5), next)
	run, next = successor(occ, at(1), at(5).Add(cronLateGrace+time.Second), 0)
	require.False(t, run)
	require.Equal(t, at(6), next)
	run, next = successor(occ, at(1), at(5).Add(cronLateGrace+time.Second), 10)
	require.True(t, run)
	require.Equal(t, at(2), next)
	// Every is anchored on the epoch: the same in every process.
	require.Equal(t, time.Date(2026, 1, 2, 15, 0, 30, 0, time.UTC), every(30*time.Second).Next(testutil.T0.Add(time.Millisecond)))
}

// A daily 09:00 in New York is 14:00 UTC in winter and 13:00 UTC after the
// switch to daylight time (2026-03-08); CRON_TZ= and InLocation agree, and
// the default zone is UTC whatever time.Local is.
func TestCronTimeZoneAcrossDST(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	start := time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC)
	want := []time.Time{
		time.Date(2026, 3, 6, 14, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 7, 14, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 8, 13, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 9, 13, 0, 0, 0, time.UTC),
	}
	for _, d := range []scheduleDef{{Spec: "CRON_TZ=America/New_York 0 9 * * *"}, {Spec: "0 0 9 * * *", Zone: ny.String()}} {
		occ, err := d.parse()
		require.NoError(t, err)
		tt := start
		for _, w := range want {
			tt = occ.Next(tt)
			require.True(t, w.Equal(tt), "%s: want %s, got %s", d.Spec, w, tt.UTC())
		}
	}
	occ, err := scheduleDef{Spec: "0 9 * * *"}.parse()
	require.NoError(t, err)
	require.True(t, occ.Next(start).Equal(time.Date(2026, 3, 7, 9, 0, 0, 0, time.UTC)))

	// Through Schedule, with the fleet's clock: the registry holds the NY time.
	f := newCronFleet(t, 1, Config{})
	f.clock.Set(start)
	require.NoError(t, f.qs[0].Schedule(context.Background(), "ny", "0 9 * * *", nil, InLocation(ny)))
	for _, w := range want {
		due, run := f.take(false)
		require.True(t, run)
		require.True(t, w.Equal(due), "want %s, got %s", w, due.UTC())
	}
}

// On real Redis with real workers: two consumers in two "processes" both
// register a schedule every second; each occurrence runs once, none
// missing, and the handler sees the schedule's name and due time.
func TestCronEndToEndTwoConsumers(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	var mu sync.Mutex
	runs := map[int64]int{}
	const n = 4
	enough := make(chan struct{})
	var once sync.Once
	groups := make([]*lifecycle.Group, 2)
	for i := range groups {
		p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
		q := mustQueue(t, p, "cron-e2e", Config{})
		groups[i] = lifecycle.New()
		c := newConsumer(t, q)
		w, err := NewWorker(c, q, func(_ context.Context, j *Job) error {
			if j.Schedule != "tick" || j.Due.IsZero() || string(j.Payload) != "hello" {
				return Permanent(errors.New("not an occurrence of tick"))
			}
			mu.Lock()
			runs[j.Due.UnixMilli()]++
			if len(runs) >= n {
				once.Do(func() { close(enough) })
			}
			mu.Unlock()
			return nil
		}, WorkerConfig{Concurrency: 2, BlockTimeout: time.Second})
		require.NoError(t, err)
		require.NoError(t, w.Start(groups[i]))
		require.NoError(t, q.Schedule(ctx, "tick", Every(time.Second), []byte("hello")))
	}
	recv(t, enough, 30*time.Second, "n occurrences")
	for _, g := range groups {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, g.Close(cctx))
		cancel()
	}
	mu.Lock()
	defer mu.Unlock()
	var dues []int64
	for d, c := range runs {
		require.Equal(t, 1, c, "occurrence %d ran %d times", d, c)
		dues = append(dues, d)
	}
	sort.Slice(dues, func(i, j int) bool { return dues[i] < dues[j] })
	for i := 1; i < len(dues); i++ {
		require.Equal(t, int64(1000), dues[i]-dues[i-1], "no occurrence missing: %v", dues)
	}
}

// An idle worker whose queue has 100 registered schedules (next occurrences
// a year away) sends what it sends with one plain delayed job: the
// scheduler's one re-read per BlockTimeout while the delayed set is not
// empty, nothing per schedule. Both run at once, each on its own server.
func TestCronIdleTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 10s")
	}
	ctx := context.Background()
	run := func(schedules int) *redistest.Redis {
		srv := redistest.Server(t)
		p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
		g := group(t)
		q := mustQueue(t, p, "idle", Config{})
		for i := range schedules {
			require.NoError(t, q.Schedule(ctx, fmt.Sprint("s", i), "0 0 1 1 *", nil))
		}
		startWorker(t, g, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 2, BlockTimeout: time.Second})
		return srv
	}
	srvs := []*redistest.Redis{run(0), run(100)}
	calls := func(srv *redistest.Redis) (total, bzpopmin int64) {
		s, err := srv.CommandStats(ctx)
		require.NoError(t, err)
		return redistest.TotalCalls(s, "info"), s["bzpopmin"]
	}
	var t0, b0 [2]int64
	for i, s := range srvs {
		_, b := calls(s)
		testutil.Eventually(t, 15*time.Second, "a first BZPOPMIN timeout", func() bool { _, x := calls(s); return x >= b+2 })
		t0[i], b0[i] = calls(s)
	}
	testutil.Eventually(t, 30*time.Second, "eight more BZPOPMIN timeouts", func() bool {
		_, a := calls(srvs[0])
		_, b := calls(srvs[1])
		return a >= b0[0]+8 && b >= b0[1]+8
	})
	var per [2]float64
	for i, s := range srvs {
		tot, b := calls(s)
		per[i] = float64(tot-t0[i]) / float64(b-b0[i])
	}
	t.Logf("commands per BZPOPMIN timeout (1s): no schedule %.2f, 100 schedules %.2f", per[0], per[1])
	require.LessOrEqual(t, per[1], per[0]+0.25, "schedules cost nothing while idle: the same as none")
}

// A process dies mid-run: its occurrence is recovered and taken again. It
// runs again (at least once) but enqueues no second successor; and an
// occurrence enqueued again after it completed (a registration racing its
// run) does not run twice.
func TestCronRedeliveryDoesNotDouble(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	require.NoError(t, f.qs[0].Schedule(ctx, "r", Every(time.Minute), nil))
	due, run := f.take(true) // process 0 runs it and dies
	require.True(t, run)
	id := occurrenceID("r", due.UnixMilli())
	next := f.pending()
	require.Len(t, next, 1)

	_, _, run, _, err := f.qs[1].cronTake(ctx, id, f.copy[due], 1, time.Minute, time.Second) // recovered by process 1
	require.NoError(t, err)
	require.True(t, run, "a recovered run runs again")
	require.Equal(t, next, f.pending(), "no second successor")
	require.NoError(t, f.qs[1].cronDone(ctx, "r", due, f.copy[due]))

	_, _, run, _, err = f.qs[0].cronTake(ctx, id, f.copy[due]+1, 0, time.Minute, time.Second) // a stray copy after completion
	require.NoError(t, err)
	require.False(t, run, "a completed occurrence does not run again")
	require.Equal(t, next, f.pending())
}

// A run whose process died is recovered after the heartbeat expires,
// which at a short interval is after its successor was taken: it must
// still run again (it may not have finished), once, without a successor
// of its own.
func TestCronRecoveredAfterItsSuccessorWasTaken(t *testing.T) {
	for _, noOverlap := range []bool{false, true} {
		f := newCronFleet(t, 2, Config{})
		ctx := context.Background()
		var opts []ScheduleOption
		if noOverlap {
			opts = append(opts, NoOverlap())
		}
		require.NoError(t, f.qs[0].Schedule(ctx, "s", Every(time.Second), nil, opts...))
		due1, run := f.take(true) // process 0 runs it and dies
		require.True(t, run)
		due2, run := f.take(false) // the successor, taken by process 1
		require.Equal(t, due1.Add(time.Second), due2)
		require.Equal(t, !noOverlap, run, "NoOverlap skips the successor while the first run holds its marker")
		pending := f.pending()
		require.Len(t, pending, 1)

		id := occurrenceID("s", due1.UnixMilli())
		_, _, run, _, err := f.qs[1].cronTake(ctx, id, f.copy[due1], 1, time.Minute, time.Second) // recovered
		require.NoError(t, err)
		require.True(t, run, "noOverlap=%v: a recovered run runs again", noOverlap)
		require.Equal(t, pending, f.pending(), "no successor of its own")
		require.NoError(t, f.qs[1].cronDone(ctx, "s", due1, f.copy[due1]))

		_, _, run, _, err = f.qs[0].cronTake(ctx, id, f.copy[due1]+1, 0, time.Minute, time.Second)
		require.NoError(t, err)
		require.False(t, run, "a fresh stray copy of a taken occurrence does not run")
	}
}
