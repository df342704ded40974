package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SentinelOptions tune a Sentinel setup. The zero value is one master, one
// replica and three sentinels with a quorum of two, watching the master
// under the name "mymaster" and calling it down after 1s without a reply.
type SentinelOptions struct {
	// MasterName is the name the sentinels monitor. Default "mymaster".
	MasterName string
	// Replicas is the number of replicas of the master. Default 1.
	Replicas int
	// Sentinels is the number of sentinels; the quorum is a majority.
	// Default 3.
	Sentinels int
	// DownAfter is down-after-milliseconds: how long the master may not
	// answer before a sentinel calls it down. Default 1s (Redis: 30s).
	DownAfter time.Duration
	// FailoverTimeout is failover-timeout. Default 10s (Redis: 3 minutes).
	FailoverTimeout time.Duration
}

// DefaultSentinelWait bounds the waits of a Sentinel setup: for sentinels
// to find each other and the replicas, and for a failover to complete.
const DefaultSentinelWait = 30 * time.Second

// RedisSentinel is a master, its replicas and the sentinels that watch them,
// all real redis-server processes started for one test on free loopback
// ports and stopped by their process handles in t.Cleanup. Each is a *Redis:
// Kill, Stop, Start and Do work on it as on a single server.
//
// Build it with Sentinel or SentinelWith; the zero value is not usable. Its
// methods fail the test with t.Fatalf: call them from the test's goroutine.
//
// A test package builds its pool on it with
//
//	pool.Config{Addrs: s.SentinelAddrs(), MasterName: s.MasterName()}
type RedisSentinel struct {
	t         testing.TB
	opts      SentinelOptions
	servers   []*Redis // the first master, then its replicas
	sentinels []*Redis
}

// Sentinel starts a master, a replica and three sentinels and waits until
// the replica is in sync and every sentinel knows the master, the replica
// and the other sentinels (a few seconds: sentinels find each other through
// hello messages sent every 2s). Without redis-server the test is skipped,
// or fails when BOUNDED_REQUIRE_REDIS=1.
func Sentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	return SentinelWith(t, SentinelOptions{})
}

// SentinelWith is Sentinel with options.
func SentinelWith(t testing.TB, opts SentinelOptions) *RedisSentinel {
	t.Helper()
	if opts.MasterName == "" {
		opts.MasterName = "mymaster"
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Sentinels == 0 {
		opts.Sentinels = 3
	}
	if opts.DownAfter == 0 {
		opts.DownAfter = time.Second
	}
	if opts.FailoverTimeout == 0 {
		opts.FailoverTimeout = 10 * time.Second
	}
	if opts.Replicas < 0 || opts.Sentinels < 1 {
		t.Fatalf("redistest: SentinelOptions: need at least one sentinel and no negative replica count, got %d and %d", opts.Sentinels, opts.Replicas)
	}
	bin := Binary(t, "redis-server")
	s := &RedisSentinel{t: t, opts: opts}
	// A replica's full sync starts at once instead of after Redis's
	// default 5s wait for more replicas.
	fast := []string{"--repl-diskless-sync-delay", "0"}
	master := launch(t, &Redis{t: t, bin: bin, dir: t.TempDir(), opts: Options{Args: fast}})
	s.servers = append(s.servers, master)
	for range opts.Replicas {
		args := append(slices.Clone(fast), "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
		s.servers = append(s.servers, launch(t, &Redis{t: t, bin: bin, dir: t.TempDir(), opts: Options{Args: args}}))
	}
	quorum := opts.Sentinels/2 + 1
	conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d %[3]d\n"+
		"sentinel down-after-milliseconds %[1]s %[4]d\n"+
		"sentinel failover-timeout %[1]s %[5]d\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		opts.MasterName, master.port, quorum, opts.DownAfter.Milliseconds(), opts.FailoverTimeout.Milliseconds())
	for range opts.Sentinels {
		dir := t.TempDir()
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatalf("redistest: writing %s: %v", path, err)
		}
		s.sentinels = append(s.sentinels, launch(t, &Redis{t: t, bin: bin, dir: dir, sentinelConf: path}))
	}
	s.WaitReady(DefaultSentinelWait)
	return s
}

// MasterName returns the name the sentinels monitor.
func (s *RedisSentinel) MasterName() string { return s.opts.MasterName }

// SentinelAddrs returns the sentinels' addresses: the Addrs of a Sentinel
// client.
func (s *RedisSentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Sentinels returns the sentinel processes.
func (s *RedisSentinel) Sentinels() []*Redis { return slices.Clone(s.sentinels) }

// Servers returns the data servers: the first master, then its replicas, in
// the order they were started (roles change in a failover; see Master).
func (s *RedisSentinel) Servers() []*Redis { return slices.Clone(s.servers) }

// server returns the data server listening on addr, or nil.
func (s *RedisSentinel) server(addr string) *Redis {
	for _, n := range s.servers {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// MasterAddr asks one running sentinel (SENTINEL GET-MASTER-ADDR-BY-NAME)
// where the master is.
func (s *RedisSentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, n := range s.sentinels {
		if n.PID() == 0 {
			continue
		}
		out, err := n.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.opts.MasterName)
		if err != nil {
			last = err
			continue
		}
		hp := strings.Split(out, "\n")
		if len(hp) != 2 {
			return "", fmt.Errorf("redistest: sentinel %s: unexpected master address %q", n.Addr(), out)
		}
		return hp[0] + ":" + hp[1], nil
	}
	return "", fmt.Errorf("redistest: no sentinel answered: %v", last)
}

// Master returns the data server the sentinels name as master.
func (s *RedisSentinel) Master(ctx context.Context) *Redis {
	s.t.Helper()
	addr, err := s.MasterAddr(ctx)
	if err != nil {
		s.t.Fatalf("%v", err)
	}
	m := s.server(addr)
	if m == nil {
		s.t.Fatalf("redistest: the sentinels name %s, which is none of the servers", addr)
	}
	return m
}

// ready reports what is not ready yet, or "".
func (s *RedisSentinel) ready(ctx context.Context) string {
	var masterAddr string
	running := 0
	for _, n := range s.sentinels {
		if n.PID() != 0 {
			running++
		}
	}
	// A sentinel never forgets a replica (a killed master comes back as
	// one), so it knows every server but the master.
	replicas := len(s.servers) - 1
	for _, n := range s.sentinels {
		if n.PID() == 0 {
			continue
		}
		out, err := n.Do(ctx, "SENTINEL", "MASTER", s.opts.MasterName)
		if err != nil {
			return fmt.Sprintf("sentinel %s: %v", n.Addr(), err)
		}
		f := fields(out)
		addr := f["ip"] + ":" + f["port"]
		switch {
		case masterAddr != "" && addr != masterAddr:
			return fmt.Sprintf("sentinels disagree on the master: %s and %s", masterAddr, addr)
		case f["flags"] != "master":
			return fmt.Sprintf("sentinel %s flags the master %s %q", n.Addr(), addr, f["flags"])
		case f["num-slaves"] != strconv.Itoa(replicas):
			return fmt.Sprintf("sentinel %s knows %s replicas of %d", n.Addr(), f["num-slaves"], replicas)
		case f["num-other-sentinels"] != strconv.Itoa(running-1):
			return fmt.Sprintf("sentinel %s knows %s other sentinels of %d", n.Addr(), f["num-other-sentinels"], running-1)
		}
		masterAddr = addr
		reps, err := n.Do(ctx, "SENTINEL", "REPLICAS", s.opts.MasterName)
		if err != nil {
			return fmt.Sprintf("sentinel %s: %v", n.Addr(), err)
		}
		for _, f := range records(reps) {
			addr := f["ip"] + ":" + f["port"]
			if r := s.server(addr); r != nil && r.PID() != 0 && f["flags"] != "slave" {
				return fmt.Sprintf("sentinel %s flags the replica %s %q", n.Addr(), addr, f["flags"])
			}
		}
	}
	m := s.server(masterAddr)
	if m == nil || m.PID() == 0 {
		return fmt.Sprintf("the master %s is not running", masterAddr)
	}
	for _, n := range s.servers {
		if n == m || n.PID() == 0 {
			continue
		}
		info, err := n.Do(ctx, "INFO", "replication")
		if err != nil {
			return fmt.Sprintf("replica %s: %v", n.Addr(), err)
		}
		f := infoFields(info)
		if f["role"] != "slave" || f["master_port"] != strconv.Itoa(m.port) || f["master_link_status"] != "up" {
			return fmt.Sprintf("replica %s: role %s, master port %s, link %s", n.Addr(), f["role"], f["master_port"], f["master_link_status"])
		}
	}
	return ""
}

// WaitReady waits until every running sentinel names the same running
// master and knows its running replicas and the other running sentinels,
// and every running replica is in sync with that master. It fails the test
// after within.
func (s *RedisSentinel) WaitReady(within time.Duration) {
	s.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	for {
		why := s.ready(ctx)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: Sentinel setup not ready within %s: %s", within, why)
		}
		time.Sleep(20 * time.Millisecond) // waiting on the sentinels, with a deadline
	}
}

// Failover asks a sentinel for a failover (SENTINEL FAILOVER): it promotes
// a replica without asking the other sentinels and then reconfigures the
// old master as a replica. Unlike CLUSTER FAILOVER it does not stop writes
// to the old master first: what the old master acknowledged after the
// replica's last sync is lost when it becomes a replica.
func (s *RedisSentinel) Failover(ctx context.Context) {
	s.t.Helper()
	for _, n := range s.sentinels {
		if n.PID() == 0 {
			continue
		}
		if _, err := n.Do(ctx, "SENTINEL", "FAILOVER", s.opts.MasterName); err != nil {
			s.t.Fatalf("redistest: SENTINEL FAILOVER on %s: %v", n.Addr(), err)
		}
		return
	}
	s.t.Fatalf("redistest: no sentinel running")
}

// WaitReplicated waits until every running replica has processed what the
// master had written when it was called (see RedisCluster.WaitReplicated).
func (s *RedisSentinel) WaitReplicated(ctx context.Context) {
	s.t.Helper()
	m := s.Master(ctx)
	info, err := m.Do(ctx, "INFO", "replication")
	if err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
	want, err := strconv.ParseInt(infoFields(info)["master_repl_offset"], 10, 64)
	if err != nil {
		s.t.Fatalf("redistest: master_repl_offset of %s: %v", m.Addr(), err)
	}
	deadline := time.Now().Add(DefaultSentinelWait)
	for _, n := range s.servers {
		if n == m || n.PID() == 0 {
			continue
		}
		for {
			info, err := n.Do(ctx, "INFO", "replication")
			got, perr := strconv.ParseInt(infoFields(info)["slave_repl_offset"], 10, 64)
			if err == nil && perr == nil && got >= want {
				break
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("redistest: replica %s did not reach offset %d within %s (%v %v)", n.Addr(), want, DefaultSentinelWait, err, perr)
			}
			time.Sleep(5 * time.Millisecond) // waiting on replication, with a deadline
		}
	}
}

// fields turns a flat field/value reply (one per line, as Do renders an
// array) into a map.
func fields(out string) map[string]string {
	f := map[string]string{}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		f[lines[i]] = lines[i+1]
	}
	return f
}

// records splits a flattened array of field/value arrays (SENTINEL
// REPLICAS as Do renders it) into one map per element; each starts with
// the field "name".
func records(out string) []map[string]string {
	var recs []map[string]string
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		if lines[i] == "name" {
			recs = append(recs, map[string]string{})
		}
		if len(recs) > 0 {
			recs[len(recs)-1][lines[i]] = lines[i+1]
		}
	}
	return recs
}

// infoFields parses the "key:value" lines of INFO.
func infoFields(info string) map[string]string {
	f := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	return f
}
