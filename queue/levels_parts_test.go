package queue

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// Priority levels (levels.go) beside partitions (parts.go).

// TestPriorityWithPartitionIsAccepted: a partitioned job may have a level
// (it was refused before levels within a partition): Enqueue,
// EnqueueBatch and EnqueueJSON write it to its partition with its level
// in the element (flags "g" and "p<l>"), and a level out of range is
// still refused, writing nothing.
func TestPriorityWithPartitionIsAccepted(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "levelpart", Config{})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), Priority(MaxLevel+1))
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorContains(t, err, "the levels are 0 to")
	keys, err := p.Client().Keys(ctx, "*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "nothing written")

	_, err = q.Enqueue(ctx, []byte("x"), Partition("a"), Priority(2))
	require.NoError(t, err)
	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("y"), []byte("z")}, Partition("a"), Priority(1))
	require.NoError(t, err)
	_, err = EnqueueJSON(ctx, q, map[string]int{"a": 1}, Priority(3), Partition("b"))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("w"), Partition("a"), Priority(0))
	require.NoError(t, err)
	elems, err := p.Client().ZRange(ctx, q.k.fair(), 0, -1).Result()
	require.NoError(t, err)
	got := map[string]string{}
	for _, el := range elems {
		e, err := decodeEnvelope([]byte(el))
		require.NoError(t, err)
		got[string(e.payload)] = fmt.Sprintf("%s@%d", e.part, e.level)
	}
	require.Equal(t, map[string]string{"x": "a@2", "y": "a@1", "z": "a@1", `{"a":1}`: "b@3", "w": "a@0"}, got)
	checkPartCounts(t, q)
}

// TestPriorityEnvelopeBesidePartition: the scripts' readers of the flags
// field, partOf and levelOf, each find their flag when the other is there
// too ("g" and "p<l>" in one flags field).
func TestPriorityEnvelopeBesidePartition(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	read := redis.NewScript(partLua + levelLua + `return {partOf(ARGV[1]) or '', levelOf(ARGV[1])}`)
	for _, e := range []envelope{
		{id: "j1", maxAttempts: 3, part: "tenant-7", level: 2, typ: "t", payload: []byte("x")},
		{id: "j2", maxAttempts: 3, part: "tenant-7", payload: []byte("x")},
		{id: "j3", maxAttempts: 3, level: 3, unique: true, payload: []byte("x")},
		{id: "j4", maxAttempts: 3, payload: []byte("x")},
	} {
		elem := e.encode()
		got, err := decodeEnvelope(elem)
		require.NoError(t, err, "%s", elem)
		require.Equal(t, e.part, got.part)
		require.Equal(t, e.level, got.level)
		res, err := read.Run(ctx, p.Client(), nil, string(elem)).Slice()
		require.NoError(t, err)
		require.Equal(t, []any{e.part, int64(e.level)}, res, "%s", elem)
	}
}

// TestPriorityBesidePartitions: the take serves the level lists first,
// highest first, then the partitions and the ready list in turn; it rings
// again when it leaves jobs of either kind; a paused queue hands out none.
func TestPriorityBesidePartitions(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			q := mustQueue(t, p, "mixed", Config{})
			ctx := context.Background()
			c := p.Client()
			enq := func(payload string, opts ...EnqueueOption) {
				t.Helper()
				_, err := q.Enqueue(ctx, []byte(payload), opts...)
				require.NoError(t, err)
			}
			enq("a1", Partition("a"))
			enq("a2", Partition("a"))
			enq("r1")
			enq("l1", Priority(1))
			enq("b1", Partition("b"))
			enq("l3", Priority(3))
			enq("r2")

			require.NoError(t, q.Pause(ctx))
			require.Empty(t, takeFor(t, q, "c1", 10), "paused")
			require.NoError(t, q.Resume(ctx))

			require.NoError(t, c.Del(ctx, q.k.bell).Err())
			took := takeFor(t, q, "c1", 3)
			require.Equal(t, []string{"l3", "l1"}, took[:2], "the levels first, highest first")
			require.EqualValues(t, 1, c.ZCard(ctx, q.k.bell).Val(), "jobs left: the take rang again")
			rest := append(took[2:], takeFor(t, q, "c1", 10)...)
			require.ElementsMatch(t, []string{"r1", "a1", "b1", "a2", "r2"}, rest)
			require.Less(t, indexOf(rest, "a1"), indexOf(rest, "a2"), "a partition in order")
			require.Less(t, indexOf(rest, "r1"), indexOf(rest, "r2"), "the ready list in order")
			n, err := c.Exists(ctx, append([]string{q.k.ready, q.k.fair()}, q.k.readyLevels()...)...).Result()
			require.NoError(t, err)
			require.Zero(t, n, "all taken")

			// Only level jobs and partitioned jobs wait: the ready list is
			// empty, and the take finds both with its one EXISTS.
			enq("a3", Partition("a"))
			enq("l2", Priority(2))
			require.NoError(t, c.Del(ctx, q.k.bell).Err())
			require.Equal(t, []string{"l2"}, takeFor(t, q, "c1", 1))
			require.EqualValues(t, 1, c.ZCard(ctx, q.k.bell).Val(), "a partitioned job left: rang")
			require.Equal(t, []string{"a3"}, takeFor(t, q, "c1", 10))
		})
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestPriorityTakeCommands counts what a take costs on a server beside the
// queue without levels (TestLoneJobCommands): a lone level job costs LMOVE
// (the empty ready list) + EXISTS + an LMOVE per level list from the
// highest down to its own + one that finds its list empty (the EXISTS
// counts the level lists that hold jobs, not which: no LMOVE after the
// last of them), and a take that finds a level-0 job first while level
// jobs wait puts it back (one LMOVE).
func TestPriorityTakeCommands(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "levelcost", Config{})
	ctx := context.Background()
	c := p.Client()
	require.NoError(t, takeScript.Load(ctx, c).Err())
	for _, tc := range []struct {
		name  string
		enq   []int // the levels enqueued, in order
		n     int
		took  []int
		stats map[string]int64
	}{
		{"lone level job", []int{2}, 10, []int{2}, map[string]int64{"evalsha": 1, "lmove": 4, "exists": 1}}, // ready, L3, L2, empty L2
		{"level job behind a level-0 job", []int{0, 1}, 10, []int{1, 0},
			map[string]int64{"evalsha": 1, "lmove": 8, "exists": 1}}, // ready, put back, L3, L2, L1, empty L1, ready, empty ready
		{"level job, one slot", []int{0, 3}, 1, []int{3},
			map[string]int64{"evalsha": 1, "lmove": 3, "exists": 2, "zadd": 1}}, // ready, put back, L3; the ring's EXISTS and ZADD
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, c.FlushAll(ctx).Err())
			require.NoError(t, takeScript.Load(ctx, c).Err())
			for _, l := range tc.enq {
				_, err := q.Enqueue(ctx, []byte(fmt.Sprint(l)), Priority(l))
				require.NoError(t, err)
			}
			_, err := srv.Do(ctx, "CONFIG", "RESETSTAT")
			require.NoError(t, err)
			took, err := takeScript.EvalSha(ctx, c, q.k.takeKeys(q.k.proc("c")), tc.n).StringSlice()
			require.NoError(t, err)
			st, err := srv.CommandStats(ctx)
			require.NoError(t, err)
			delete(st, "config|resetstat")
			delete(st, "info")
			require.Equal(t, tc.took, levelsOf(t, took))
			require.Equal(t, tc.stats, st)
		})
	}
}

// TestPriorityLimitedTake: the take of a limited queue (limits.go) serves
// the level lists first, highest first, within the queue's concurrency
// limit, and a release rings for jobs that wait in a level list only.
func TestPriorityLimitedTake(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) {
			p := np(t, pool.Config{})
			rdb, ok := p.Client().(*redis.Client)
			require.True(t, ok)
			k := newKeys("t", "limlevels")
			ctx := context.Background()
			bell := func() bool {
				n, err := rdb.ZCard(ctx, k.bell).Result()
				require.NoError(t, err)
				require.NoError(t, rdb.Del(ctx, k.bell).Err())
				return n > 0
			}
			const t0 = 1_767_225_600_000_123
			l := limitTake{t: t, rdb: rdb, k: k, prefix: slotPrefix("c1", "tok"), conc: 2}
			require.NoError(t, rdb.LPush(ctx, k.ready, "a").Err())
			require.NoError(t, rdb.LPush(ctx, k.readyAt(1), "x1").Err())
			require.NoError(t, rdb.LPush(ctx, k.readyAt(3), "x3", "y3").Err())
			_, got := l.take(5, t0)
			require.Equal(t, []string{"x3", "y3"}, got, "the highest level first, up to the limit")
			require.False(t, bell(), "stopped by the limit: no ring")
			require.EqualValues(t, 2, l.release("x3", "y3"))
			require.True(t, bell())
			_, got = l.take(5, t0)
			require.Equal(t, []string{"x1", "a"}, got, "level 1, then level 0")

			require.NoError(t, rdb.Del(ctx, k.limitHeld()).Err())
			l.conc = 1
			require.NoError(t, rdb.LPush(ctx, k.readyAt(2), "p", "q").Err())
			_, got = l.take(5, t0)
			require.Equal(t, []string{"p"}, got)
			require.False(t, bell())
			require.EqualValues(t, 1, l.release("p"))
			require.True(t, bell(), "a freed slot rings for a job waiting at level 2 only")
			require.NoError(t, rdb.Set(ctx, k.paused, "1", 0).Err())
			_, got = l.take(5, t0)
			require.Empty(t, got, "paused")
			require.NoError(t, rdb.Del(ctx, k.paused).Err())
			_, got = l.take(5, t0)
			require.Equal(t, []string{"q"}, got)
		})
	}
}
