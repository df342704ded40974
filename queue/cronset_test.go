package queue

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

func sortedSchedules(t *testing.T, q *Queue) []string {
	t.Helper()
	names, err := q.Schedules(context.Background())
	require.NoError(t, err)
	sort.Strings(names)
	return names
}

func TestSetSchedulesNewestDeployWins(t *testing.T) {
	f := newCronFleet(t, 2, Config{})
	ctx := context.Background()
	old, next := f.qs[0], f.qs[1]
	v1 := []ScheduleSpec{{Name: "a", Spec: Every(time.Minute)}, {Name: "b", Spec: "0 * * * *"}}
	require.NoError(t, old.SetSchedules(ctx, 1, v1...))
	require.NoError(t, old.SetSchedules(ctx, 1, v1...), "every process of a deploy registers the same set")
	require.Equal(t, []string{"a", "b"}, sortedSchedules(t, old))
	require.NoError(t, old.p.Client().Set(ctx, old.k.cronRun("a"), "x", 0).Err())

	// The next deploy drops a and adds c.
	require.NoError(t, next.SetSchedules(ctx, 2,
		ScheduleSpec{Name: "b", Spec: "0 * * * *"}, ScheduleSpec{Name: "c", Spec: Every(time.Hour), Payload: []byte("p")}))
	require.Equal(t, []string{"b", "c"}, sortedSchedules(t, old))
	n, err := old.p.Client().Exists(ctx, old.k.cronRun("a")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "a removed schedule's running marker goes with it")

	// An old process restarting during the rolling deploy changes nothing.
	err = old.SetSchedules(ctx, 1, v1...)
	require.ErrorIs(t, err, ErrScheduleSuperseded)
	require.Equal(t, []string{"b", "c"}, sortedSchedules(t, old))

	// The pending occurrence of the removed schedule is skipped when it comes.
	for range 3 {
		due, run := f.take(false)
		if run {
			continue
		}
		require.False(t, due.IsZero())
		for _, id := range f.pending() {
			require.NotContains(t, id, cronPrefix+"a:", "no successor of a removed schedule")
		}
		return
	}
	t.Fatal("the removed schedule's pending occurrence never came up as skipped")
}

func TestSetSchedulesKeepsNewerSchedules(t *testing.T) {
	f := newCronFleet(t, 1, Config{})
	ctx := context.Background()
	q := f.qs[0]
	require.NoError(t, q.Schedule(ctx, "hand", Every(time.Minute), nil, Version(50)))
	require.NoError(t, q.Schedule(ctx, "older", Every(time.Minute), nil, Version(5)))
	require.NoError(t, q.SetSchedules(ctx, 10, ScheduleSpec{Name: "set", Spec: Every(time.Minute)}))
	require.Equal(t, []string{"hand", "set"}, sortedSchedules(t, q), "a schedule with a higher version stays; a lower one goes")
	require.NoError(t, q.SetSchedules(ctx, 11), "an empty set removes every older schedule")
	require.Equal(t, []string{"hand"}, sortedSchedules(t, q))
}

func TestSetSchedulesChecksTheWholeSetFirst(t *testing.T) {
	f := newCronFleet(t, 1, Config{MaxSchedules: 2})
	ctx := context.Background()
	q := f.qs[0]
	require.NoError(t, q.SetSchedules(ctx, 1, ScheduleSpec{Name: "keep", Spec: Every(time.Minute)}))
	for name, c := range map[string]struct {
		version int64
		set     []ScheduleSpec
		want    string
	}{
		"zero version": {0, nil, "version must be positive"},
		"negative":     {-3, nil, "version must be positive"},
		"twice":        {2, []ScheduleSpec{{Name: "x", Spec: "@hourly"}, {Name: "x", Spec: "@daily"}}, "in the set twice"},
		"bad spec":     {2, []ScheduleSpec{{Name: "x", Spec: "@hourly"}, {Name: "y", Spec: "61 * * * *"}}, "bad schedule"},
		"bad name":     {2, []ScheduleSpec{{Name: "", Spec: "@hourly"}}, "schedule name"},
		"too many":     {2, []ScheduleSpec{{Name: "x", Spec: "@hourly"}, {Name: "y", Spec: "@hourly"}, {Name: "z", Spec: "@hourly"}}, "too many schedules"},
		"bad option":   {2, []ScheduleSpec{{Name: "x", Spec: "@hourly", Options: []ScheduleOption{MaxCatchUp(-1)}}}, "MaxCatchUp"},
	} {
		err := q.SetSchedules(ctx, c.version, c.set...)
		require.ErrorContains(t, err, c.want, name)
		require.Equal(t, []string{"keep"}, sortedSchedules(t, q), "%s: nothing changed", name)
	}
}

// SetSchedules' scripts and deletes stay in the queue's slot: the same
// removal on a real server and a cluster.
func TestSetSchedulesOnRealServers(t *testing.T) {
	for name, np := range map[string]func(t *testing.T) newPoolFunc{
		"server":  func(*testing.T) newPoolFunc { return serverPool },
		"cluster": func(t *testing.T) newPoolFunc { return clusterPools(redistest.Cluster(t)) },
	} {
		t.Run(name, func(t *testing.T) {
			p := np(t)(t, pool.Config{})
			q := mustQueue(t, p, "cronset", Config{})
			ctx := context.Background()
			require.NoError(t, q.SetSchedules(ctx, 1, ScheduleSpec{Name: "a", Spec: "@hourly"}, ScheduleSpec{Name: "b", Spec: Every(time.Minute)}))
			require.NoError(t, p.Client().Set(ctx, q.k.cronRun("a"), "x", 0).Err())
			require.NoError(t, q.SetSchedules(ctx, 2, ScheduleSpec{Name: "b", Spec: Every(time.Minute)}))
			require.Equal(t, []string{"b"}, sortedSchedules(t, q))
			require.ErrorIs(t, q.SetSchedules(ctx, 1), ErrScheduleSuperseded)
			require.Zero(t, p.Client().Exists(ctx, q.k.cronRun("a")).Val())
		})
	}
}
