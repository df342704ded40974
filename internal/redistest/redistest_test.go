package redistest

import (
	"github.com/bounded-go/bounded/internal/hashslot"

	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMini(t *testing.T) {
	m := Mini(t)
	require.NoError(t, m.Set("k", "v"))
	require.NotEmpty(t, m.Addr())
}

func TestServerStartsStopsAndRestarts(t *testing.T) {
	r := ServerWith(t, Options{AppendOnly: true})
	ctx := context.Background()
	require.NotEqual(t, "127.0.0.1:6379", r.Addr(), "never the machine's own Redis")
	pid := r.PID()
	require.NotZero(t, pid)

	out, err := r.Do(ctx, "SET", "k", "v")
	require.NoError(t, err)
	require.Equal(t, "OK", out)

	r.Restart()
	require.NotEqual(t, pid, r.PID())
	out, err = r.Do(ctx, "GET", "k")
	require.NoError(t, err)
	require.Equal(t, "v", out, "append-only data survives a restart")

	stats, err := r.CommandStats(ctx)
	require.NoError(t, err)
	require.Contains(t, stats, "get")
	require.Positive(t, TotalCalls(stats))

	clients, err := r.Clients(ctx)
	require.NoError(t, err)
	require.Len(t, clients, 1, "only our own CLIENT LIST connection")

	_, err = r.Do(ctx, "NOSUCHCOMMAND")
	require.ErrorContains(t, err, "unknown command")

	r.Kill()
	require.Zero(t, r.PID())
	_, err = r.Do(ctx, "PING")
	require.Error(t, err)
	r.Start()
	out, err = r.Do(ctx, "PING")
	require.NoError(t, err)
	require.Equal(t, "PONG", out)
	require.True(t, strings.Contains(r.Log(), "Ready to accept connections"), r.Log())
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_get:calls=3,usec=5,usec_per_call=1.67,rejected_calls=0,failed_calls=0\r\ncmdstat_client|list:calls=2,usec=1\r\n"
	s := ParseCommandStats(info)
	require.Equal(t, map[string]int64{"get": 3, "client|list": 2}, s)
	require.Equal(t, int64(3), TotalCalls(s, "client|list"))
}

func TestKeySlot(t *testing.T) {
	// Vectors from the Redis Cluster specification.
	require.Equal(t, 0x31C3, int(hashslot.CRC16("123456789")))
	require.Equal(t, 12182, KeySlot("foo"))
	require.Equal(t, KeySlot("{user1000}.following"), KeySlot("{user1000}.followers"))
	require.Equal(t, KeySlot("user1000"), KeySlot("{user1000}.following"))
	require.Equal(t, KeySlot("foo{}{bar}"), int(hashslot.CRC16("foo{}{bar}")%16384), "an empty tag hashes the whole key")
	require.Equal(t, KeySlot("bar"), KeySlot("foo{bar}{zap}"), "the first tag counts")
	require.Equal(t, KeySlot("{bar"), int(hashslot.CRC16("{bar")%16384), "no closing brace: the whole key")
}

func TestParseClusterNodes(t *testing.T) {
	out := "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-abc]\n" +
		"67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002 slave,fail? e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238316232 2 connected\n" +
		"292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 5461 5462-16383\n"
	nodes, err := ParseClusterNodes(out)
	require.NoError(t, err)
	require.Equal(t, []ClusterNode{
		{ID: "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca", Addr: "127.0.0.1:30001", Master: true, Slots: [][2]int{{0, 5460}}},
		{ID: "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1", Addr: "127.0.0.1:30002", MasterID: "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca", Failed: true},
		{ID: "292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f", Addr: "127.0.0.1:30003", Master: true, Slots: [][2]int{{5461, 5461}, {5462, 16383}}},
	}, nodes)
	_, err = ParseClusterNodes("too short")
	require.Error(t, err)
	_, err = ParseClusterNodes("id 127.0.0.1:1@2 master - 0 0 1 connected x-y")
	require.ErrorContains(t, err, "bad slot range")
}

func TestCluster(t *testing.T) {
	c := ClusterWith(t, ClusterOptions{ReplicasPerMaster: 1})
	ctx := context.Background()
	require.Len(t, c.Nodes(), 6)
	for _, a := range c.Addrs() {
		require.NotEqual(t, "127.0.0.1:6379", a)
	}
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, masters, 3)

	// Our slot function agrees with the server's.
	for _, key := range []string{"a", "foo", "{bq:emails}:ready", "{rl:api}:user:{42}", "x{}y"} {
		out, err := masters[0].Do(ctx, "CLUSTER", "KEYSLOT", key)
		require.NoError(t, err)
		require.Equal(t, out, strconv.Itoa(KeySlot(key)), key)
	}

	// One name per master, and each key is served by its owner.
	names := c.OnEveryMaster(func(i int) string { return fmt.Sprint("q", i) }, func(n string) string { return "{" + n + "}:k" })
	require.Len(t, names, 3)
	seen := map[*Redis]bool{}
	for _, n := range names {
		m, err := c.MasterOf(ctx, "{"+n+"}:k")
		require.NoError(t, err)
		seen[m] = true
		_, err = m.Do(ctx, "SET", "{"+n+"}:k", "v")
		require.NoError(t, err)
	}
	require.Len(t, seen, 3)
	_, err = masters[0].Do(ctx, "GET", "{"+names[1]+"}:k")
	require.ErrorContains(t, err, "MOVED")

	st, err := c.CommandStats(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, st["set"], int64(3))

	require.NoError(t, c.Flush(ctx))
	for _, m := range masters {
		out, err := m.Do(ctx, "DBSIZE")
		require.NoError(t, err)
		require.Equal(t, "0", out)
	}

	// Replication is asynchronous; WaitReplicated waits for it.
	reps, err := c.Replicas(ctx, masters[0].Addr())
	require.NoError(t, err)
	require.Len(t, reps, 1)
	k := c.OnEveryMaster(func(i int) string { return fmt.Sprint("r", i) }, func(n string) string { return n })[0]
	_, err = masters[0].Do(ctx, "SET", k, "v")
	require.NoError(t, err)
	c.WaitReplicated(ctx, masters[0])
	n, err := reps[0].Do(ctx, "DBSIZE")
	require.NoError(t, err)
	require.Equal(t, "1", n, "the replica has the key")

	// A manual failover swaps a master and its replica.
	c.Failover(ctx, reps[0])
	now, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Contains(t, now, reps[0])
	require.NotContains(t, now, masters[0])

	// A stopped node comes back with its identity and rejoins.
	reps, err = c.Replicas(ctx, masters[1].Addr())
	require.NoError(t, err)
	require.Len(t, reps, 1)
	require.NoError(t, reps[0].Stop())
	_, err = reps[0].Do(ctx, "PING")
	require.Error(t, err)
	c.WaitOK(DefaultClusterWait)
	reps[0].Start()
	c.WaitOK(DefaultClusterWait)
	again, err := c.Replicas(ctx, masters[1].Addr())
	require.NoError(t, err)
	require.Equal(t, reps, again)
	nodes, err := c.Topology(ctx)
	require.NoError(t, err)
	require.Len(t, nodes, 6, "the restarted node is still a member")
}

func TestSentinel(t *testing.T) {
	s := Sentinel(t)
	ctx := context.Background()
	require.Len(t, s.Servers(), 2)
	require.Len(t, s.SentinelAddrs(), 3)
	for _, a := range append(s.SentinelAddrs(), s.Servers()[1].Addr()) {
		require.NotEqual(t, "127.0.0.1:6379", a)
	}
	first := s.Master(ctx)
	require.Equal(t, s.Servers()[0], first)
	_, err := first.Do(ctx, "SET", "k", "v")
	require.NoError(t, err)
	s.WaitReplicated(ctx)
	v, err := s.Servers()[1].Do(ctx, "GET", "k")
	require.NoError(t, err)
	require.Equal(t, "v", v)

	// SENTINEL FAILOVER swaps master and replica.
	s.Failover(ctx)
	deadline := time.Now().Add(DefaultSentinelWait)
	for s.Master(ctx) == first {
		require.False(t, time.Now().After(deadline), "no switch")
		time.Sleep(10 * time.Millisecond)
	}
	s.WaitReady(DefaultSentinelWait)
	require.Equal(t, s.Servers()[1], s.Master(ctx))

	// A killed master is replaced by its replica.
	second := s.Master(ctx)
	second.Kill()
	deadline = time.Now().Add(DefaultSentinelWait)
	for {
		addr, err := s.MasterAddr(ctx)
		require.NoError(t, err)
		if addr != second.Addr() {
			break
		}
		require.False(t, time.Now().After(deadline), "no switch after the kill")
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, first, s.Master(ctx))
	v, err = first.Do(ctx, "GET", "k")
	require.NoError(t, err)
	require.Equal(t, "v", v)
}
