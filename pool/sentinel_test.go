package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// TestSentinel runs the pool on a master, a replica and three sentinels
// and switches the master twice over: by SIGKILL, and by SENTINEL FAILOVER.
// A caller writes every 10ms throughout; every acknowledged write is
// recorded (SADD) and looked for on the final master.
func TestSentinel(t *testing.T) {
	t.Run("MasterKilled", func(t *testing.T) {
		s := redistest.Sentinel(t)
		p, res, before := sentinelPool(t, s)
		s.WaitReplicated(context.Background()) // or the last writes die with the master
		old := s.Master(context.Background())
		old.Kill()
		r := followSwitch(t, s, p, res, old.Addr(), before)
		// Replication is asynchronous: had the master been killed before
		// its replica had the writes, they would be lost (see doc.go).
		// Here it had them, and a dead master acknowledges nothing more.
		require.Zero(t, r.lost, "acknowledged writes lost")
		require.Positive(t, r.failedFast, "calls failed fast while the master was gone")
	})
	t.Run("SentinelFailover", func(t *testing.T) {
		s := redistest.Sentinel(t)
		p, res, before := sentinelPool(t, s)
		s.WaitReplicated(context.Background())
		old := s.Master(context.Background())
		s.Failover(context.Background())
		r := followSwitch(t, s, p, res, old.Addr(), before)
		// SENTINEL FAILOVER does not stop the old master's writes before it
		// promotes the replica: what the old master acknowledged in between
		// is lost when it becomes a replica. Counted, not asserted.
		t.Logf("acknowledged writes lost in the switch: %d", r.lost)
		require.True(t, p.Healthy(), "a master turned replica answers READONLY: Redis is up")
	})
}

// sentinelPool builds a pool on s, checks that every lane and a reservation
// work and that their sentinel sockets are counted apart, and writes 100
// acknowledged entries.
func sentinelPool(t *testing.T, s *redistest.RedisSentinel) (*Pool, *Reservation, int) {
	ctx := context.Background()
	h := newCountingHook()
	p := newPool(t, Config{Addrs: s.SentinelAddrs(), MasterName: s.MasterName(), Hooks: []redis.Hook{h}})
	res, err := p.ReserveBlocking("fetcher", 1)
	require.NoError(t, err)
	require.NoError(t, p.Client().Set(ctx, "k", "v", 0).Err())
	require.NoError(t, p.Background().Set(ctx, "k", "v", 0).Err())
	require.ErrorIs(t, res.Client().BLPop(ctx, 10*time.Millisecond, "nothing").Err(), redis.Nil)
	sets, _ := h.count("SET")
	blpops, _ := h.count("BLPOP")
	require.Equal(t, []int{2, 1}, []int{sets, blpops}, "Config.Hooks on every lane of a Sentinel pool")
	st := p.Stats()
	require.Equal(t, 3, st.Open, "one socket to the master per client")
	require.Equal(t, uint64(3), st.Request.Dials+st.Background.Dials+st.Blocking.Dials, "sentinel dials are not the lanes'")
	// Each client asks a sentinel for the master and subscribes there to
	// +switch-master: two sockets, counted apart. The sentinels see them.
	require.Equal(t, 2, st.Request.SentinelOpen)
	require.Equal(t, 2, st.Background.SentinelOpen)
	require.Equal(t, 2, st.Blocking.SentinelOpen)
	require.Equal(t, 2, st.Blocking.Reservations[0].SentinelOpen)
	require.Equal(t, 6, st.SentinelOpen)
	seen := 0
	for _, n := range s.Sentinels() {
		clients, err := n.Clients(ctx)
		require.NoError(t, err)
		for _, c := range clients {
			if strings.Contains(c, " name=bounded-") {
				seen++
			}
		}
	}
	require.Equal(t, st.SentinelOpen, seen, "sockets the sentinels see")
	// And go-redis runs three goroutines per client, as doc.go says.
	require.Equal(t, 3, goroutinesIn("(*sentinelFailover).listen"))
	require.Equal(t, 3, goroutinesIn("(*channel).initHealthCheck"))
	require.Equal(t, 3, goroutinesIn("(*channel).initMsgChan"))
	for i := range 100 {
		require.NoError(t, p.Client().SAdd(ctx, "acked", i).Err())
	}
	return p, res, 100
}

type switchResult struct {
	lost       int
	failedFast int
}

// followSwitch writes through p every 10ms until the sentinels name a master
// other than old and p has written to it, then checks that every lane
// serves it and counts the acknowledged writes missing on it.
func followSwitch(t *testing.T, s *redistest.RedisSentinel, p *Pool, res *Reservation, old string, acked int) switchResult {
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(redistest.DefaultSentinelWait)
	var switchedAt, followedAt time.Time
	var r switchResult
	var errs []string
	afterFollow := 0
	for i := acked; afterFollow < 20; i++ {
		require.False(t, time.Now().After(deadline), "the pool did not follow the switch; errors %q, health %+v", errs, p.Health())
		if switchedAt.IsZero() {
			if addr, err := s.MasterAddr(ctx); err == nil && addr != old {
				switchedAt = time.Now()
			}
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := p.Client().SAdd(cctx, "acked", i).Err()
		cancel()
		switch {
		case err == nil:
			acked++
			if !switchedAt.IsZero() && followedAt.IsZero() {
				// On the new master? (The old one, in a SENTINEL FAILOVER,
				// may take writes until it is turned into a replica.)
				if v, err := s.Master(ctx).Do(ctx, "SISMEMBER", "acked", fmt.Sprint(i)); err == nil && v == "1" {
					followedAt = time.Now()
				}
			}
			if !followedAt.IsZero() {
				afterFollow++
			}
		case errors.Is(err, ErrUnavailable):
			r.failedFast++
		case len(errs) == 0 || errs[len(errs)-1] != err.Error():
			errs = append(errs, err.Error())
		}
		time.Sleep(10 * time.Millisecond) // a caller writing every 10ms, not a wait
	}
	s.WaitReady(redistest.DefaultSentinelWait)
	m := s.Master(ctx)
	require.NotEqual(t, old, m.Addr())
	n, err := m.Do(ctx, "SCARD", "acked")
	require.NoError(t, err)
	var present int
	_, err = fmt.Sscan(n, &present)
	require.NoError(t, err)
	r.lost = acked - present
	require.GreaterOrEqual(t, r.lost, 0)

	// The other lanes follow too (the first call on a socket to the old
	// master may fail; a dead socket is found when it is used).
	succeedsWithinThreeTries := func(what string, call func() error) {
		var err error
		for range 3 {
			if err = call(); err == nil {
				return
			}
		}
		t.Fatalf("%s after the switch: %v", what, err)
	}
	succeedsWithinThreeTries("background lane", func() error { return p.Background().SAdd(ctx, "acked", "background").Err() })
	succeedsWithinThreeTries("reservation", func() error {
		if err := res.Client().LPush(ctx, "jobs", "j").Err(); err != nil {
			return err
		}
		return res.Client().BLPop(ctx, time.Second, "jobs").Err()
	})
	if v, err := m.Do(ctx, "SISMEMBER", "acked", "background"); err != nil || v != "1" {
		t.Fatalf("the background lane's write is not on the new master: %q %v", v, err)
	}
	t.Logf("sentinels named the new master %s after the trigger; the pool wrote to it %s after that; %d acknowledged writes, %d calls failed fast, other errors %q",
		switchedAt.Sub(start).Round(time.Millisecond), followedAt.Sub(switchedAt).Round(time.Millisecond), acked, r.failedFast, errs)
	return r
}

// goroutinesIn counts the goroutines whose stack mentions fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
