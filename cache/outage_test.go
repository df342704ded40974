package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

func TestRedisRestartMidRun_Server(t *testing.T) {
	srv := redistest.ServerWith(t, redistest.Options{AppendOnly: true})
	testRedisRestartMidRun(t, serverBackend(srv), "restart", srv)
}

// testRedisRestartMidRun stops node (an append-only Redis, or the master of
// the cache's slot) under two instances of the cache, keeps it down until
// both subscribers have backed off to their longest retry delay, and starts
// it again.
//
// During the outage calls that need Redis fail fast with pool.ErrUnavailable
// (all but the pool's probes), a local hit still serves and a GetOrLoad miss
// calls its loader once. Afterwards callers and subscribers resume by
// themselves, the subscribers flush what they held (messages published
// meanwhile are lost), what Redis kept is served again, invalidation works
// both ways, and no goroutine is left over.
func testRedisRestartMidRun(t *testing.T, be backend, name string, node *redistest.Redis) {
	ctx := context.Background()
	cfg := be.cfg
	cfg.ProbeInterval = 50 * time.Millisecond
	logA, logB := &lockedBuffer{}, &lockedBuffer{}
	a := newCache(t, newPool(t, cfg), name, Config[string]{Logger: warnLogger(logA)})
	b := newCache(t, newPool(t, cfg), name, Config[string]{Logger: warnLogger(logB)})
	started(t, a)
	started(t, b)
	testutil.Eventually(t, testutil.Wait, "both subscribers to listen", func() bool { return a.Stats().Subscribed && b.Stats().Subscribed })
	require.NoError(t, a.Set(ctx, "held", "v1", time.Hour))
	require.NoError(t, a.Set(ctx, "kept", "v1", time.Hour))
	testutil.Eventually(t, testutil.Wait, "B to hear of the Sets", func() bool { return b.Stats().InvalidationsReceived == 2 })
	v, err := b.Get(ctx, "held")
	require.NoError(t, err)
	require.Equal(t, "v1", v)
	require.Equal(t, int64(1), b.Stats().LocalEntries, "B holds held, not kept")
	goroutines := runtime.NumGoroutine()

	require.NoError(t, node.Stop())
	stopped := time.Now()
	testutil.Eventually(t, testutil.Wait, "misses to fail fast", func() bool {
		_, err := b.Get(ctx, "missing")
		require.Error(t, err)
		require.NotErrorIs(t, err, ErrNotFound)
		return errors.Is(err, pool.ErrUnavailable)
	})
	fast := 0
	start := time.Now()
	for range 1000 {
		_, err := b.Get(ctx, "missing")
		require.Error(t, err)
		if errors.Is(err, pool.ErrUnavailable) {
			fast++
		}
	}
	perCall := time.Since(start) / 1000
	require.Greater(t, fast, 900, "all but the probes fail fast")
	// One probe per ProbeInterval at most: of two calls in a row, at least
	// one fails fast, and both fail.
	failFast(t, func() error { return b.Set(ctx, "x", "y", time.Minute) })
	failFast(t, func() error { return b.Delete(ctx, "x") })
	v, err = b.Get(ctx, "held")
	require.NoError(t, err, "a local hit serves without Redis")
	require.Equal(t, "v1", v)
	var loads atomic.Int32
	for range 10 {
		v, err := b.GetOrLoad(ctx, "during", func(context.Context) (string, error) {
			loads.Add(1)
			return "loaded", nil
		})
		require.NoError(t, err, "a miss goes to the loader")
		require.Equal(t, "loaded", v)
	}
	require.Equal(t, int32(1), loads.Load(), "and the loaded value is kept locally")

	// Stay down until both subscribers retry at their slowest: the worst
	// case for how soon they find Redis again.
	slowest := 2
	for retryMin<<(slowest-2) < retryMax {
		slowest++
	}
	testutil.Eventually(t, testutil.Wait, "the subscribers to back off all the way", func() bool {
		return bytes.Contains(logA.Bytes(), fmt.Appendf(nil, "failures=%d", slowest)) &&
			bytes.Contains(logB.Bytes(), fmt.Appendf(nil, "failures=%d", slowest))
	})
	require.False(t, a.Stats().Subscribed)
	require.False(t, b.Stats().Subscribed)

	node.Start()
	restarted := time.Now()
	var callsBack, subsBack time.Duration
	testutil.Eventually(t, testutil.Wait, "callers and subscribers to resume", func() bool {
		if callsBack == 0 {
			// B never held kept: this is Redis answering, with what it kept.
			if v, err := b.Get(ctx, "kept"); err == nil {
				require.Equal(t, "v1", v)
				callsBack = time.Since(restarted)
			}
		}
		if subsBack == 0 && a.Stats().Subscribed && b.Stats().Subscribed {
			subsBack = time.Since(restarted)
		}
		time.Sleep(time.Millisecond) // a caller's pace, not a hot loop
		return callsBack > 0 && subsBack > 0
	})
	t.Logf("down %s: a miss failed in %s with pool.ErrUnavailable (%d of 1000); calls answered again %s and both subscribers listened again %s after Redis was back",
		restarted.Sub(stopped).Round(time.Millisecond), perCall, fast, callsBack.Round(time.Millisecond), subsBack.Round(time.Millisecond))
	require.Equal(t, uint64(2), a.Stats().Subscribes)
	require.Equal(t, uint64(2), b.Stats().Subscribes)

	// Back, B dropped everything local, the value loaded while Redis was
	// away included: nobody could tell B about changes meanwhile.
	hits := b.Stats().RedisHits
	v, err = b.Get(ctx, "held")
	require.NoError(t, err)
	require.Equal(t, "v1", v)
	require.Equal(t, hits+1, b.Stats().RedisHits, "held came from Redis, not from before the outage")
	_, err = b.Get(ctx, "during")
	require.ErrorIs(t, err, ErrNotFound, "the value loaded during the outage was never in Redis")

	// Invalidation works both ways again.
	recvB, recvA := b.Stats().InvalidationsReceived, a.Stats().InvalidationsReceived
	require.NoError(t, a.Set(ctx, "held", "v2", time.Hour))
	testutil.Eventually(t, testutil.Wait, "B to hear of A's Set", func() bool { return b.Stats().InvalidationsReceived > recvB })
	v, err = b.Get(ctx, "held")
	require.NoError(t, err)
	require.Equal(t, "v2", v)
	_, err = a.Get(ctx, "kept")
	require.NoError(t, err)
	require.NoError(t, b.Set(ctx, "kept", "v2", time.Hour))
	testutil.Eventually(t, testutil.Wait, "A to hear of B's Set", func() bool { return a.Stats().InvalidationsReceived > recvA })
	v, err = a.Get(ctx, "kept")
	require.NoError(t, err)
	require.Equal(t, "v2", v)

	testutil.Eventually(t, testutil.Wait, "goroutines back to before", func() bool { return runtime.NumGoroutine() <= goroutines })
}

// failFast calls f twice in a row: both fail, and at least one (the pool lets
// one call through per probe interval) with pool.ErrUnavailable.
func failFast(t *testing.T, f func() error) {
	t.Helper()
	err1, err2 := f(), f()
	require.Error(t, err1)
	require.Error(t, err2)
	if !errors.Is(err1, pool.ErrUnavailable) {
		require.ErrorIs(t, err2, pool.ErrUnavailable)
	}
}

// lockedBuffer is a log sink for a test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Bytes returns a copy of what was written.
func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

func warnLogger(w *lockedBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
