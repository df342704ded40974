package redistest

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// BlackHole is a Redis that accepts connections, reads what it is sent and
// never answers: Redis too slow for any deadline. It returns the address;
// the listener and every connection close in t.Cleanup, and the goroutines
// serving them have exited when Cleanup returns.
func BlackHole(t testing.TB) string {
	t.Helper()
	h := listen(t, "black hole")
	h.serve(func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	return h.ln.Addr().String()
}

// BlackHoleAfter is a proxy to the Redis at upstream that forwards each
// connection (its close by the upstream too) until its client sends word (matched without regard to case
// in what one read returns, so "SUBSCRIBE" also stops PSUBSCRIBE): from
// then on that connection is a BlackHole, reading and never answering. It
// is a Redis whose commands work until one of them stalls (SUBSCRIBE: a
// proxy that does not speak Pub/Sub, a server too busy to confirm). It
// returns the address; everything closes in t.Cleanup, as for BlackHole.
func BlackHoleAfter(t testing.TB, upstream, word string) string {
	t.Helper()
	h := listen(t, "black hole after "+word)
	stop := bytes.ToUpper([]byte(word))
	h.serve(func(c net.Conn) {
		up, err := net.Dial("tcp", upstream)
		if err != nil {
			_ = c.Close()
			return
		}
		if !h.track(up) {
			return
		}
		// Until the word, the upstream's end is the client's (EOF, as on a
		// direct connection); after it, the connection stays silent.
		var mu sync.Mutex
		stalled := false
		h.wg.Go(func() {
			_, _ = io.Copy(c, up)
			mu.Lock()
			defer mu.Unlock()
			if !stalled {
				_ = c.Close()
			}
		})
		defer func() { _ = up.Close() }()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 && bytes.Contains(bytes.ToUpper(buf[:n]), stop) {
				mu.Lock()
				stalled = true
				mu.Unlock()
				_ = up.Close()
				_, _ = io.Copy(io.Discard, c)
				return
			}
			if n > 0 {
				if _, werr := up.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	return h.ln.Addr().String()
}

// hole is the listener of BlackHole and BlackHoleAfter with the
// connections it has made, all closed in t.Cleanup.
type hole struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func listen(t testing.TB, what string) *hole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: %s: %v", what, err)
	}
	h := &hole{ln: ln}
	t.Cleanup(func() {
		_ = ln.Close()
		h.mu.Lock()
		h.closed = true
		for _, c := range h.conns {
			_ = c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

// track keeps c to be closed at Cleanup; false (c closed) when Cleanup
// has run already.
func (h *hole) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		_ = c.Close()
		return false
	}
	h.conns = append(h.conns, c)
	return true
}

// serve accepts connections until Cleanup, each served by fn on a
// goroutine of its own.
func (h *hole) serve(fn func(c net.Conn)) {
	h.wg.Go(func() {
		for {
			c, err := h.ln.Accept()
			if err != nil {
				return // closed by Cleanup
			}
			if !h.track(c) {
				return
			}
			h.wg.Go(func() { fn(c) })
		}
	})
}
