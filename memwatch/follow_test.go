package memwatch

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/lifecycle"
)

// lockedLimit is fakeLimit for a task's goroutine.
type lockedLimit struct {
	mu sync.Mutex
	fakeLimit
}

func (l *lockedLimit) set(v int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fakeLimit.set(v)
}

func (l *lockedLimit) get() (cur int64, sets []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur, append([]int64(nil), l.sets...)
}

// Issue 14: a container's limit changed in place (docker update, a
// Kubernetes in-place resize) is followed by a task the group owns.
func TestFollowMemoryLimitFollowsInPlaceChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := tree(t, map[string]string{
			"proc/self/mountinfo":      v2Mounts,
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "1000000000\n",
		})
		resize := func(v string) {
			require.NoError(t, os.WriteFile(filepath.Join(root, "sys/fs/cgroup/memory.max"), []byte(v), 0o644))
		}
		lim := &lockedLimit{fakeLimit: fakeLimit{cur: math.MaxInt64}}
		var mu sync.Mutex
		var changes []LimitResult
		g := lifecycle.New()
		res, err := followMemoryLimit(g, LimitConfig{
			Fraction: 0.5,
			Interval: time.Minute,
			OnChange: func(r LimitResult) { mu.Lock(); changes = append(changes, r); mu.Unlock() },
		}, limitEnv{root: root, getenv: func(string) string { return "" }, set: lim.set})
		require.NoError(t, err)
		require.Equal(t, LimitSet, res.Action)
		require.Equal(t, int64(500000000), res.Limit)
		tasks := g.Tasks()
		require.Len(t, tasks, 1)
		require.Equal(t, LimitTaskName, tasks[0].Name)
		require.Equal(t, time.Minute, tasks[0].Interval)

		// A reading that finds nothing new changes nothing.
		time.Sleep(time.Minute + time.Millisecond)
		synctest.Wait()
		_, sets := lim.get()
		require.Equal(t, []int64{500000000}, sets)

		resize("3000000000\n")
		time.Sleep(time.Minute)
		synctest.Wait()
		cur, _ := lim.get()
		require.Equal(t, int64(1500000000), cur, "followed the resize")

		resize("garbage\n") // a failed reading changes nothing
		time.Sleep(time.Minute)
		synctest.Wait()
		cur, _ = lim.get()
		require.Equal(t, int64(1500000000), cur)

		resize("max\n") // the limit went away: back to what the process had
		time.Sleep(time.Minute)
		synctest.Wait()
		cur, _ = lim.get()
		require.Equal(t, int64(math.MaxInt64), cur)

		resize("800000000\n")
		time.Sleep(time.Minute)
		synctest.Wait()
		cur, sets = lim.get()
		require.Equal(t, int64(400000000), cur)
		require.Equal(t, []int64{500000000, 1500000000, math.MaxInt64, 400000000}, sets)

		mu.Lock()
		require.Len(t, changes, 3)
		require.Equal(t, "memory limit restored to none: no cgroup memory limit any more (was 1.4 GiB)", changes[1].String())
		mu.Unlock()

		require.NoError(t, g.Close(context.Background()))
		resize("100\n")
		time.Sleep(time.Hour)
		_, after := lim.get()
		require.Equal(t, sets, after, "nothing is read after Close")
	})
}

func TestFollowMemoryLimitStartsNothingItShouldNot(t *testing.T) {
	root := tree(t, map[string]string{
		"proc/self/mountinfo":      v2Mounts,
		"sys/fs/cgroup/memory.max": "1000\n",
	})
	noEnv := func(string) string { return "" }

	// GOMEMLIMIT wins: nothing set, no task.
	lim := &lockedLimit{fakeLimit: fakeLimit{cur: 7}}
	g := lifecycle.New()
	res, err := followMemoryLimit(g, LimitConfig{Fraction: 0.9},
		limitEnv{root: root, getenv: func(string) string { return "1GiB" }, set: lim.set})
	require.NoError(t, err)
	require.Equal(t, LimitKeptEnv, res.Action)
	require.Empty(t, g.Tasks())

	// A first reading that fails: an error, nothing set, no task.
	broken := tree(t, map[string]string{"proc/self/mountinfo": v2Mounts, "sys/fs/cgroup/memory.max": "?"})
	_, err = followMemoryLimit(g, LimitConfig{Fraction: 0.9}, limitEnv{root: broken, getenv: noEnv, set: lim.set})
	require.ErrorContains(t, err, "cannot parse memory limit")
	require.Empty(t, g.Tasks())

	for _, tc := range []struct {
		cfg LimitConfig
		err string
	}{
		{LimitConfig{}, "memwatch: invalid config: LimitConfig.Fraction must be in (0, 1], got 0"},
		{LimitConfig{Fraction: math.NaN()}, "LimitConfig.Fraction"},
		{LimitConfig{Fraction: 0.9, Interval: -time.Second}, "memwatch: invalid config: LimitConfig.Interval must not be negative, got -1s"},
	} {
		_, err := followMemoryLimit(g, tc.cfg, limitEnv{root: root, getenv: noEnv, set: lim.set})
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.ErrorContains(t, err, tc.err)
	}
	_, err = FollowMemoryLimit(nil, LimitConfig{Fraction: 0.9})
	require.ErrorContains(t, err, "nil lifecycle group")

	// A closed group: an error matching lifecycle.ErrClosed, nothing set.
	require.NoError(t, g.Close(context.Background()))
	_, err = followMemoryLimit(g, LimitConfig{Fraction: 0.9}, limitEnv{root: root, getenv: noEnv, set: lim.set})
	require.ErrorIs(t, err, lifecycle.ErrClosed)
	_, sets := lim.get()
	require.Empty(t, sets)
}
