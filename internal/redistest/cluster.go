package redistest

import (
	"github.com/bounded-go/bounded/internal/hashslot"

	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ClusterOptions tune a cluster. The zero value is 3 masters, no replicas, a
// 2s node timeout and persistence off.
type ClusterOptions struct {
	// Masters is the number of masters (at least 3, Redis's minimum for
	// failure detection). Default 3.
	Masters int
	// ReplicasPerMaster adds replicas, needed for failover tests. Default 0.
	ReplicasPerMaster int
	// NodeTimeout is --cluster-node-timeout: how long a node may be
	// unreachable before it counts as failed and a replica takes over.
	// Default 2s, so failover tests take seconds, not the 15s of Redis's
	// default.
	NodeTimeout time.Duration
	// AppendOnly keeps every node's data across Stop and Start.
	AppendOnly bool
	// Args are extra redis-server arguments for every node.
	Args []string
}

// RedisCluster is a Redis Cluster of real redis-server processes started for
// one test. Each node is a *Redis: stop, kill, start, Do and CommandStats
// work on it as on a single server (Do gets MOVED for keys of other nodes).
//
// Build it with Cluster or ClusterWith; the zero value is not usable. Its
// methods are safe for concurrent use (they fail the test with t.Fatalf, so
// call those that can fail from the test's goroutine). The test's Cleanup
// stops every node.
type RedisCluster struct {
	t     testing.TB
	nodes []*Redis
	opts  ClusterOptions
}

// DefaultClusterWait bounds Cluster's wait for cluster_state:ok. A fresh
// master waits 2s (CLUSTER_WRITABLE_DELAY) before it reports ok at all.
const DefaultClusterWait = 20 * time.Second

// Cluster starts a 3-master Redis Cluster on free loopback ports
// (redis-server --cluster-enabled yes, then redis-cli --cluster create),
// waits until every node reports cluster_state:ok and agrees on who owns
// which slot, and stops every node by its process handle in t.Cleanup. It
// takes about two seconds, most of it Redis's own delay before a new master
// serves writes, so share one cluster per test function (Flush between
// subtests). Without redis-server or redis-cli the test is skipped, or fails
// when BOUNDED_REQUIRE_REDIS=1. It needs Redis 7.0 or later (--cluster-port).
//
// A test package builds its pool on it with
//
//	pool.Config{Addrs: c.Addrs(), ClusterMode: true}
//
// (redistest cannot build the pool.Config itself: pool's own tests import
// redistest).
func Cluster(t testing.TB) *RedisCluster {
	t.Helper()
	return ClusterWith(t, ClusterOptions{})
}

// ClusterWith is Cluster with options.
func ClusterWith(t testing.TB, opts ClusterOptions) *RedisCluster {
	t.Helper()
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.Masters < 3 || opts.ReplicasPerMaster < 0 {
		t.Fatalf("redistest: ClusterOptions: need at least 3 masters and no negative replica count, got %d and %d", opts.Masters, opts.ReplicasPerMaster)
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = 2 * time.Second
	}
	server := Binary(t, "redis-server")
	cli := Binary(t, "redis-cli")
	c := &RedisCluster{t: t, opts: opts}
	sopts := Options{AppendOnly: opts.AppendOnly, Args: opts.Args}
	for range opts.Masters * (1 + opts.ReplicasPerMaster) {
		r := &Redis{t: t, bin: server, dir: t.TempDir(), opts: sopts, nodeTimeout: opts.NodeTimeout}
		c.nodes = append(c.nodes, launch(t, r))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(opts.ReplicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.WaitOK(DefaultClusterWait)
	return c
}

// Nodes returns every node, in the order they were started.
func (c *RedisCluster) Nodes() []*Redis { return slices.Clone(c.nodes) }

// Addrs returns the address of every node: the seeds for a cluster client.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Node returns the node listening on addr, or nil.
func (c *RedisCluster) Node(addr string) *Redis {
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

func (c *RedisCluster) running() []*Redis {
	var out []*Redis
	for _, n := range c.nodes {
		if n.PID() != 0 {
			out = append(out, n)
		}
	}
	return out
}

// ClusterNode is one line of CLUSTER NODES, as a node sees the cluster.
type ClusterNode struct {
	ID       string
	Addr     string // host:port
	Master   bool
	MasterID string // of a replica
	Failed   bool   // flagged fail or pfail
	Slots    [][2]int
}

// Topology returns the cluster as the first running node sees it.
func (c *RedisCluster) Topology(ctx context.Context) ([]ClusterNode, error) {
	var errs []error
	for _, n := range c.running() {
		nodes, err := topology(ctx, n)
		if err == nil {
			return nodes, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("redistest: no node answered CLUSTER NODES: %w", errors.Join(errs...))
}

func topology(ctx context.Context, n *Redis) ([]ClusterNode, error) {
	out, err := n.Do(ctx, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	return ParseClusterNodes(out)
}

// ParseClusterNodes parses the text of CLUSTER NODES.
func ParseClusterNodes(s string) ([]ClusterNode, error) {
	var nodes []ClusterNode
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("redistest: bad CLUSTER NODES line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := "," + f[2] + ","
		cn := ClusterNode{
			ID:     f[0],
			Addr:   addr,
			Master: strings.Contains(flags, ",master,"),
			Failed: strings.Contains(flags, ",fail,") || strings.Contains(flags, ",fail?,"),
		}
		if f[3] != "-" {
			cn.MasterID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("redistest: bad slot range %q in %q", r, line)
			}
			cn.Slots = append(cn.Slots, [2]int{a, b})
		}
		nodes = append(nodes, cn)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Addr < nodes[j].Addr })
	return nodes, nil
}

// roles renders who owns which slots and which running node replicates
// which master, for comparing two nodes' views of the cluster.
func (c *RedisCluster) roles(nodes []ClusterNode) string {
	addr := map[string]string{}
	for _, n := range nodes {
		addr[n.ID] = n.Addr
	}
	var b strings.Builder
	for _, n := range nodes {
		switch {
		case n.Master && len(n.Slots) > 0:
			fmt.Fprintf(&b, "%s owns %v; ", n.Addr, n.Slots)
		case c.Node(n.Addr) != nil && c.Node(n.Addr).PID() != 0:
			fmt.Fprintf(&b, "%s replicates %q; ", n.Addr, addr[n.MasterID])
		}
	}
	return b.String()
}

// WaitOK waits until every running node reports cluster_state:ok, all of
// them agree on which master owns which slots, every slot has an owner and
// every owner is running, and every running replica is in sync with its
// master. It fails the test after within.
func (c *RedisCluster) WaitOK(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var why error
	for {
		if why = c.ready(); why == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: cluster not ready within %s: %v", within, why)
		}
		time.Sleep(20 * time.Millisecond) // waiting on gossip between processes, with a deadline
	}
}

// ready returns nil when the cluster is ready, or what is not.
func (c *RedisCluster) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	running := c.running()
	if len(running) == 0 {
		return errors.New("no node is running")
	}
	var view string
	for _, n := range running {
		info, err := n.Do(ctx, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state is not ok", n.Addr())
		}
		nodes, err := topology(ctx, n)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		v := c.roles(nodes)
		if view == "" {
			view = v
			covered := 0
			for _, cn := range nodes {
				if m := c.Node(cn.Addr); m != nil && m.PID() != 0 && !(cn.Master && len(cn.Slots) > 0) && cn.MasterID == "" {
					return fmt.Errorf("%s sees %s as neither a master with slots nor a replica", n.Addr(), cn.Addr)
				}
				if !cn.Master || len(cn.Slots) == 0 {
					continue
				}
				if owner := c.Node(cn.Addr); owner == nil || owner.PID() == 0 || cn.Failed {
					return fmt.Errorf("slots of %s are owned by a node that is down", cn.Addr)
				}
				for _, r := range cn.Slots {
					covered += r[1] - r[0] + 1
				}
			}
			if covered != 16384 {
				return fmt.Errorf("%s sees %d of 16384 slots covered", n.Addr(), covered)
			}
		} else if v != view {
			return fmt.Errorf("nodes disagree on the roles: %q vs %q", view, v)
		}
		role, err := n.Do(ctx, "ROLE")
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		// A replica's ROLE is slave, master host, port, state, offset.
		if lines := strings.Split(role, "\n"); lines[0] == "slave" && (len(lines) < 4 || lines[3] != "connected") {
			return fmt.Errorf("replica %s is not in sync with its master", n.Addr())
		}
	}
	return nil
}

// Masters returns the running nodes that own slots now.
func (c *RedisCluster) Masters(ctx context.Context) ([]*Redis, error) {
	nodes, err := c.Topology(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Redis
	for _, cn := range nodes {
		if n := c.Node(cn.Addr); cn.Master && len(cn.Slots) > 0 && n != nil && n.PID() != 0 {
			out = append(out, n)
		}
	}
	return out, nil
}

// Replicas returns the running replicas of the node at masterAddr.
func (c *RedisCluster) Replicas(ctx context.Context, masterAddr string) ([]*Redis, error) {
	nodes, err := c.Topology(ctx)
	if err != nil {
		return nil, err
	}
	var masterID string
	for _, cn := range nodes {
		if cn.Addr == masterAddr {
			masterID = cn.ID
		}
	}
	var out []*Redis
	for _, cn := range nodes {
		if n := c.Node(cn.Addr); cn.MasterID == masterID && masterID != "" && n != nil && n.PID() != 0 {
			out = append(out, n)
		}
	}
	return out, nil
}

// MasterOf returns the node that owns key's slot now.
func (c *RedisCluster) MasterOf(ctx context.Context, key string) (*Redis, error) {
	nodes, err := c.Topology(ctx)
	if err != nil {
		return nil, err
	}
	slot := KeySlot(key)
	for _, cn := range nodes {
		if !cn.Master {
			continue
		}
		for _, r := range cn.Slots {
			if slot >= r[0] && slot <= r[1] {
				if n := c.Node(cn.Addr); n != nil {
					return n, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("redistest: no node owns slot %d (key %q)", slot, key)
}

// OnEveryMaster returns names whose keys land on different masters, one per
// master: for each master, the first of name(0), name(1), ... whose key(name)
// hashes to a slot it owns. Tests use it to spread queues or limiters over
// the whole cluster.
func (c *RedisCluster) OnEveryMaster(name func(i int) string, key func(name string) string) []string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	masters, err := c.Masters(ctx)
	if err != nil {
		c.t.Fatalf("redistest: %v", err)
	}
	out := make([]string, len(masters))
	left := len(masters)
	for i := 0; left > 0 && i < 100_000; i++ {
		n := name(i)
		m, err := c.MasterOf(ctx, key(n))
		if err != nil {
			c.t.Fatalf("redistest: %v", err)
		}
		j := slices.Index(masters, m)
		if j >= 0 && out[j] == "" {
			out[j] = n
			left--
		}
	}
	if left > 0 {
		c.t.Fatalf("redistest: no name found for %d of %d masters", left, len(masters))
	}
	return out
}

// Flush empties every running master (FLUSHALL), for a fresh start between
// subtests sharing a cluster.
func (c *RedisCluster) Flush(ctx context.Context) error {
	masters, err := c.Masters(ctx)
	if err != nil {
		return err
	}
	for _, m := range masters {
		if _, err := m.Do(ctx, "FLUSHALL"); err != nil {
			return fmt.Errorf("redistest: FLUSHALL on %s: %w", m.Addr(), err)
		}
	}
	return nil
}

// CommandStats returns the calls per command summed over the running nodes
// (see Redis.CommandStats). Nodes answer CLUSTER commands to clients that
// load the topology; leave "cluster|slots", "cluster|shards" and "cluster|nodes"
// out when counting a component's traffic.
func (c *RedisCluster) CommandStats(ctx context.Context) (map[string]int64, error) {
	sum := map[string]int64{}
	for _, n := range c.running() {
		st, err := n.CommandStats(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Addr(), err)
		}
		for k, v := range st {
			sum[k] += v
		}
	}
	return sum, nil
}

// Failover promotes replica with CLUSTER FAILOVER (a manual failover: the
// master stops taking writes, the replica catches up and takes over, nothing
// acknowledged is lost) and waits until the cluster is ready again.
func (c *RedisCluster) Failover(ctx context.Context, replica *Redis) {
	c.t.Helper()
	if _, err := replica.Do(ctx, "CLUSTER", "FAILOVER"); err != nil {
		c.t.Fatalf("redistest: CLUSTER FAILOVER on %s: %v", replica.Addr(), err)
	}
	deadline := time.Now().Add(DefaultClusterWait)
	for {
		role, err := replica.Do(ctx, "ROLE")
		if err == nil && strings.HasPrefix(role, "master") {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: %s did not become master within %s (ROLE: %q, %v)", replica.Addr(), DefaultClusterWait, role, err)
		}
		time.Sleep(10 * time.Millisecond) // waiting on the failover, with a deadline
	}
	c.WaitOK(DefaultClusterWait)
}

// WaitReplicated waits until every running replica of master has processed
// everything master had written when it was called: replication is
// asynchronous, so a master killed before that takes its last writes with
// it. (WAIT sent with Do would not do: it counts the writes of its own
// connection, and Do opens one per command.)
func (c *RedisCluster) WaitReplicated(ctx context.Context, master *Redis) {
	c.t.Helper()
	offset := func(n *Redis, field string) (int64, error) {
		info, err := n.Do(ctx, "INFO", "replication")
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
				return strconv.ParseInt(v, 10, 64)
			}
		}
		return 0, fmt.Errorf("%s: no %s in INFO replication", n.Addr(), field)
	}
	want, err := offset(master, "master_repl_offset")
	if err != nil {
		c.t.Fatalf("redistest: %v", err)
	}
	replicas, err := c.Replicas(ctx, master.Addr())
	if err != nil {
		c.t.Fatalf("redistest: %v", err)
	}
	deadline := time.Now().Add(DefaultClusterWait)
	for _, r := range replicas {
		for {
			got, err := offset(r, "slave_repl_offset")
			if err == nil && got >= want {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("redistest: replica %s has not caught up with %s (offset %d, want %d): %v", r.Addr(), master.Addr(), got, want, err)
			}
			time.Sleep(5 * time.Millisecond) // waiting on replication, with a deadline
		}
	}
}

// KeySlot returns the cluster slot of key (hashslot.Of).
func KeySlot(key string) int { return hashslot.Of(key) }
