package cache

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// clusterSuite is the Redis-semantics tests of server_test.go, to run on a
// cluster too.
var clusterSuite = []struct {
	name string
	test func(t *testing.T, b backend, name string)
}{
	{"InvalidationAcrossInstances", testInvalidationAcrossInstances},
	{"SubscriberFlushesOnResubscribe", testSubscriberFlushesOnResubscribe},
	{"CrossInstanceStampede", testCrossInstanceStampede},
	{"LockHolderDies", testLockHolderDies},
	{"TTLToTheMillisecond", testTTLToTheMillisecond},
	{"SubscriberReplacesASilentConnection", testSubscriberReplacesASilentConnection},
	{"Tags", testTags},
	{"TagMaxMembers", testTagMaxMembers},
	{"InvalidateTagRacesSet", testInvalidateTagRacesSet},
	{"TrackRawWrites", testTrackRawWrites},
	{"Bulk", testBulk},
	{"RefreshAhead", func(t *testing.T, b backend, name string) { testRefreshAheadFleet(t, b, name, 1500*time.Millisecond) }},
}

// TestCluster runs the cache's Redis-semantics tests on one real 3-master
// Redis Cluster (starting one takes about two seconds), emptied before each
// subtest. Each test runs once per master, on a cache whose hash tag lands
// there, so its subscriber listens on that master and its keys, scripts
// and invalidations go there. Then caches on every master at once, and
// last a restart of one master.
func TestCluster(t *testing.T) {
	c := redistest.ClusterWith(t, redistest.ClusterOptions{AppendOnly: true})
	b := backend{cfg: pool.Config{Addrs: c.Addrs(), ClusterMode: true}, nodes: c.Nodes()}
	ctx := context.Background()
	for _, s := range clusterSuite {
		for i, name := range cachesOnEveryMaster(c, s.name) {
			t.Run(fmt.Sprintf("%s/master%d", s.name, i), func(t *testing.T) {
				require.NoError(t, c.Flush(ctx))
				s.test(t, b, name)
			})
		}
	}
	t.Run("CachesOnEveryMaster", func(t *testing.T) {
		require.NoError(t, c.Flush(ctx))
		testCachesOnEveryMaster(t, c, b)
	})
	// A restarted master answers CLUSTERDOWN for its first two seconds
	// (Redis's CLUSTER_WRITABLE_DELAY), so calls find it again about 2s
	// after it is back, its subscribers sooner: SUBSCRIBE is let through.
	t.Run("RestartMidRun", func(t *testing.T) {
		require.NoError(t, c.Flush(ctx))
		name := cachesOnEveryMaster(c, "restart")[0]
		m, err := c.MasterOf(ctx, redisKeyOf(name, ""))
		require.NoError(t, err)
		testRedisRestartMidRun(t, b, name, m)
	})
}

// cachesOnEveryMaster returns cache names based on base, one per master,
// whose hash tags land on that master.
func cachesOnEveryMaster(c *redistest.RedisCluster, base string) []string {
	return c.OnEveryMaster(func(i int) string { return fmt.Sprint(base, i) }, func(n string) string { return redisKeyOf(n, "") })
}

// redisKeyOf is the Redis key of key in the cache named name.
func redisKeyOf(name, key string) string { return "{c:" + name + "}:k:" + key }

// testCachesOnEveryMaster runs one cache per master in two instances (two
// pools, as two processes would have). Each cache's traffic, invalidations
// included, goes to its own master and to no other one, and each
// subscriber listens there (and hears what is published on another node);
// then loads stampede on every cache at once from both instances, one
// loader call per cache. Nothing logs a warning (CROSSSLOT or any other).
func testCachesOnEveryMaster(t *testing.T, c *redistest.RedisCluster, b backend) {
	ctx := context.Background()
	names := cachesOnEveryMaster(c, "spread")
	logs := &lockedBuffer{}
	pa, pb := b.newPool(t), b.newPool(t)
	caches := make([]cachePair, len(names))
	for i, name := range names {
		cfg := Config[item]{NegativeTTL: time.Minute, Logger: warnLogger(logs)}
		m, err := c.MasterOf(ctx, redisKeyOf(name, "x"))
		require.NoError(t, err)
		caches[i] = cachePair{name: name, a: newCache(t, pa, name, cfg), b: newCache(t, pb, name, cfg), master: m}
		started(t, caches[i].a)
		started(t, caches[i].b)
	}
	testutil.Eventually(t, testutil.Wait, "every subscriber to listen", func() bool {
		for _, ci := range caches {
			if !ci.a.Stats().Subscribed || !ci.b.Stats().Subscribed {
				return false
			}
		}
		return true
	})
	for i, ci := range caches {
		subs := b.subscribers(t, names[i])
		require.Len(t, subs, 2)
		for _, s := range subs {
			require.Equal(t, ci.master.Addr(), s.node.Addr(), "%s's subscribers listen on its master", names[i])
		}
	}

	for _, ci := range caches {
		ci.checkTrafficOnItsMaster(t, c)
	}
	stampedeEveryCache(t, caches)
	require.Empty(t, string(logs.Bytes()), "no warning, CROSSSLOT or other")
}

// cachePair is one cache in two instances, and the master of its slot.
type cachePair struct {
	name   string
	a, b   *Cache[item]
	master *redistest.Redis
}

// checkTrafficOnItsMaster sets, deletes and loads through both instances:
// B hears of A's writes, the traffic goes to the cache's master and to no
// other node, and an invalidation published on another node reaches B all
// the same.
func (ci cachePair) checkTrafficOnItsMaster(t *testing.T, c *redistest.RedisCluster) {
	ctx := context.Background()
	before := nodeTraffic(t, c)
	require.NoError(t, ci.a.Set(ctx, "k", item{ID: 1}, time.Minute))
	testutil.Eventually(t, testutil.Wait, "B to hear of the Set", func() bool { return ci.b.Stats().InvalidationsReceived == 1 })
	v, err := ci.b.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 1, v.ID)
	require.NoError(t, ci.a.Set(ctx, "k", item{ID: 2}, time.Minute))
	testutil.Eventually(t, testutil.Wait, "B to drop its copy", func() bool { return ci.b.Stats().InvalidationsReceived == 2 })
	v, err = ci.b.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 2, v.ID)

	for _, k := range []string{"d1", "d2", "d3"} {
		require.NoError(t, ci.b.Set(ctx, k, item{}, time.Minute))
	}
	require.NoError(t, ci.a.Delete(ctx, "k", "d1", "d2", "d3"))
	testutil.Eventually(t, testutil.Wait, "B to hear of the Delete", func() bool { return ci.b.Stats().InvalidationsReceived == 3 })
	_, err = ci.b.Get(ctx, "d2")
	require.ErrorIs(t, err, ErrNotFound)

	var calls atomic.Int32
	missing := func(context.Context) (item, error) {
		calls.Add(1)
		return item{}, ErrNotFound
	}
	_, err = ci.a.GetOrLoad(ctx, "gone", missing)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = ci.b.GetOrLoad(ctx, "gone", missing)
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, int32(1), calls.Load(), "B found A's negative entry")

	after := nodeTraffic(t, c)
	for addr, n := range after {
		if addr == ci.master.Addr() {
			require.Greater(t, n["publish"], before[addr]["publish"], "%s: invalidations go to its master", ci.name)
			require.Greater(t, n["evalsha"]+n["eval"], before[addr]["evalsha"]+before[addr]["eval"], ci.name)
			continue
		}
		require.Equal(t, before[addr], n, "%s (on %s) sent nothing to %s", ci.name, ci.master.Addr(), addr)
	}

	// An invalidation published on another node (as an instance whose
	// client has not yet seen a failover would) reaches the
	// subscribers all the same: the cluster forwards it.
	_, err = ci.b.Get(ctx, "gone")
	require.ErrorIs(t, err, ErrNotFound)
	held, recv := ci.b.Stats().LocalEntries, ci.b.Stats().InvalidationsReceived
	require.Positive(t, held)
	for _, n := range c.Nodes() {
		if n.Addr() != ci.master.Addr() {
			_, err := n.Do(ctx, "PUBLISH", ci.b.Channel(), keyMessages(1, opKeys, []string{"gone"})[0])
			require.NoError(t, err)
			break
		}
	}
	testutil.Eventually(t, testutil.Wait, "B to hear of it", func() bool { return ci.b.Stats().InvalidationsReceived == recv+1 })
	require.Equal(t, held-1, ci.b.Stats().LocalEntries)
}

// stampedeEveryCache loads one cold key on every cache at once, from both
// instances: one loader call per cache.
func stampedeEveryCache(t *testing.T, caches []cachePair) {
	ctx := context.Background()
	const callers = 50
	calls := make([]atomic.Int32, len(caches))
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i, ci := range caches {
		load := func(ctx context.Context) (item, error) {
			calls[i].Add(1)
			// Until the other instance waits for the lock.
			for ci.a.Stats().LockWaits+ci.b.Stats().LockWaits == 0 && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			return item{ID: 100 + i}, nil
		}
		for _, inst := range []*Cache[item]{ci.a, ci.b} {
			for range callers {
				wg.Go(func() {
					if v, err := inst.GetOrLoad(ctx, "cold", load); err != nil || v.ID != 100+i {
						bad.Add(1)
					}
				})
			}
		}
	}
	wg.Wait()
	require.Zero(t, bad.Load())
	for i := range calls {
		require.Equal(t, int32(1), calls[i].Load(), caches[i].name)
	}
}

// nodeTraffic returns the commands each node has processed, by address,
// without what is not a cache's traffic: the client's topology and command
// table lookups, connection setup, and the test's own INFO and CLIENT LIST.
func nodeTraffic(t *testing.T, c *redistest.RedisCluster) map[string]map[string]int64 {
	t.Helper()
	out := map[string]map[string]int64{}
	for _, n := range c.Nodes() {
		st, err := n.CommandStats(context.Background())
		require.NoError(t, err)
		for name := range st {
			if name == "info" || name == "hello" || name == "command" ||
				strings.HasPrefix(name, "cluster|") || strings.HasPrefix(name, "command|") || strings.HasPrefix(name, "client|") {
				delete(st, name)
			}
		}
		out[n.Addr()] = st
	}
	return out
}
