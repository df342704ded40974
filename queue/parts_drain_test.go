package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/pool"
)

// fillDrainOrder gives q the same mix of jobs each time: partitions of
// weights 3, 2 and 1 with backlogs, one with a single job, and
// unpartitioned jobs between them, each payload unique.
func fillDrainOrder(t *testing.T, q *Queue) {
	t.Helper()
	ctx := context.Background()
	batch := func(prefix string, n int, opts ...EnqueueOption) {
		t.Helper()
		ps := make([][]byte, n)
		for i := range ps {
			ps[i] = fmt.Appendf(nil, "%s%d", prefix, i)
		}
		_, err := q.EnqueueBatch(ctx, ps, opts...)
		require.NoError(t, err)
	}
	batch("a", 40, Partition("a"), PartitionWeight(3))
	batch("plain", 5)
	batch("b", 25, Partition("b"))
	batch("c", 1, Partition("c"))
	batch("d", 12, Partition("d"), PartitionWeight(2))
	batch("plain-late", 10)
	for i := range 30 {
		batch(fmt.Sprint("e", i, "-"), 2, Partition(fmt.Sprint("e", i)))
	}
}

// TestPartitionTakeBatchedAsOneByOne: a take of many jobs gives the same
// jobs in the same order as takes of one job each, with weights (a
// partition served several times in one take reads its jobs ahead),
// unpartitioned jobs taking their turn, partitions running dry and a
// window of psched smaller than the partitions; with and without a
// per-partition concurrency limit (nothing released: a partition stops at
// its limit in both). The counts and sets stay exact between takes.
func TestPartitionTakeBatchedAsOneByOne(t *testing.T) {
	for _, srv := range scriptServers() {
		for _, pconc := range []int{0, 3} {
			t.Run(fmt.Sprint(srv.name, "/pconc=", pconc), func(t *testing.T) {
				addr := srv.addr(t)
				rdb := redis.NewClient(&redis.Options{Addr: addr})
				t.Cleanup(func() { _ = rdb.Close() })
				p := mustPool(t, pool.Config{Addrs: []string{addr}})
				one := mustQueue(t, p, "one", Config{MaxPartitions: 100})
				many := mustQueue(t, p, "many", Config{MaxPartitions: 100})
				fillDrainOrder(t, one)
				fillDrainOrder(t, many)
				take := func(q *Queue, n int) []string {
					t.Helper()
					var elems []string
					if pconc == 0 {
						var err error
						elems, err = takeScript.Run(context.Background(), rdb, q.k.takeKeys(q.k.proc("c1")), n).StringSlice()
						require.NoError(t, err)
					} else {
						_, elems = limitTake{t: t, rdb: rdb, k: q.k, prefix: slotPrefix("c1", "tok"), pconc: pconc}.take(n, 0)
					}
					var out []string
					for _, el := range elems {
						if el == wakeMarker {
							continue
						}
						e, err := decodeEnvelope([]byte(el))
						require.NoError(t, err)
						out = append(out, string(e.payload))
					}
					return out
				}
				var want, got []string
				for {
					j := take(one, 1)
					if len(j) == 0 {
						break
					}
					want = append(want, j...)
				}
				if pconc == 0 {
					require.Len(t, want, 40+5+25+1+12+10+60, "every job, once")
				}
				for i := 0; ; i++ {
					j := take(many, []int{7, 64, 3, 20, 1, 33}[i%6])
					if len(j) == 0 {
						break
					}
					got = append(got, j...)
					checkPartCounts(t, many)
				}
				require.Equal(t, want, got)
			})
		}
	}
}

// TestPartitionTakeWidensKeys: a take over more partitions than its
// window turns psched into a skiplist and pidx, plen and ptag into
// hashtables (partWide in partTakeLua: Redis's listpack scans were a
// third of a take), flags pidx, and leaves no trace of the wide member; a
// take over a few partitions changes nothing. Once the last partition
// goes, every key goes with it, flag included.
func TestPartitionTakeWidensKeys(t *testing.T) {
	ctx := context.Background()
	addr := redistest.Server(t).Addr()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	q := mustQueue(t, mustPool(t, pool.Config{Addrs: []string{addr}}), "wide", Config{})
	encodings := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		for name, key := range map[string]string{"psched": q.k.partSched(), "pidx": q.k.partIdx(), "plen": q.k.partLen(), "ptag": q.k.partTag()} {
			enc, err := rdb.ObjectEncoding(ctx, key).Result()
			require.NoError(t, err, name)
			out[name] = enc
		}
		return out
	}
	noTrace := func() {
		t.Helper()
		_, err := rdb.ZScore(ctx, q.k.partSched(), partWideMember()).Result()
		require.ErrorIs(t, err, redis.Nil, "the wide member left psched")
		for _, key := range []string{q.k.partIdx(), q.k.partLen(), q.k.partTag()} {
			ok, err := rdb.HExists(ctx, key, partWideMember()).Result()
			require.NoError(t, err)
			require.False(t, ok, "the wide field left %s", key)
		}
		checkPartCounts(t, q)
	}
	for i := range 3 {
		_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("x"), []byte("y")}, Partition(fmt.Sprint("few", i)))
		require.NoError(t, err)
	}
	require.Len(t, takeFor(t, q, "c1", 5), 5)
	require.Equal(t, map[string]string{"psched": "listpack", "pidx": "listpack", "plen": "listpack", "ptag": "listpack"}, encodings(),
		"3 partitions fit the take's window: nothing to widen")
	noTrace()
	for i := range 40 {
		_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("x"), []byte("y"), []byte("z")}, Partition(fmt.Sprint("p", i)))
		require.NoError(t, err)
	}
	require.Len(t, takeFor(t, q, "c1", 10), 10)
	require.Equal(t, map[string]string{"psched": "skiplist", "pidx": "hashtable", "plen": "hashtable", "ptag": "hashtable"}, encodings())
	flag, err := rdb.HGet(ctx, q.k.partIdx(), partWideField).Result()
	require.NoError(t, err)
	require.Equal(t, "1", flag)
	noTrace()
	for {
		if len(takeFor(t, q, "c1", 16)) == 0 {
			break
		}
		noTrace()
	}
	n, err := rdb.Exists(ctx, q.k.partSched(), q.k.partIdx(), q.k.partLen(), q.k.fair(), q.k.partFree()).Result()
	require.NoError(t, err)
	require.Zero(t, n, "no partition left: the keys went, and the flag with pidx")
}

// partWideMember is partTakeLua's partWide.
func partWideMember() string { return " wide" + strings.Repeat(".", 64) }
