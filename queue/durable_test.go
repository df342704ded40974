package queue

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// replicated starts a master and a replica in sync with it.
func replicated(t testing.TB) (master, replica *redistest.Redis) {
	master = redistest.ServerWith(t, redistest.Options{Args: []string{"--repl-diskless-sync-delay", "0"}})
	port := strings.TrimPrefix(master.Addr(), "127.0.0.1:")
	replica = redistest.ServerWith(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", port}})
	testutil.Eventually(t, 10*time.Second, "the replica in sync", func() bool {
		info, err := replica.Do(context.Background(), "INFO", "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	return master, replica
}

// With Durable, Enqueue returns once the replica has the job: it is there
// the moment Enqueue returns, whichever write the job took (LPUSH, the
// unique script, the schedule script, each sent first as EVALSHA to a
// server without the script).
func TestDurableEnqueueReturnsWhenTheReplicaHasTheJob(t *testing.T) {
	master, replica := replicated(t)
	p := mustPool(t, pool.Config{Addrs: []string{master.Addr()}, ReadTimeout: 15 * time.Second})
	q := mustQueue(t, p, "jobs", Config{})
	ctx := context.Background()
	count := func(args ...string) string {
		v, err := replica.Do(ctx, args...)
		require.NoError(t, err)
		return v
	}
	// A generous WAIT timeout: WAIT returns as soon as the replica has the
	// write, and 1s was missed on a loaded 2-core CI machine.
	dur := Durable(1, 10*time.Second)

	_, err := q.Enqueue(ctx, []byte("plain"), dur)
	require.NoError(t, err)
	require.Equal(t, "1", count("LLEN", q.k.ready), "on the replica when Enqueue returns")

	id, err := q.Enqueue(ctx, []byte("unique"), dur, ID("u1"))
	require.NoError(t, err)
	require.Equal(t, "u1", id)
	require.Equal(t, "2", count("LLEN", q.k.ready))
	id, err = q.Enqueue(ctx, []byte("unique"), dur, ID("u1"))
	require.ErrorIs(t, err, ErrDuplicate)
	require.Equal(t, "u1", id)

	_, err = q.Enqueue(ctx, []byte("later"), dur, Delay(time.Hour))
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, []byte("later"), dur, Delay(time.Hour), ID("d1"))
	require.NoError(t, err)
	require.Equal(t, "2", count("ZCARD", q.k.delayed))

	_, err = q.EnqueueBatch(ctx, [][]byte{[]byte("a")}, dur)
	require.ErrorContains(t, err, "the Durable option applies to Enqueue only")

	// Without a replica, Enqueue says so after the timeout; the job is
	// written on the master.
	before, err := master.Do(ctx, "LLEN", q.k.ready) // the jobs and a wake marker
	require.NoError(t, err)
	require.NoError(t, replica.Stop())
	id, err = q.Enqueue(ctx, []byte("alone"), Durable(1, 50*time.Millisecond))
	require.ErrorIs(t, err, ErrNotReplicated)
	require.ErrorContains(t, err, "0 of 1 replicas within 50ms")
	require.NotEmpty(t, id)
	after, err := master.Do(ctx, "LLEN", q.k.ready)
	require.NoError(t, err)
	b, _ := strconv.Atoi(before)
	require.Equal(t, strconv.Itoa(b+1), after, "the job is on the master")
}

// A Durable job over 4 KiB keeps its payload inline (a payload written
// apart goes in a MULTI that cannot share the WAIT's pipeline): the replica
// has the whole job when Enqueue returns, and it runs.
func TestDurableLargePayloadIsReplicatedWhole(t *testing.T) {
	master, replica := replicated(t)
	p := mustPool(t, pool.Config{Addrs: []string{master.Addr()}, ReadTimeout: 15 * time.Second})
	q := mustQueue(t, p, "jobs", Config{})
	ctx := context.Background()
	big := []byte(strings.Repeat("x", 64<<10))
	_, err := q.Enqueue(ctx, big, Durable(1, 10*time.Second))
	require.NoError(t, err)
	elem, err := replica.Do(ctx, "LINDEX", q.k.ready, "0")
	require.NoError(t, err)
	require.Greater(t, len(elem), len(big), "the element carries the payload")
	n, err := replica.Do(ctx, "HLEN", q.k.payloads)
	require.NoError(t, err)
	require.Equal(t, "0", n, "nothing written apart")

	got := make(chan []byte, 1)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		got <- append([]byte(nil), j.Payload...)
		return nil
	}, WorkerConfig{Concurrency: 1})
	select {
	case pl := <-got:
		require.Equal(t, big, pl)
	case <-time.After(10 * time.Second):
		t.Fatal("the durable large job did not run")
	}
}

func TestDurableOptionIsValidated(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "jobs", Config{})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, []byte("x"), Durable(0, time.Second))
	require.ErrorContains(t, err, "Durable(0, 1s): replicas must be at least 1")
	_, err = q.Enqueue(ctx, []byte("x"), Durable(1, 0))
	require.ErrorContains(t, err, "timeout must be at least 1ms")

	m := redistest.Mini(t)
	cp := mustPool(t, pool.Config{Addrs: []string{m.Addr()}, ClusterMode: true})
	cq := mustQueue(t, cp, "jobs", Config{})
	_, err = cq.Enqueue(ctx, []byte("x"), Durable(1, time.Second))
	require.ErrorContains(t, err, "not supported on Redis Cluster")
	require.Zero(t, m.CommandCount(), "nothing was sent")
}

// BenchmarkDurableEnqueue compares Enqueue with and without Durable(1, 1s)
// on a master with one replica (loopback).
func BenchmarkDurableEnqueue(b *testing.B) {
	master, _ := replicated(b)
	p := mustPool(b, pool.Config{Addrs: []string{master.Addr()}})
	q := mustQueue(b, p, "jobs", Config{})
	ctx := context.Background()
	payload := make([]byte, 1024)
	for _, c := range []struct {
		name string
		opts []EnqueueOption
	}{{"plain", nil}, {"durable", []EnqueueOption{Durable(1, time.Second)}}} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				if _, err := q.Enqueue(ctx, payload, c.opts...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "enqueues/s")
			if _, err := master.Do(ctx, "DEL", q.k.ready); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestDurableEnqueueSurvivesSentinelFailover enqueues during a SENTINEL
// FAILOVER, alternating plain and Durable enqueues: the old master takes
// writes until the sentinels announce the switch, and loses them when it
// becomes a replica. Plain enqueues it acknowledged are lost; a Durable one
// it acknowledged without error reached the replica, which is now the
// master, so none of those is lost.
func TestDurableEnqueueSurvivesSentinelFailover(t *testing.T) {
	s := redistest.Sentinel(t)
	ctx := context.Background()
	p := mustPool(t, pool.Config{Addrs: s.SentinelAddrs(), MasterName: s.MasterName()})
	q := mustQueue(t, p, "jobs", Config{})
	old := s.Master(ctx).Addr()
	s.Failover(ctx)
	acked := map[string]bool{} // payload -> durable
	notReplicated := 0
	deadline := time.Now().Add(redistest.DefaultSentinelWait)
	afterSwitch, durableAfterSwitch := 0, 0
	for i := 0; afterSwitch < 50 || durableAfterSwitch < 5; i++ {
		require.False(t, time.Now().After(deadline), "no switch")
		durable := i%2 == 1
		payload := strconv.Itoa(i)
		var opts []EnqueueOption
		if durable {
			opts = append(opts, Durable(1, 100*time.Millisecond))
		}
		_, err := q.Enqueue(ctx, []byte(payload), opts...)
		switch {
		case err == nil:
			acked[payload] = durable
			if durable && afterSwitch > 0 {
				durableAfterSwitch++
			}
		case errors.Is(err, ErrNotReplicated):
			notReplicated++
		}
		if addr, err := s.MasterAddr(ctx); err == nil && addr != old {
			afterSwitch++
		}
		time.Sleep(5 * time.Millisecond) // a producer enqueueing every 5ms, not a wait
	}
	s.WaitReady(redistest.DefaultSentinelWait)
	out, err := s.Master(ctx).Do(ctx, "LRANGE", q.k.ready, "0", "-1")
	require.NoError(t, err)
	present := map[string]bool{}
	for _, elem := range strings.Split(out, "\n") {
		if e, err := decodeEnvelope([]byte(elem)); err == nil {
			present[string(e.payload)] = true
		}
	}
	lost := map[bool]int{}
	total := map[bool]int{}
	for payload, durable := range acked {
		total[durable]++
		if !present[payload] {
			lost[durable]++
		}
	}
	t.Logf("acknowledged and lost: plain %d of %d, durable %d of %d (%d durable enqueues answered ErrNotReplicated)",
		lost[false], total[false], lost[true], total[true], notReplicated)
	require.Zero(t, lost[true], "a Durable enqueue acknowledged without error survives the failover")
}
