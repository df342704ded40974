package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// Pins the path of a payload kept apart that cannot be read (the fetch
// itself worked): that job alone is dropped from the deliveries, its slot is
// freed, the next reconcile is asked to put it back, and the failure counts
// as a fetch error unless ctx ended. The other elements of the fetch, an
// inline job and a wake marker, are still delivered with their slots.
func TestUnreadablePayloadFreesItsSlotAndAsksForReconcile(t *testing.T) {
	for _, stopped := range []bool{false, true} {
		p := miniPool(t, pool.Config{})
		q := mustQueue(t, p, "unread", Config{})
		w, err := newWorker(t, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 3})
		require.NoError(t, err)
		ctx := context.Background()
		_, err = q.Enqueue(ctx, make([]byte, inlineMax+1)) // kept apart
		require.NoError(t, err)
		_, err = q.Enqueue(ctx, []byte("small"))
		require.NoError(t, err)
		elems, err := p.Client().LRange(ctx, q.k.ready, 0, -1).Result()
		require.NoError(t, err)
		require.Len(t, elems, 2)
		elems = append(elems, wakeMarker)
		// HGET on a key of the wrong type fails with a reply error.
		require.NoError(t, p.Client().Del(ctx, q.k.payloads).Err())
		require.NoError(t, p.Client().Set(ctx, q.k.payloads, "x", 0).Err())

		require.False(t, w.needReconcile.Load())
		for range elems {
			w.slots <- struct{}{}
		}
		lctx, cancel := context.WithCancel(ctx)
		if stopped {
			cancel()
		}
		ds := w.loadPayloads(lctx, p.Client(), elems)
		cancel()

		require.Len(t, ds, 2, "stopped=%v", stopped)
		for _, d := range ds {
			require.NoError(t, d.err)
			require.Empty(t, d.env.ref, "the job kept apart is dropped")
			require.False(t, d.missing)
		}
		require.Equal(t, wakeMarker, ds[1].elem)
		require.Len(t, w.slots, 2, "the dropped job's slot is freed, the others are held")
		require.True(t, w.needReconcile.Load())
		want := uint64(1)
		if stopped {
			want = 0
		}
		require.Equal(t, want, w.Stats().FetchErrors, "stopped=%v", stopped)
	}
}

// Pins writeBatch's NOSCRIPT path, untested before the refactor: a delayed
// batch whose wake script Redis no longer has (SCRIPT FLUSH, a restart)
// loads the scripts and runs the MULTI again; the batch is written once,
// payloads kept apart included, and nothing is taken back.
func TestDelayedBatchAfterScriptFlushIsWrittenOnce(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "batchflush", Config{})
	ctx := context.Background()
	_, err := q.EnqueueBatch(ctx, [][]byte{[]byte("warm")}, Delay(time.Hour))
	require.NoError(t, err)
	require.NoError(t, p.Client().ScriptFlush(ctx).Err())
	ready := p.Client().LRange(ctx, q.k.ready, 0, -1).Val() // the first batch's wake marker

	ids, err := q.EnqueueBatch(ctx, [][]byte{[]byte("small"), make([]byte, inlineMax+1)}, Delay(time.Hour))
	require.NoError(t, err)
	require.Len(t, ids, 2)
	require.Equal(t, int64(3), p.Client().ZCard(ctx, q.k.delayed).Val())
	require.Equal(t, int64(1), p.Client().HLen(ctx, q.k.payloads).Val(), "the payload kept apart is written, once")
	require.Equal(t, ready, p.Client().LRange(ctx, q.k.ready, 0, -1).Val(), "no second wake marker within the wake TTL")
}

// Pins the room subscriber's quiet-connection path (receiveFailed on a
// timeout), untested before the refactor: after subscriberPing without a
// message it sends a PING on the subscription and, answered, keeps the
// subscription: no SUBSCRIBE again, still subscribed.
func TestRoomSubscriberPingsAQuietConnectionAndKeepsIt(t *testing.T) {
	p := serverPool(t, pool.Config{})
	q := mustQueue(t, p, "quiet", Config{MaxLen: 2})
	q.recheck = time.Hour
	require.NoError(t, q.Start(group(t)))
	r := q.room.Load()
	testutil.Eventually(t, testutil.Wait, "the room subscriber", func() bool { return r.subscribed.Load() })
	ctx := context.Background()
	testutil.Eventually(t, subscriberPing+testutil.Wait, "a PING on the quiet subscription", func() bool {
		for _, line := range strings.Split(p.Client().ClientList(ctx).Val(), "\n") {
			// sub=2: the room channel and the done channel (Queue.Wait).
			if strings.Contains(line, " sub=2 ") && strings.Contains(line, " cmd=ping ") {
				return true
			}
		}
		return false
	})
	require.True(t, r.subscribed.Load())
	stats := p.Client().Info(ctx, "commandstats").Val()
	require.Contains(t, stats, "cmdstat_subscribe:calls=1,", "the subscription was dropped and made again")
}
