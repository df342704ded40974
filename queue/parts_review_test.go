package queue

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// checkPartCounts asserts the partition bookkeeping matches the jobs and
// delayed sets (parts.go): plen holds each partition's jobs there, ptag
// and pidx no partition without jobs, pidx an index for each partition
// with jobs due, none shared or also free, each job scored in its
// partition's range, and psched and phold together exactly the partitions
// with jobs due.
func checkPartCounts(t *testing.T, q *Queue) {
	t.Helper()
	ctx := context.Background()
	c := q.p.Client()
	members, err := c.ZRangeWithScores(ctx, q.k.fair(), 0, -1).Result()
	require.NoError(t, err)
	idx, err := c.HGetAll(ctx, q.k.partIdx()).Result()
	require.NoError(t, err)
	inFair := map[string]bool{}
	n := map[string]int{}
	for _, m := range members {
		e, err := decodeEnvelope([]byte(m.Member.(string)))
		require.NoError(t, err)
		require.NotEmpty(t, e.part, "a job without a partition in pjobs")
		n[e.part]++
		inFair[e.part] = true
		i, ok := idx[e.part]
		if assert.True(t, ok, "partition %q has jobs and no index", e.part) {
			assert.Equal(t, i, fmt.Sprint(int64(m.Score)/(1<<31)), "a job of %q outside its range", e.part)
		}
	}
	delayed, err := c.ZRange(ctx, q.k.delayed, 0, -1).Result()
	require.NoError(t, err)
	for _, m := range delayed {
		if e, err := decodeEnvelope([]byte(m)); err == nil && e.part != "" {
			n[e.part]++
		}
	}
	want := map[string]string{}
	for k, v := range n {
		want[k] = fmt.Sprint(v)
	}
	lens, err := c.HGetAll(ctx, q.k.partLen()).Result()
	require.NoError(t, err)
	assert.Equal(t, want, lens, "plen against the jobs and delayed sets")
	tags, err := c.HGetAll(ctx, q.k.partTag()).Result()
	require.NoError(t, err)
	for f := range tags {
		if f[0] == ' ' {
			continue
		}
		_, ok := n[f]
		assert.True(t, ok, "ptag holds partition %q that has no job", f)
	}
	used := map[string]string{}
	for f, i := range idx {
		if part, ok := strings.CutSuffix(f, " w"); ok {
			_, ok := n[part]
			assert.True(t, ok, "pidx holds the weight of partition %q that has no job", part)
			continue
		}
		if f[0] == ' ' {
			continue
		}
		_, ok := n[f]
		assert.True(t, ok, "pidx holds partition %q that has no job", f)
		assert.NotContains(t, used, i, "index %s of %q and %q", i, f, used[i])
		used[i] = f
	}
	free, err := c.LRange(ctx, q.k.partFree(), 0, -1).Result()
	require.NoError(t, err)
	for _, i := range free {
		assert.NotContains(t, used, i, "index %s free and used", i)
	}
	sched, err := c.ZRange(ctx, q.k.partSched(), 0, -1).Result()
	require.NoError(t, err)
	hold, err := c.ZRange(ctx, q.k.partHold(), 0, -1).Result()
	require.NoError(t, err)
	indexed := map[string]bool{}
	for _, k := range append(sched, hold...) {
		assert.False(t, indexed[k], "partition %q both in psched and phold", k)
		indexed[k] = true
	}
	assert.Equal(t, inFair, indexed, "psched and phold against the partitions with jobs due")
}

// Jobs of one partition that a consumer took and put back (a closing
// worker's put-back, a sweep of a dead consumer) run again in enqueue
// order, as they do from the ready list ("oldest last, so it ends up first
// in line"). They all got the tag of the clock, and jobs of equal score are
// ordered by their bytes, that is by their IDs: random within a
// millisecond, or the caller's with the ID option.
func TestPartitionPutBackKeepsOrder(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionPutBackOrder(t, np) })
	}
}

func testPartitionPutBackOrder(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "putback", Config{})
	ctx := context.Background()
	c := p.Client()
	// Descending IDs: their bytes sort against enqueue order.
	for i := range 6 {
		_, err := q.Enqueue(ctx, fmt.Appendf(nil, "a%d", i), Partition("a"), ID(fmt.Sprintf("z%d", 9-i)))
		require.NoError(t, err)
	}
	payloads := make([][]byte, 20)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, "b%02d", i)
	}
	_, err := q.EnqueueBatch(ctx, payloads, Partition("b"))
	require.NoError(t, err)

	require.Len(t, takeFor(t, q, "gone", 26), 26)
	// What putBack does: the processing list, oldest last.
	elems, err := c.LRange(ctx, q.k.proc("gone"), 0, -1).Result()
	require.NoError(t, err)
	pairs := make([]any, 0, 2*len(elems))
	for _, e := range elems {
		pairs = append(pairs, e, e)
	}
	n, err := recoverScript.Run(ctx, c, q.k.recoverKeys(q.k.proc("gone")), pairs...).Int()
	require.NoError(t, err)
	require.Equal(t, 26, n)
	checkPartCounts(t, q)

	var a, b []string
	for _, pl := range takeFor(t, q, "next", 26) {
		if pl[0] == 'a' {
			a = append(a, pl)
		} else {
			b = append(b, pl)
		}
	}
	assert.Equal(t, []string{"a0", "a1", "a2", "a3", "a4", "a5"}, a, "partition a in enqueue order")
	want := make([]string, 20)
	for i := range want {
		want[i] = string(payloads[i])
	}
	assert.Equal(t, want, b, "partition b in enqueue order")
	checkPartCounts(t, q)
}

// A take that stops at its byte budget in the middle of a partition loses
// no job and leaves the counts exact; the rest are taken next.
func TestPartitionTakeBudgetMidPartition(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "budget", Config{})
	ctx := context.Background()
	big := bytes.Repeat([]byte("x"), inlineMax) // inline: the element holds it
	const jobs = 600                            // 600 x 4 KiB > maxLuaBytes
	for i := 0; i < jobs; i += 100 {
		pls := make([][]byte, 100)
		for j := range pls {
			pls[j] = append(fmt.Appendf(nil, "%03d", i+j), big[:inlineMax-3]...)
		}
		_, err := q.EnqueueBatch(ctx, pls, Partition(fmt.Sprintf("p%d", i/300)))
		require.NoError(t, err)
	}
	first := takeFor(t, q, "c", jobs)
	require.Less(t, len(first), jobs, "the budget stopped the take")
	checkPartCounts(t, q)
	seen := map[string]bool{}
	for _, pl := range first {
		seen[pl[:3]] = true
	}
	for range 10 {
		got := takeFor(t, q, "c", jobs)
		if len(got) == 0 {
			break
		}
		for _, pl := range got {
			require.False(t, seen[pl[:3]], "taken twice")
			seen[pl[:3]] = true
		}
		checkPartCounts(t, q)
	}
	assert.Len(t, seen, jobs)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.Partitions)
	assert.Zero(t, s.Ready)
}

// Partition keys at their edges: 128 bytes of every punctuation byte
// allowed (Lua pattern and glob characters among them), and keys that read
// as numbers or as the names of parttag's own fields without their space.
func TestPartitionKeyEdges(t *testing.T) {
	const punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`~"
	long := strings.Repeat(punct, 5)[:maxPartitionLen]
	require.Contains(t, partLua, fmt.Sprintf("#key <= %d", maxPartitionLen), "partOf knows the longest key")
	keys := []string{long, "clock", "ready", "1", "-1", "1e400", "nan", "%d", ".*", "[a]"}
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "edges", Config{MaxPartitionLen: 3})
	ctx := context.Background()
	c := p.Client()
	for i, k := range keys {
		_, err := q.Enqueue(ctx, fmt.Appendf(nil, "%d", i), Partition(k), ID(fmt.Sprintf("now%d", i)))
		require.NoError(t, err, k)
		_, err = q.Enqueue(ctx, fmt.Appendf(nil, "%d", i), Partition(k), Delay(time.Millisecond))
		require.NoError(t, err, k)
		_, err = q.Enqueue(ctx, []byte("x"), Partition(k))
		require.NoError(t, err, k)
		_, err = q.Enqueue(ctx, []byte("x"), Partition(k))
		require.ErrorIs(t, err, ErrPartitionFull, k)
		info, err := q.Get(ctx, fmt.Sprintf("now%d", i))
		require.NoError(t, err)
		assert.Equal(t, k, info.Partition)
	}
	_, err := promoteScript.Run(ctx, c, q.k.promoteKeys(),
		time.Now().Add(time.Second).UnixMilli(), promoteLimit, "0").Int64Slice()
	require.NoError(t, err)
	checkPartCounts(t, q)
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(len(keys)), s.Partitions)
	assert.Equal(t, int64(3*len(keys)), s.Partitioned)

	require.NoError(t, q.Cancel(ctx, "now0"))
	checkPartCounts(t, q)
	got := takeFor(t, q, "c", 100)
	assert.Len(t, got, 3*len(keys)-1)
	checkPartCounts(t, q)
	s, err = q.Stats(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.Partitions)
	n, err := c.Exists(ctx, q.k.partKeys()...).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "no key of the partitions is left, the clocks' neither")
}

// A delayed job counts in its partition from its enqueue, not once it is
// due: else Delay(time.Millisecond) walked past MaxPartitionLen and
// MaxPartitions (promotion never refuses), and a partition held any number
// of jobs once they came due. A retry counts too (never refused), and a
// delayed job cancelled or deleted gives its place back.
func TestPartitionDelayedJobsCount(t *testing.T) {
	for name, np := range map[string]newPoolFunc{"mini": miniPool, "server": serverPool} {
		t.Run(name, func(t *testing.T) { testPartitionDelayedCount(t, np) })
	}
}

func testPartitionDelayedCount(t *testing.T, np newPoolFunc) {
	p := np(t, pool.Config{})
	q := mustQueue(t, p, "delayedcount", Config{MaxPartitions: 2, MaxPartitionLen: 2})
	ctx := context.Background()
	c := p.Client()
	for i := range 2 {
		_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), Delay(time.Minute), ID(fmt.Sprintf("a%d", i)))
		require.NoError(t, err)
	}
	_, err := q.Enqueue(ctx, []byte("x"), Partition("a"), Delay(time.Minute))
	require.ErrorIs(t, err, ErrPartitionFull, "two delayed jobs fill partition a")
	_, err = q.Enqueue(ctx, []byte("x"), Partition("a"))
	require.ErrorIs(t, err, ErrPartitionFull)
	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("1"), []byte("2")}, Partition("b"), Delay(time.Minute))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("x"), Partition("c"), Delay(time.Minute))
	require.ErrorIs(t, err, ErrTooManyPartitions, "a and b exist while their jobs are delayed")
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), s.Partitions)
	assert.Zero(t, s.Partitioned)

	// Cancel and Delete give the place back.
	require.NoError(t, q.Cancel(ctx, "a0"))
	in, err := NewInspector(p, q.cfg.Namespace)
	require.NoError(t, err)
	page, err := in.Jobs(ctx, "delayedcount", StateDelayed, "", 10)
	require.NoError(t, err)
	for _, j := range page.Jobs {
		if j.ID == "a1" {
			require.NoError(t, in.Delete(ctx, "delayedcount", j.Handle))
		}
	}
	n, err := c.HExists(ctx, q.k.partLen(), "a").Result()
	require.NoError(t, err)
	assert.False(t, n, "partition a is gone with its last delayed job")
	_, err = q.Enqueue(ctx, []byte("x"), Partition("c"), Delay(time.Minute))
	require.NoError(t, err)

	// Promotion moves them without counting them again.
	_, err = promoteScript.Run(ctx, c, q.k.promoteKeys(),
		time.Now().Add(2*time.Minute).UnixMilli(), promoteLimit, "0").Int64Slice()
	require.NoError(t, err)
	checkPartCounts(t, q)
	lens, err := c.HGetAll(ctx, q.k.partLen()).Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"b": "2", "c": "1"}, lens)

	// A retry counts while it waits, and leaves no count once it ran.
	require.Len(t, takeFor(t, q, "w", 10), 3)
	elems, err := c.LRange(ctx, q.k.proc("w"), 0, -1).Result()
	require.NoError(t, err)
	for _, el := range elems {
		e, err := decodeEnvelope([]byte(el))
		if err != nil || e.part != "c" { // a wake marker, or another partition's job
			continue
		}
		e.attempt++
		n, err := retryScript.Run(ctx, c, []string{q.k.proc("w"), q.k.delayed, q.k.ready, q.k.wake, q.k.bell, q.k.partLen()},
			el, e.encode(), time.Now().Add(time.Minute).UnixMilli(), wakeMarker, wakeTTL.Milliseconds(), "0").Int()
		require.NoError(t, err)
		require.Equal(t, 1, n)
	}
	lens, err = c.HGetAll(ctx, q.k.partLen()).Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"c": "1"}, lens, "the retry of c waits")
	_, err = promoteScript.Run(ctx, c, q.k.promoteKeys(),
		time.Now().Add(2*time.Minute).UnixMilli(), promoteLimit, "0").Int64Slice()
	require.NoError(t, err)
	checkPartCounts(t, q)
	require.Len(t, takeFor(t, q, "w", 10), 1)
	s, err = q.Stats(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.Partitions)
	checkPartCounts(t, q)
}

// Neither side starves the other: a backlog of unpartitioned jobs and one
// of a partition alternate, one job each, also when jobs put back (tagged
// below the clock) and new partitions arrive in between.
func TestPartitionAndReadyAlternate(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "alternate", Config{})
	ctx := context.Background()
	pls := func(prefix string, n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = fmt.Appendf(nil, "%s%02d", prefix, i)
		}
		return out
	}
	_, err := q.EnqueueBatch(ctx, pls("r", 50), nil)
	require.NoError(t, err)
	_, err = q.EnqueueBatch(ctx, pls("a", 50), Partition("a"))
	require.NoError(t, err)
	var got []string
	for range 10 {
		got = append(got, takeFor(t, q, "c", 1)...)
	}
	for i := 0; i+1 < len(got); i += 2 {
		assert.NotEqual(t, got[i][0], got[i+1][0], "alternating: %v", got)
	}
	_, err = q.Enqueue(ctx, []byte("b00"), Partition("b"))
	require.NoError(t, err)
	next := takeFor(t, q, "c", 3)
	assert.Contains(t, next, "b00", "a new partition is served within one turn")
	got = nil
	for range 10 {
		got = append(got, takeFor(t, q, "c", 1)...)
	}
	for i := 0; i+1 < len(got); i += 2 {
		assert.NotEqual(t, got[i][0], got[i+1][0], "alternating: %v", got)
	}
	checkPartCounts(t, q)
}

// An element that only looks partitioned (flag "g" with a key that is no
// valid partition: one with a space, such as parttag's own " clock", or
// empty) is no partition's: put back, it goes to the ready list, where a
// worker dead-letters it as malformed. Routed as a partition, its take
// deleted the queue's clock field with the partition it named.
func TestPartitionMalformedKeyIsNoPartition(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "malformed", Config{})
	ctx := context.Background()
	c := p.Client()
	_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("1"), []byte("2")}, Partition("a"))
	require.NoError(t, err)
	require.Len(t, takeFor(t, q, "c", 1), 1) // the clock moves
	// A delayed job keeps partition a, and so the clocks, once its due
	// jobs are taken (with no partition left, ptag goes).
	_, err = q.Enqueue(ctx, []byte("later"), Partition("a"), Delay(time.Hour))
	require.NoError(t, err)
	require.NoError(t, c.LRem(ctx, q.k.ready, 0, wakeMarker).Err()) // its wake marker: no job
	clock, err := c.HGet(ctx, q.k.partTag(), partClockField).Float64()
	require.NoError(t, err)

	bad := []string{"bq1|x1|0|1|0|1|0|g|" + partClockField + "|p", "bq1|x2|0|1|0|1|0|g||p", "bq1|x3|0|1|0|1|0|g|a{b}|p"}
	pairs := []any{}
	for _, b := range bad {
		require.NoError(t, c.LPush(ctx, q.k.proc("gone"), b).Err())
		pairs = append(pairs, b, b)
	}
	n, err := recoverScript.Run(ctx, c, q.k.recoverKeys(q.k.proc("gone")), pairs...).Int()
	require.NoError(t, err)
	require.Equal(t, 3, n)
	l, err := c.LLen(ctx, q.k.ready).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(3), l, "on the ready list, not in a partition")
	checkPartCounts(t, q)
	elems, err := takeScript.Run(ctx, c, q.k.takeKeys(q.k.proc("c")), 10).StringSlice()
	require.NoError(t, err)
	assert.Len(t, elems, 4)
	now, err := c.HGet(ctx, q.k.partTag(), partClockField).Float64()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, now, clock, "the clock field stays")
	checkPartCounts(t, q)
}
