package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// TestCluster runs the pool on a real 3-master Redis Cluster, one cluster
// for all subtests.
func TestCluster(t *testing.T) {
	c := redistest.Cluster(t)
	ctx := context.Background()
	// Keys with hash tags owned by each of the three masters.
	tags := c.OnEveryMaster(func(i int) string { return fmt.Sprint("t", i) }, func(n string) string { return "{" + n + "}" })
	key := func(i int, rest string) string { return "{" + tags[i%len(tags)] + "}:" + rest }
	clusterPool := func(t *testing.T, cfg Config) *Pool {
		require.NoError(t, c.Flush(ctx))
		cfg.Addrs, cfg.ClusterMode = c.Addrs(), true
		p := newPool(t, cfg)
		require.True(t, p.IsCluster())
		return p
	}
	// connsPerNode counts, on each node, the connections whose name starts
	// with prefix.
	connsPerNode := func(t *testing.T, prefix string) map[string]int {
		out := map[string]int{}
		for _, n := range c.Nodes() {
			clients, err := n.Clients(ctx)
			require.NoError(t, err)
			for _, l := range clients {
				if strings.Contains(l, " name="+prefix) {
					out[n.Addr()]++
				}
			}
		}
		return out
	}

	t.Run("LanesAreBoundedPerNode", func(t *testing.T) {
		p := clusterPool(t, Config{Request: LaneConfig{Size: 3}})
		for i := range 3 {
			require.NoError(t, p.Client().Set(ctx, key(i, "k"), "v", 0).Err())
		}
		var maxInUse atomic.Int64
		var wg sync.WaitGroup
		for g := range 12 {
			wg.Go(func() {
				for j := range 60 {
					v, err := p.Client().Get(ctx, key(g+j, "k")).Result()
					if err != nil || v != "v" {
						t.Errorf("GET: %q %v", v, err)
						return
					}
					if n := int64(p.Stats().Request.InUse); n > maxInUse.Load() {
						maxInUse.Store(n)
					}
				}
			})
		}
		wg.Wait()
		s := p.Stats()
		require.LessOrEqual(t, maxInUse.Load(), int64(3), "the gate bounds the lane across nodes")
		require.Positive(t, s.Request.Dials, "dials on every node are counted")
		require.Zero(t, s.Request.DialErrors)
		require.Positive(t, s.Request.Open)
		require.LessOrEqual(t, s.Request.Open, 3*len(tags), "at most Size sockets per node")
		for addr, n := range connsPerNode(t, "bounded-request") {
			require.LessOrEqual(t, n, 3, "node %s", addr)
		}
		require.Zero(t, s.Request.Timeouts)
	})

	t.Run("PipelineAcrossMasters", func(t *testing.T) {
		p := clusterPool(t, Config{Request: LaneConfig{Size: 1}})
		pipe := p.Client().Pipeline()
		for i := range 9 {
			pipe.Set(ctx, key(i, fmt.Sprint(i)), i, 0)
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err, "go-redis splits a pipeline by node: no CROSSSLOT")
		for i := range 9 {
			v, err := p.Client().Get(ctx, key(i, fmt.Sprint(i))).Int()
			require.NoError(t, err)
			require.Equal(t, i, v)
		}
		// A pipeline holds one slot of the gate but may use one socket on
		// each node it touches: still at most Size per node.
		for addr, n := range connsPerNode(t, "bounded-request") {
			require.LessOrEqual(t, n, 1, "node %s", addr)
		}
		err = p.Client().MGet(ctx, key(0, "a"), key(1, "b")).Err()
		require.ErrorContains(t, err, "CROSSSLOT", "a multi-key command across tags is the caller's bug, reported by Redis")
		require.True(t, p.Healthy(), "and says nothing about Redis")
	})

	t.Run("BlockingCommandsAndReservations", func(t *testing.T) {
		p := clusterPool(t, Config{Blocking: BlockingConfig{Size: 2}})
		err := p.Client().BLMove(ctx, key(0, "a"), key(0, "b"), "LEFT", "RIGHT", time.Second).Err()
		require.ErrorIs(t, err, ErrBlockingCommand)

		r, err := p.ReserveBlocking("fetcher", 1)
		require.NoError(t, err)
		for i := range 3 {
			require.NoError(t, p.Client().LPush(ctx, key(i, "ready"), fmt.Sprint("job", i)).Err())
			v, err := r.Client().BLMove(ctx, key(i, "ready"), key(i, "proc"), "RIGHT", "LEFT", time.Second).Result()
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint("job", i), v)
		}
		require.LessOrEqual(t, p.Stats().Blocking.Open, 3, "one socket per node at most")
		for addr, n := range connsPerNode(t, "bounded-blocking-fetcher") {
			require.LessOrEqual(t, n, 1, "node %s", addr)
		}

		sr, err := p.ReserveBlocking("cache:x invalidation", 1)
		require.NoError(t, err)
		sub, err := sr.Subscribe(ctx, "inval")
		require.NoError(t, err)
		require.NoError(t, p.Client().Publish(ctx, "inval", "k1").Err())
		msg, err := sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		require.Equal(t, "k1", msg.Payload)
		require.NoError(t, sub.Close())
	})

	t.Run("CommandRunsAtMostOnce", func(t *testing.T) {
		p := clusterPool(t, Config{FailureThreshold: 100})
		owner, err := c.MasterOf(ctx, key(0, "runs"))
		require.NoError(t, err)
		checkAtMostOnce(t, p, owner, key(0, "runs"), key(0, "other"))
	})

	// A pipeline across masters whose part for one node finds that node's
	// sockets taken (go-redis's own CLUSTER SLOTS reload or an abandoned
	// dial uses them outside the gate; here a command sent on the node
	// client stands for them) must not re-send the part that already ran
	// on the other node while it waits for a socket.
	t.Run("PipelineRetryRunsNothingTwice", func(t *testing.T) {
		kA, kB, held := key(0, "n"), key(1, "n"), key(1, "held")
		run := func(t *testing.T, maxWait time.Duration, release bool) (*Pool, []redis.Cmder, error) {
			p := clusterPool(t, Config{Request: LaneConfig{Size: 1, MaxWait: maxWait}})
			for i := range 3 { // every node's socket dialled, the slot map loaded
				if err := p.Client().Get(ctx, key(i, "warm")).Err(); err != redis.Nil {
					t.Fatalf("warming node %d: %v", i, err)
				}
			}
			nodeB, err := p.Client().(*redis.ClusterClient).MasterForKey(ctx, kB)
			require.NoError(t, err)
			ownerA, err := c.MasterOf(ctx, kA)
			require.NoError(t, err)
			ownerB, err := c.MasterOf(ctx, kB)
			require.NoError(t, err)
			blocked := make(chan error, 1)
			go func() { blocked <- nodeB.BLPop(ctx, 20*time.Second, held).Err() }()
			testutil.Eventually(t, testutil.Wait, "node B's only socket held", func() bool {
				clients, err := ownerB.Clients(ctx)
				return err == nil && strings.Contains(strings.Join(clients, "\n"), "cmd=blpop")
			})
			type result struct {
				cmds []redis.Cmder
				err  error
			}
			done := make(chan result, 1)
			go func() {
				pipe := p.Client().Pipeline()
				pipe.Incr(ctx, kA)
				pipe.Incr(ctx, kB)
				cmds, err := pipe.Exec(ctx)
				done <- result{cmds, err}
			}()
			if release {
				testutil.Eventually(t, testutil.Wait, "node A's part ran", func() bool {
					v, err := ownerA.Do(ctx, "GET", kA)
					return err == nil && v != ""
				})
				_, err := ownerB.Do(ctx, "LPUSH", held, "go")
				require.NoError(t, err)
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the pipeline did not return")
			}
			if !release {
				_, err := ownerB.Do(ctx, "LPUSH", held, "go")
				require.NoError(t, err)
			}
			select {
			case err := <-blocked:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Fatal("the BLPOP holding node B did not return")
			}
			return p, r.cmds, r.err
		}
		count := func(t *testing.T, k string) int {
			owner, err := c.MasterOf(ctx, k)
			require.NoError(t, err)
			v, err := owner.Do(ctx, "GET", k)
			require.NoError(t, err)
			if v == "" {
				return 0
			}
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}

		t.Run("NodeFreedWhileWaiting", func(t *testing.T) {
			_, cmds, err := run(t, 20*time.Second, true)
			require.NoError(t, err)
			require.Len(t, cmds, 2)
			require.Equal(t, int64(1), cmds[0].(*redis.IntCmd).Val())
			require.Equal(t, int64(1), cmds[1].(*redis.IntCmd).Val())
			require.Equal(t, 1, count(t, kA), "node A's INCR ran once")
			require.Equal(t, 1, count(t, kB), "node B's INCR ran once, after its socket was free")
		})
		t.Run("NodeStaysFull", func(t *testing.T) {
			p, cmds, err := run(t, 200*time.Millisecond, false)
			require.ErrorIs(t, err, ErrLaneExhausted)
			require.Len(t, cmds, 2)
			require.NoError(t, cmds[0].Err(), "node A's INCR ran and keeps its reply")
			require.Equal(t, int64(1), cmds[0].(*redis.IntCmd).Val())
			require.ErrorIs(t, cmds[1].Err(), ErrLaneExhausted, "node B's INCR was never sent")
			require.Equal(t, 1, count(t, kA), "node A's INCR ran once")
			require.Equal(t, 0, count(t, kB))
			require.True(t, p.Healthy(), "a full node pool says nothing about Redis")
		})
	})

	// Health is one state per pool: a master that stops marks the pool
	// down, and calls fail fast whatever node their key lives on, until a
	// probe finds the cluster serving again.
	t.Run("HealthFailsFastAndRecovers", func(t *testing.T) {
		p := clusterPool(t, Config{FailureThreshold: 2, ProbeInterval: 20 * time.Millisecond})
		k := key(0, "k")
		require.NoError(t, p.Client().Set(ctx, k, "v", 0).Err())
		owner, err := c.MasterOf(ctx, k)
		require.NoError(t, err)
		require.NoError(t, owner.Stop())
		for range 2 {
			err := p.Client().Get(ctx, k).Err()
			require.Error(t, err)
			require.NotErrorIs(t, err, ErrUnavailable)
		}
		require.False(t, p.Healthy())
		require.ErrorIs(t, p.Client().Get(ctx, key(1, "k")).Err(), ErrUnavailable, "another master's key fails fast too")

		owner.Start()
		c.WaitOK(redistest.DefaultClusterWait)
		testutil.Eventually(t, testutil.Wait, "a probe finds the cluster back", func() bool {
			err := p.Client().Get(ctx, k).Err()
			return err == nil || err == redis.Nil
		})
		require.True(t, p.Healthy())
		for i := range 3 {
			require.NoError(t, p.Client().Set(ctx, key(i, "k"), "v", 0).Err())
		}
	})

	t.Run("CloseLeavesNothing", func(t *testing.T) {
		p, err := New(Config{Addrs: c.Addrs(), ClusterMode: true})
		require.NoError(t, err)
		r, err := p.ReserveBlocking("x", 1)
		require.NoError(t, err)
		for i := range 3 {
			require.NoError(t, p.Client().Set(ctx, key(i, "k"), "v", 0).Err())
			require.NoError(t, p.Background().Get(ctx, key(i, "k")).Err())
			require.NoError(t, r.Client().Get(ctx, key(i, "k")).Err())
		}
		require.Positive(t, p.Stats().Open)
		require.NoError(t, p.Close())
		require.NoError(t, p.Close())
		testutil.Eventually(t, testutil.Wait, "sockets closed", func() bool { return p.Stats().Open == 0 })
		testutil.Eventually(t, testutil.Wait, "connections gone from every node", func() bool { return len(connsPerNode(t, "bounded-")) == 0 })
	})
}

func TestCommandRunsAtMostOnce_Server(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}, FailureThreshold: 100})
	checkAtMostOnce(t, p, srv, "runs", "other")
}

// checkAtMostOnce makes Redis unable to deliver replies (over the output
// buffer limit, so the server closes the connection instead) after the
// commands ran: each caller gets the connection error and its commands ran
// once. A client that retried would run them again behind the caller.
// owner is the server holding counter and other.
func checkAtMostOnce(t *testing.T, p *Pool, owner *redistest.Redis, counter, other string) {
	ctx := context.Background()
	_, err := owner.Do(ctx, "CONFIG", "SET", "client-output-buffer-limit", "normal 1024 1024 0")
	require.NoError(t, err)
	lifted := false
	lift := func() {
		if !lifted {
			lifted = true
			_, err := owner.Do(ctx, "CONFIG", "SET", "client-output-buffer-limit", "normal 0 0 0")
			require.NoError(t, err)
		}
	}
	defer lift()

	big := redis.NewScript(`redis.call('INCR', KEYS[1]); return string.rep('x', 200000)`)
	for _, lane := range []redis.UniversalClient{p.Client(), p.Background()} {
		err := big.Run(ctx, lane, []string{counter}).Err()
		require.Error(t, err)
		require.NotContains(t, err.Error(), "NOSCRIPT")
	}
	pipe := p.Client().Pipeline()
	pipe.Incr(ctx, counter)
	pipe.Eval(ctx, `return string.rep('x', 200000)`, []string{other})
	_, err = pipe.Exec(ctx)
	require.Error(t, err)
	lift()
	n, err := p.Client().Get(ctx, counter).Int()
	require.NoError(t, err)
	// Two scripts (Script.Run's first EVALSHA fails with NOSCRIPT before
	// running anything, then EVAL runs it) and one pipelined INCR.
	require.Equal(t, 3, n, "each call ran its commands exactly once")
}

// TestClusterFailover kills a master with a replica: the pool finds the
// promoted replica by itself, within the cluster's failover time rather
// than go-redis's one-minute slot map refresh, and counts the failures in
// its health.
func TestClusterFailover(t *testing.T) {
	c := redistest.ClusterWith(t, redistest.ClusterOptions{ReplicasPerMaster: 1})
	ctx := context.Background()
	// go-redis re-dials the dead master once a second in a goroutine of its
	// own until its client is closed; wait for it to notice the close.
	t.Cleanup(func() { waitGoroutinesGone(t, "(*ConnPool).tryDial", "(*clusterStateHolder).LazyReload") })
	p := newPool(t, Config{Addrs: c.Addrs(), ClusterMode: true})
	const k = "{failover}:k"
	require.NoError(t, p.Client().Set(ctx, k, "v", 0).Err())
	master, err := c.MasterOf(ctx, k)
	require.NoError(t, err)
	replicas, err := c.Replicas(ctx, master.Addr())
	require.NoError(t, err)
	require.Len(t, replicas, 1)
	c.WaitReplicated(ctx, master) // or the key may die with the master

	// A caller keeps asking from the moment the master dies: its calls
	// fail (refused, then fast with ErrUnavailable between the probes, one
	// per 250ms) until the replica is promoted, and the probe after that
	// finds it.
	master.Kill()
	killed := time.Now()
	var served time.Duration
	var errs []string
	failedFast := 0
	defer func() {
		if t.Failed() {
			t.Logf("errors seen: %q; health %+v", errs, p.Health())
		}
	}()
	deadline := killed.Add(redistest.DefaultClusterWait)
	for {
		v, err := p.Client().Get(ctx, k).Result()
		if err == nil {
			served = time.Since(killed)
			require.Equal(t, "v", v)
			break
		}
		switch {
		case errors.Is(err, ErrUnavailable):
			failedFast++
		case len(errs) == 0 || errs[len(errs)-1] != err.Error():
			errs = append(errs, err.Error())
		}
		require.False(t, time.Now().After(deadline), "the pool did not reach the promoted replica")
		time.Sleep(10 * time.Millisecond) // a caller retrying, not a hot loop
	}
	c.WaitOK(redistest.DefaultClusterWait)
	nodes, err := c.Topology(ctx)
	require.NoError(t, err)
	var promoted bool
	for _, n := range nodes {
		promoted = promoted || (n.Addr == replicas[0].Addr() && n.Master)
	}
	require.True(t, promoted)
	require.Positive(t, failedFast, "calls failed fast during the outage")
	t.Logf("master killed: the pool served its keys again %s later (cluster-node-timeout 2s); %d calls failed fast, the others with %q", served.Round(time.Millisecond), failedFast, errs)
	require.True(t, p.Healthy())
	require.Positive(t, p.Health().Failures, "the failed calls were seen")
}

// waitGoroutinesGone waits until no goroutine's stack mentions any of
// funcs: go-redis goroutines that end by themselves shortly after a close.
func waitGoroutinesGone(t *testing.T, funcs ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	testutil.Eventually(t, testutil.Wait, "no goroutine in "+strings.Join(funcs, ", ")+" after the pool closed", func() bool {
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, f := range funcs {
			if strings.Contains(stacks, f) {
				return false
			}
		}
		return true
	})
}

// Config.Hooks see the commands of a Redis Cluster pool once each (on the
// cluster client, not again on each node's) and the nodes' dials.
func TestClusterHooks(t *testing.T) {
	c := redistest.Cluster(t)
	ctx := context.Background()
	h := newCountingHook()
	p := newPool(t, Config{Addrs: c.Addrs(), ClusterMode: true, Hooks: []redis.Hook{h}})
	tags := c.OnEveryMaster(func(i int) string { return fmt.Sprint("t", i) }, func(n string) string { return "{" + n + "}" })
	for _, tag := range tags {
		require.NoError(t, p.Client().Set(ctx, "{"+tag+"}:k", "v", 0).Err())
	}
	_, err := p.Background().Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, tag := range tags {
			pl.Get(ctx, "{"+tag+"}:k")
		}
		return nil
	})
	require.NoError(t, err)
	calls, _ := h.count("SET")
	require.Equal(t, len(tags), calls)
	calls, _ = h.count("GET")
	require.Equal(t, len(tags), calls)
	h.mu.Lock()
	require.Positive(t, h.dials, "the nodes' dials")
	h.mu.Unlock()
}
