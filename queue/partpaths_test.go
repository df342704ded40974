package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// A Durable partitioned job is in its partition on the replica when
// Enqueue returns (due now, and delayed); the partition's bounds and the ID
// option hold as without Durable, and a refusal writes nothing.
func TestPartitionDurable(t *testing.T) {
	master, replica := replicated(t)
	p := mustPool(t, pool.Config{Addrs: []string{master.Addr()}, ReadTimeout: 15 * time.Second})
	q := mustQueue(t, p, "jobs", Config{MaxPartitionLen: 2})
	ctx := context.Background()
	on := func(r interface {
		Do(context.Context, ...string) (string, error)
	}, args ...string) string {
		v, err := r.Do(ctx, args...)
		require.NoError(t, err)
		return v
	}
	dur := Durable(1, 10*time.Second)

	_, err := q.Enqueue(ctx, []byte("now"), Partition("a"), dur)
	require.NoError(t, err)
	require.Equal(t, "1", on(replica, "ZCARD", q.k.fair()), "in the fair set on the replica when Enqueue returns")
	require.Equal(t, "1", on(replica, "HGET", q.k.partLen(), "a"))

	id, err := q.Enqueue(ctx, []byte("later"), Partition("a"), dur, Delay(time.Hour), ID("d1"))
	require.NoError(t, err)
	require.Equal(t, "d1", id)
	require.Equal(t, "1", on(replica, "ZCARD", q.k.delayed))
	require.Equal(t, "2", on(replica, "HGET", q.k.partLen(), "a"), "a delayed job counts from its enqueue")
	_, err = q.Enqueue(ctx, []byte("later"), Partition("a"), dur, Delay(time.Hour), ID("d1"))
	require.ErrorIs(t, err, ErrDuplicate)

	_, err = q.Enqueue(ctx, []byte("over"), Partition("a"), dur)
	require.ErrorIs(t, err, ErrPartitionFull)
	require.ErrorIs(t, err, ErrQueueFull)
	require.Equal(t, "1", on(master, "ZCARD", q.k.fair()), "nothing written by the refusal")
	require.Equal(t, "2", on(master, "HGET", q.k.partLen(), "a"))
	checkPartCounts(t, q)

	// Without a replica: written on the master, in its partition.
	require.NoError(t, replica.Stop())
	id, err = q.Enqueue(ctx, []byte("alone"), Partition("b"), Durable(1, 50*time.Millisecond))
	require.ErrorIs(t, err, ErrNotReplicated)
	require.NotEmpty(t, id)
	require.Equal(t, "2", on(master, "ZCARD", q.k.fair()))
	checkPartCounts(t, q)
	require.ElementsMatch(t, []string{"now", "alone"}, takeFor(t, q, "c1", 10))
}
