package queue

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// cutProxy forwards TCP connections to a Redis and cuts a connection (both
// sides) when a client sends a request containing cutOn, as long as cuts
// is positive (each cut uses one).
type cutProxy struct {
	ln    net.Listener
	to    string
	cutOn []byte
	cuts  atomic.Int32
	cut   atomic.Int32 // connections cut so far
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, to string, cutOn string, cuts int) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, to: to, cutOn: []byte(cutOn)}
	p.cuts.Store(int32(cuts))
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.to)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(c, up)
			_ = c.Close()
		}()
		go func() {
			defer p.wg.Done()
			defer func() { _ = up.Close(); _ = c.Close() }()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if bytes.Contains(buf[:n], p.cutOn) && p.cuts.Add(-1) >= 0 {
						p.cut.Add(1)
						return
					}
					if _, werr := up.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// A connection cut while Start joins the heartbeat (a Redis blip during a
// deploy) does not fail the start: Start retries within its own bound.
func TestStartRetriesACutConnection(t *testing.T) {
	srv := redistest.Server(t)
	proxy := newCutProxy(t, srv.Addr(), "zadd", 1)
	p := mustPool(t, pool.Config{Addrs: []string{proxy.Addr()}})
	q := mustQueue(t, p, "cut", Config{})
	g := group(t)
	ran := make(chan string, 1)
	w, err := newWorker(t, q, func(ctx context.Context, j *Job) error { ran <- string(j.Payload); return nil }, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Start(g))
	require.Equal(t, int32(1), proxy.cut.Load(), "the connection was cut during the start")
	_, err = q.Enqueue(context.Background(), []byte("after the cut"))
	require.NoError(t, err)
	select {
	case got := <-ran:
		require.Equal(t, "after the cut", got)
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not run")
	}
}

// A Start that failed leaves nothing behind (no task, no reservation) and
// can be called again: here the blocking lane is full the first time.
func TestFailedStartCanBeRetried(t *testing.T) {
	p := miniPool(t, pool.Config{Blocking: pool.BlockingConfig{Size: 1}})
	other := lifecycle.New()
	a := mustQueue(t, p, "a", Config{})
	b := mustQueue(t, p, "b", Config{})
	h := func(context.Context, *Job) error { return nil }
	startWorker(t, other, a, h, WorkerConfig{})

	g := group(t)
	ran := make(chan struct{}, 1)
	wb, err := newWorker(t, b, func(context.Context, *Job) error { ran <- struct{}{}; return nil }, WorkerConfig{})
	require.NoError(t, err)
	require.ErrorIs(t, wb.Start(g), pool.ErrOverBudget)
	require.Empty(t, g.Tasks(), "the failed start left no task")

	require.NoError(t, other.Close(context.Background()))
	require.Zero(t, p.Stats().Blocking.Reserved)
	require.NoError(t, wb.Start(g), "the lane has room now")
	require.ErrorIs(t, wb.Start(g), ErrAlreadyStarted)
	_, err = b.Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not run")
	}
}

// A Start that cannot reach Redis within its bound fails saying that a retry
// is safe, holds nothing, and a later Start succeeds.
func TestStartAgainstADownRedisCanBeRetried(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for Start's bound")
	}
	srv := redistest.Server(t)
	p := mustPool(t, pool.Config{Addrs: []string{srv.Addr()}})
	q := mustQueue(t, p, "down", Config{})
	g := group(t)
	w, err := newWorker(t, q, func(context.Context, *Job) error { return nil }, WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, srv.Stop())
	err = w.Start(g)
	require.ErrorContains(t, err, "Start may be called again")
	require.Empty(t, g.Tasks())
	require.Zero(t, p.Stats().Blocking.Reserved)

	srv.Start()
	// Nothing of the failed start is left in the process either: a worker
	// with another heartbeat configuration can start on the same pool and
	// group (workers there share one heartbeat).
	other, err := newWorker(t, mustQueue(t, p, "other", Config{}), func(context.Context, *Job) error { return nil },
		WorkerConfig{}, ConsumerConfig{HeartbeatInterval: 5 * time.Second})
	require.NoError(t, err)
	require.NoError(t, other.Start(g))
	require.NoError(t, w.Start(group(t)), "the failed worker starts on retry")
}
