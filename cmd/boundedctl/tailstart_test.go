package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/bounded-go/bounded/internal/testutil"
)

// stallSubscribe is a proxy to the Redis at upstream that forwards every
// connection until its client sends SUBSCRIBE: from then on the connection
// reads and never answers. A Redis whose commands work and whose Pub/Sub
// stalls (a proxy that does not speak it, a server too busy to confirm).
// The listener and the connections close in t.Cleanup, which returns once
// the goroutines serving them have exited.
func stallSubscribe(t *testing.T, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			_ = c.Close()
			return false
		}
		conns = append(conns, c)
		return true
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by Cleanup
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			if !track(c) || !track(up) {
				_ = c.Close()
				_ = up.Close()
				return
			}
			wg.Go(func() { _, _ = io.Copy(c, up) })
			wg.Go(func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if err != nil {
						_ = up.Close()
						return
					}
					if bytes.Contains(bytes.ToUpper(buf[:n]), []byte("SUBSCRIBE")) {
						_, _ = io.Copy(io.Discard, c) // stalled
						_ = up.Close()
						return
					}
					if _, err := up.Write(buf[:n]); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// --timeout bounds tail's whole start, the subscription included: against
// a Redis whose commands answer (the queue's lookup succeeds) and whose
// SUBSCRIBE is never confirmed, tail fails (exit 1) with an error that
// names the timeout, instead of waiting for ever.
func TestTailTimeoutBoundsSubscribe(t *testing.T) {
	m := redistest.Mini(t)
	_, err := mustQueue(t, mustPool(t, m.Addr()), "q").Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	addr := stallSubscribe(t, m.Addr())
	require.Equal(t, exitOK, ctl(t, nil, "--redis", "redis://"+addr, "stats", "q").code, "the proxy forwards commands")

	var stdout, stderr syncBuffer
	done := background(context.Background(), &stdout, &stderr, "--redis", "redis://"+addr, "--timeout", "300ms", "tail", "q")
	require.Equal(t, exitError, testutil.Recv(t, done, "tail to give up on a subscription never confirmed"), stderr.String())
	t.Log(stderr.String())
	require.Contains(t, stderr.String(), "did not start within --timeout 300ms")
	require.Contains(t, stderr.String(), "deadline exceeded")
	require.NotContains(t, stderr.String(), "following 1 queue(s)", "it never followed")
	require.Empty(t, stdout.String())
}

// tail says it follows only once it does: when "following" is written,
// its subscription is confirmed and its registration written.
func TestTailSaysFollowingOnceSubscribed(t *testing.T) {
	m := redistest.Mini(t)
	p := mustPool(t, m.Addr())
	ctx := context.Background()
	_, err := mustQueue(t, p, "q").Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdout, stderr syncBuffer
	done := background(tctx, &stdout, &stderr, "--redis", "redis://"+m.Addr(), "tail", "q")
	testutil.Eventually(t, testutil.Wait, "tail to say it follows", func() bool {
		return strings.Contains(stderr.String(), "following 1 queue(s)")
	})
	subs, err := p.Client().PubSubNumSub(ctx, "{bq:q}:tail").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, subs["{bq:q}:tail"], "subscribed")
	n, err := p.Client().ZCard(ctx, "{bq}:tails").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "registered")
	cancel()
	require.Equal(t, exitOK, testutil.Recv(t, done, "tail to stop"), stderr.String())
}
