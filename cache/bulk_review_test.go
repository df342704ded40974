package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// lostReply lets the bulk lock script run in Redis and then loses its reply,
// as a read that times out (the caller's deadline, the pool's ReadTimeout)
// after Redis ran the script does: the locks are taken, and the batch does
// not know it. cancel, if set, is called before the error is returned (the
// caller's context ending while it waited for the reply).
type lostReply struct {
	sha    string
	src    string // the script's source; lockManyScript if empty
	cancel context.CancelFunc
	err    error
}

func (h *lostReply) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) < 2 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
			return next(ctx, cmd)
		}
		src := h.src
		if src == "" {
			src = lockManyScript
		}
		if s, _ := args[1].(string); s != h.sha && s != src {
			return next(ctx, cmd)
		}
		if err := next(ctx, cmd); err != nil {
			return err // NOSCRIPT: the EVAL that follows runs it
		}
		if h.cancel != nil {
			h.cancel()
		}
		cmd.SetErr(h.err)
		return h.err
	}
}
func (h *lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A GetOrLoadMany whose lock script ran but whose reply never came back
// (the caller's deadline passing, or a read timeout, while Redis ran it)
// releases the locks the script may have taken: otherwise every other
// instance's GetOrLoad of those keys waits for LockTTL.
func TestGetOrLoadManyReleasesLocksOfALostLockReply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel bool
		err    error
	}{
		{name: "caller's deadline", cancel: true, err: context.DeadlineExceeded},
		{name: "read timeout", err: errors.New("i/o timeout")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := miniPool(t)
			p := newPool(t, pool.Config{Addrs: []string{m.Addr()}})
			c := newCache(t, p, "lostreply", Config[item]{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := &lostReply{sha: c.bulk.lock.Hash(), err: tc.err}
			if tc.cancel {
				h.cancel = cancel
			}
			p.Client().AddHook(h)
			_, _ = c.GetOrLoadMany(ctx, []string{"a", "b"}, func(_ context.Context, missing []string) (map[string]item, error) {
				out := map[string]item{}
				for _, k := range missing {
					out[k] = item{Name: k}
				}
				return out, nil
			})
			for _, k := range []string{"a", "b"} {
				require.False(t, m.Exists(c.lockKey(k)), "the lock of %q is left for LockTTL (%s)", k, c.cfg.LockTTL)
			}
		})
	}
}

// A bulk loader that panics (recovered by the caller, as net/http recovers a
// handler's panic) leaves no lock behind: the panic goes on to the caller,
// and the locks are released on the way.
func TestGetOrLoadManyLoaderPanicReleasesTheLocks(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "manypanic", Config[item]{})
	func() {
		defer func() {
			require.Equal(t, "loader bug", recover(), "the panic reaches the caller")
		}()
		_, _ = c.GetOrLoadMany(context.Background(), []string{"a", "b"}, func(context.Context, []string) (map[string]item, error) {
			panic("loader bug")
		})
	}()
	for _, k := range []string{"a", "b"} {
		require.False(t, m.Exists(c.lockKey(k)), "the lock of %q is left for LockTTL (%s)", k, c.cfg.LockTTL)
	}
	require.Zero(t, c.Stats().LoadsInFlight)
	// The next call loads at once instead of waiting for the locks.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second) // LockTTL is 12s
	defer cancel()
	got, err := c.GetOrLoad(ctx, "a", func(context.Context) (item, error) { return item{Name: "a"}, nil })
	require.NoError(t, err)
	require.Equal(t, "a", got.Name)
}

// scriptBytes records the request size of every call of one script.
type scriptBytes struct {
	sha, src string
	mu       sync.Mutex
	sizes    []int
}

func (h *scriptBytes) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *scriptBytes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) < 2 || (args[1] != h.sha && args[1] != h.src) || cmd.Name() == "script" {
			return next(ctx, cmd)
		}
		err := next(ctx, cmd)
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			return err // sent again as EVAL
		}
		n := 0
		for _, a := range args {
			switch a := a.(type) {
			case []byte:
				n += len(a)
			case string:
				n += len(a)
			default:
				n += len(fmt.Sprint(a))
			}
		}
		h.mu.Lock()
		h.sizes = append(h.sizes, n)
		h.mu.Unlock()
		return err
	}
}
func (h *scriptBytes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The values a GetOrLoadMany writes are split over fill scripts of at most
// about fillBytes each: one script holds Redis for its whole run, copying
// every value, and MaxBulkKeys values of MaxValueBytes (1 GiB by default)
// would also pass Redis's client-query-buffer-limit (1 GiB), which closes
// the connection, so the batch could never be cached and its locks would
// stay for LockTTL. Every value is still written, under its lock.
func TestGetOrLoadManyFillsInBoundedScripts(t *testing.T) {
	t.Run("mini", func(t *testing.T) {
		testFillsInBoundedScripts(t, backend{cfg: pool.Config{Addrs: []string{redistest.Mini(t).Addr()}}})
	})
	t.Run("server", func(t *testing.T) { testFillsInBoundedScripts(t, serverBackend(redistest.Server(t))) })
}

func testFillsInBoundedScripts(t *testing.T, be backend) {
	p := be.newPool(t)
	c := newCache(t, p, "bigfill", Config[[]byte]{})
	h := &scriptBytes{sha: c.bulk.fill.Hash(), src: fillManyScript}
	p.Client().AddHook(h)
	const n, size = 40, 100 << 10 // 4 MB in all
	keys := keysN("k", n)
	got, err := c.GetOrLoadMany(context.Background(), keys, func(_ context.Context, missing []string) (map[string][]byte, error) {
		out := map[string][]byte{}
		for _, k := range missing {
			out[k] = bytes.Repeat([]byte(k[:1]), size)
		}
		return out, nil
	})
	require.NoError(t, err)
	require.Len(t, got, n)
	ctx := context.Background()
	for _, k := range keys {
		require.EqualValues(t, 1, p.Client().Exists(ctx, c.RedisKey(k)).Val(), k)
		require.Zero(t, p.Client().Exists(ctx, c.lockKey(k)).Val(), k)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Greater(t, len(h.sizes), 1, "one script carried every value")
	for _, s := range h.sizes {
		require.LessOrEqual(t, s, fillBytes+size+64<<10, "a fill script of %d bytes", s)
	}
}

// A caller that gives up while its batch loads cancels the loader, gets an
// error matching its context's, and leaves no lock: a GetOrLoad of this
// process waiting for one of the keys is woken and loads it at once (it
// would otherwise check again only after its backoff, up to 500ms later).
func TestGetOrLoadManyCallerGivesUpMidBatch(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "manycancel", Config[item]{})
	started(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loading := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoadMany(ctx, []string{"a", "b"}, func(ctx context.Context, _ []string) (map[string]item, error) {
			close(loading)
			<-ctx.Done()
			return nil, ctx.Err()
		})
		errc <- err
	}()
	testutil.Recv(t, loading, "the batch to load")
	require.True(t, m.Exists(c.lockKey("a")))
	waiting := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(context.Background(), "a", func(context.Context) (item, error) { return item{Name: "a"}, nil })
		waiting <- err
	}()
	testutil.Eventually(t, testutil.Wait, "the GetOrLoad to wait for the batch's lock", func() bool { return c.Stats().LockWaits == 1 })
	cancel()
	require.ErrorIs(t, testutil.Recv(t, errc, "GetOrLoadMany"), context.Canceled)
	require.NoError(t, testutil.Recv(t, waiting, "the waiting GetOrLoad"))
	require.False(t, m.Exists(c.lockKey("b")))
	st := c.Stats()
	require.Zero(t, st.LoadErrors, "giving up is not a failed load")
	testutil.Eventually(t, testutil.Wait, "no load in flight", func() bool { return c.Stats().LoadsInFlight == 0 })
}

// A bulk loader that returns a nil map and no error found nothing: with
// NegativeTTL every key is cached as not found, and the result is empty.
func TestGetOrLoadManyNilMap(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "manynil", Config[item]{NegativeTTL: time.Minute})
	got, err := c.GetOrLoadMany(context.Background(), []string{"a", "b", "a"}, func(context.Context, []string) (map[string]item, error) {
		return nil, nil
	})
	require.NoError(t, err)
	require.Empty(t, got)
	for _, k := range []string{"a", "b"} {
		v, err := m.Get(c.RedisKey(k))
		require.NoError(t, err)
		require.Equal(t, notFoundMarker, v)
		require.False(t, m.Exists(c.lockKey(k)))
	}
}

// The same for GetOrLoad: a lock script that ran but whose reply was lost
// (a read timeout while a slow Redis ran it) makes the flight load without
// the lock and keep its value locally only; the lock it may hold is
// released, or every other instance waits on it for LockTTL.
func TestGetOrLoadReleasesTheLockOfALostLockReply(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "lostreply1", Config[item]{})
	h := &lostReply{err: errors.New("i/o timeout")}
	h.sha, h.src = c.scripts.lock.Hash(), lockScript
	p.Client().AddHook(h)
	v, err := c.GetOrLoad(context.Background(), "a", func(context.Context) (item, error) { return item{Name: "a"}, nil })
	require.NoError(t, err)
	require.Equal(t, "a", v.Name)
	require.False(t, m.Exists(c.lockKey("a")), "the lock is left for LockTTL (%s)", c.cfg.LockTTL)
}

// Long keys count toward a fill script's size too: 1,000 keys of
// MaxKeyBytes with tiny values are 24 MB of keys and messages.
func TestGetOrLoadManyFillCountsTheKeys(t *testing.T) {
	m, p := miniPool(t)
	c := newCache(t, p, "longkeys", Config[[]byte]{})
	h := &scriptBytes{sha: c.bulk.fill.Hash(), src: fillManyScript}
	p.Client().AddHook(h)
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("%05d", i) + strings.Repeat("k", MaxKeyBytes-5)
	}
	got, err := c.GetOrLoadMany(context.Background(), keys, func(_ context.Context, missing []string) (map[string][]byte, error) {
		out := map[string][]byte{}
		for _, k := range missing {
			out[k] = []byte("v")
		}
		return out, nil
	})
	require.NoError(t, err)
	require.Len(t, got, len(keys))
	for _, k := range keys {
		require.True(t, m.Exists(c.RedisKey(k)))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sizes {
		require.LessOrEqual(t, s, fillBytes+64<<10, "a fill script of %d bytes", s)
	}
}
