package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// A wake marker the fetcher takes while the worker stops may be dispatched
// after the scheduler already stopped (and handed over only what it knew):
// dropping it then would leave the delayed job it announced known to no
// live worker. Once the worker stops, the marker must stay in the
// processing list, for the drain to put back at the head of the ready list.
func TestWakeMarkerTakenWhileStoppingIsNotDropped(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "markerstop", Config{})
	w, err := newWorker(t, q, func(context.Context, *Job) error { return nil }, WorkerConfig{Concurrency: 1})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the worker is stopping
	for range 40 {
		w.slots <- struct{}{}
		w.dispatch(ctx, delivery{elem: wakeMarker})
		select {
		case op := <-w.acks:
			t.Fatalf("a marker taken while stopping was handed to the acker to be dropped (kind %d)", op.kind)
		default:
		}
	}
}

// EnqueueBatch writes payloads kept apart and the elements in one MULTI, in
// which a command that fails at run time (a key of the wrong type) does not
// stop the others. It must still write nothing: no payload without its job
// (kept forever, nothing deletes it), and no job without its payload.
func TestFailedBatchLeavesNothingBehind(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	c := p.Client()
	big := [][]byte{make([]byte, inlineMax+1), []byte("small"), make([]byte, inlineMax+2)}
	for _, tc := range []struct {
		name, wrong string // the key that holds a string
		opts        []EnqueueOption
	}{
		{"ready", "ready", nil},
		{"delayed", "delayed", []EnqueueOption{Delay(time.Hour)}},
		{"payloads now", "payloads", nil},
		{"payloads delayed", "payloads", []EnqueueOption{Delay(time.Hour)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := mustQueue(t, p, "failedbatch-"+strings.ReplaceAll(tc.name, " ", "-"), Config{})
			wrong := map[string]string{"ready": q.k.ready, "delayed": q.k.delayed, "payloads": q.k.payloads}[tc.wrong]
			require.NoError(t, c.Set(ctx, wrong, "foreign", 0).Err())
			_, err := q.EnqueueBatch(ctx, big, tc.opts...)
			require.Error(t, err)
			require.Contains(t, err.Error(), "WRONGTYPE")
			for _, k := range []string{q.k.ready, q.k.delayed, q.k.payloads} {
				if k == wrong {
					continue
				}
				if k == q.k.ready {
					// A wake marker the delayed batch pushed may stay:
					// it is no job.
					require.NoError(t, c.LRem(ctx, k, 0, wakeMarker).Err())
				}
				require.Zero(t, c.Exists(ctx, k).Val(), "%s was written by a batch that failed", k)
			}
		})
	}
}

// promoteScript moves due jobs in chunks sized by the largest element seen
// (after a first read of one), not one ZRANGEBYSCORE + LPUSH + ZREM per job.
func TestPromoteMovesSmallJobsInChunks(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "promotechunks", Config{})
	ctx := context.Background()
	c := p.Client()
	now := time.Now()
	zs := make([]redis.Z, 200)
	for i := range zs {
		e := envelope{id: fmt.Sprint("j", i), maxAttempts: 1, enqueuedAt: now, payload: []byte("x")}
		zs[i] = redis.Z{Score: float64(now.UnixMilli()), Member: e.encode()}
	}
	require.NoError(t, c.ZAdd(ctx, q.k.delayed, zs...).Err())
	_, err := srv.Do(ctx, "CONFIG", "RESETSTAT")
	require.NoError(t, err)
	res, err := promoteScript.Run(ctx, c, q.k.promoteKeys(), now.UnixMilli(), promoteLimit, "0").Int64Slice()
	require.NoError(t, err)
	require.Equal(t, []int64{200, -1}, res)
	s, err := srv.CommandStats(ctx)
	require.NoError(t, err)
	require.LessOrEqual(t, s["zrangebyscore"], int64(9), "ZRANGEBYSCORE calls to promote 200 small jobs")
	require.Equal(t, int64(200), c.LLen(ctx, q.k.ready).Val())
}

// cutSecondTx fails every MULTI with a script call after the first, as a
// connection cut before it was sent would.
type cutSecondTx struct{ txs atomic.Int32 }

func (h *cutSecondTx) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *cutSecondTx) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *cutSecondTx) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "evalsha" && h.txs.Add(1) > 1 {
				err := errors.New("connection cut")
				for _, c := range cmds {
					c.SetErr(err)
				}
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// An Enqueue of a payload kept apart that meets a Redis without its script
// (restarted, or a replica just promoted) wrote the payload in a MULTI
// whose script did not run; if the second try then fails, the payload of a
// job that does not exist must not stay behind forever.
func TestEnqueueAfterNoScriptLeavesNoPayloadWhenTheRetryFails(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "noscriptleak", Config{})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, make([]byte, inlineMax+1)) // loads the scripts
	require.NoError(t, err)
	require.NoError(t, p.Client().Del(ctx, q.k.ready, q.k.payloads).Err())
	_, err = srv.Do(ctx, "SCRIPT", "FLUSH")
	require.NoError(t, err)

	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	c.AddHook(&cutSecondTx{})
	pr, err := q.prepare(make([]byte, inlineMax+1), nil)
	require.NoError(t, err)
	_, err = q.enqueueApart(ctx, c, pr)
	require.ErrorContains(t, err, "connection cut")
	require.Zero(t, p.Client().Exists(ctx, q.k.payloads, q.k.ready).Val(), "a failed enqueue left its payload (or its job) behind")
}

// afterPurgeCall runs f once, after the first purge script call.
type afterPurgeCall struct {
	once sync.Once
	f    func()
}

func (h *afterPurgeCall) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *afterPurgeCall) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			if args := cmd.Args(); len(args) > 1 && (args[1] == purgeScript.Hash() || strings.Contains(fmt.Sprint(args[1]), "local drop")) {
				h.once.Do(h.f)
			}
		}
		return err
	}
}
func (h *afterPurgeCall) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Purge deletes the dead jobs there are when it starts. While it runs, other
// processes keep dead-lettering (and trimming the oldest once the dead
// letters are full): a job that died after Purge started is not deleted.
func TestPurgeSparesJobsThatDiedAfterItStarted(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "purgerace", Config{})
	ctx := context.Background()
	c := p.Client()
	old := time.Now().Add(-time.Hour)
	for i := range 150 {
		e := envelope{id: fmt.Sprint("old", i), maxAttempts: 1, enqueuedAt: old, payload: []byte("x")}
		ks, args := q.deadAddArgs(e.encode(), deadLetter{id: e.id, reason: "failed", attempts: 1})
		args[3] = old.Add(time.Duration(i) * time.Millisecond).UnixMilli()
		require.NoError(t, deadScript.Run(ctx, c, ks, args...).Err())
	}
	other := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer other.Close()
	var hookErr error
	fired := false
	c.AddHook(&afterPurgeCall{f: func() {
		// Another process trims 50 of the oldest and a new job dies.
		oldest, err := other.ZRange(ctx, q.k.deadIdx, 0, 49).Result()
		if err == nil {
			other.ZRem(ctx, q.k.deadIdx, oldest)
			other.HDel(ctx, q.k.deadData, oldest...)
		}
		e := envelope{id: "new", maxAttempts: 1, enqueuedAt: time.Now(), payload: []byte("x")}
		ks, args := q.deadAddArgs(e.encode(), deadLetter{id: e.id, reason: "failed", attempts: 1})
		hookErr = other.EvalSha(ctx, deadScript.Hash(), ks, args...).Err()
		fired = true
	}})
	_, err := q.Purge(ctx)
	require.NoError(t, err)
	require.True(t, fired)
	require.NoError(t, hookErr)
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1, "the job that died while Purge ran was purged")
	require.Equal(t, "new", dead[0].ID)
}

// afterHGet runs f once, after the first HGET of key.
type afterHGet struct {
	key  string
	once sync.Once
	f    func()
}

func (h *afterHGet) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *afterHGet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if args := cmd.Args(); cmd.Name() == "hget" && len(args) > 1 && args[1] == h.key {
			h.once.Do(h.f)
		}
		return err
	}
}
func (h *afterHGet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Requeue reads a dead letter, then moves it with a script. If in between
// the dead letter was trimmed and another job with the same ID died (its
// dead letter then takes the plain ID), Requeue must not delete that new
// dead letter (leaving its payload kept apart behind forever) to revive the
// trimmed one.
func TestRequeueDoesNotTakeADeadLetterThatReplacedTheOneItRead(t *testing.T) {
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "requeuerace", Config{})
	ctx := context.Background()
	c := p.Client()
	dieAs := func(c redis.Cmdable, id string, payload []byte, diedAt time.Time) {
		e := envelope{id: id, maxAttempts: 1, enqueuedAt: time.Now(), payload: payload}
		if len(payload) > inlineMax {
			e.ref, e.payload = newRef(), nil
			require.NoError(t, c.HSet(ctx, q.k.payloads, e.ref, payload).Err())
		}
		at := mustQueue(t, p, "requeuerace", Config{Now: func() time.Time { return diedAt }})
		ks, args := at.deadAddArgs(e.encode(), deadLetter{id: e.id, reason: "failed", attempts: 1})
		require.NoError(t, deadScript.Run(ctx, c, ks, args...).Err())
	}
	// Without a race, Requeue moves a dead letter.
	dieAs(c, "y", []byte("control"), time.Now().Add(-time.Hour))
	n, err := q.Requeue(ctx, "y")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, c.Del(ctx, q.k.ready).Err())

	dieAs(c, "x", []byte("first"), time.Now().Add(-time.Hour))
	other := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer other.Close()
	c.AddHook(&afterHGet{key: q.k.deadData, f: func() {
		// The first is trimmed; a second job "x" dies.
		other.ZRem(ctx, q.k.deadIdx, "x")
		other.HDel(ctx, q.k.deadData, "x")
		dieAs(other, "x", make([]byte, inlineMax+1), time.Now())
	}})
	_, err = q.Requeue(ctx, "x")
	require.ErrorIs(t, err, ErrNotFound)
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1, "the dead letter that replaced the one Requeue read is gone")
	require.Len(t, dead[0].Payload, inlineMax+1)
	require.Zero(t, c.LLen(ctx, q.k.ready).Val())
}

// A stable ConsumerID takes back the jobs of its previous life at start.
// That life died holding them, as a consumer a sweep recovers from did: each
// counts a delivery, and a job over MaxDeliveries goes to the dead letters,
// so a job that crashes its process cannot crash-loop a pod that restarts
// under the same ID (its list is never swept by others: it is alive again).
func TestStableConsumerIDCountsDeliveriesOfItsPreviousLife(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "stablepoison", Config{})
	fresh := envelope{id: "fresh", maxAttempts: 3, enqueuedAt: time.Now(), payload: []byte("fresh")}
	poison := envelope{id: "poison", maxAttempts: 3, deliveries: 2, enqueuedAt: time.Now(), payload: []byte("poison")}
	require.NoError(t, p.Client().LPush(ctx, q.k.proc("pod-0"), fresh.encode(), poison.encode()).Err())
	g := group(t)
	ran := make(chan Job, 2)
	w := startWorker(t, g, q, func(ctx context.Context, j *Job) error { ran <- *j; return nil },
		WorkerConfig{MaxDeliveries: 2}, ConsumerConfig{ConsumerID: "pod-0"})
	got := testutil.Recv(t, ran, "the fresh job")
	require.Equal(t, "fresh", got.ID)
	require.Equal(t, 1, got.Deliveries)
	testutil.Eventually(t, 10*time.Second, "the poison job dead", func() bool { return w.Stats().Dead == 1 })
	dead, err := q.Dead(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "poison", dead[0].ID)
	select {
	case j := <-ran:
		t.Fatalf("job %s ran again after %d deliveries (MaxDeliveries 2)", j.ID, j.Deliveries)
	default:
	}
}
