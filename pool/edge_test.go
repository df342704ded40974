package pool

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/internal/redistest"
)

// A call that runs out its caller's own deadline says nothing about Redis:
// it must not mark Redis down, and its error matches
// context.DeadlineExceeded like every deadline error of the library.
func TestCallerDeadlineIsNotAFailure(t *testing.T) {
	srv := redistest.Server(t)
	p := newPool(t, Config{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	require.NoError(t, p.Ping(ctx))
	_, err := srv.Do(ctx, "CLIENT", "PAUSE", "1000", "ALL") // a slow but healthy Redis
	require.NoError(t, err)
	for range 20 {
		c, cancel := context.WithTimeout(ctx, 3*time.Millisecond)
		err := p.Client().Get(c, "k").Err()
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	require.True(t, p.Healthy(), "%+v", p.Health())
	require.Zero(t, p.Health().Failures)
}

// A dial whose caller gave up goes on inside go-redis and holds the lane's
// only connection slot; the next caller must wait for it (within its
// context), not fail with go-redis's "pool exhausted".
func TestDialOutlivingItsCaller(t *testing.T) {
	srv := redistest.Server(t)
	addr := slowTLSFront(t, srv.Addr(), 150*time.Millisecond)
	p := newPool(t, Config{Addrs: []string{addr}, TLSConfig: &tls.Config{InsecureSkipVerify: true}, Request: LaneConfig{Size: 1, MaxWait: time.Second}})

	a, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	errA := p.Client().Get(a, "k").Err()
	cancel()
	require.ErrorIs(t, errA, context.DeadlineExceeded)

	b, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := p.Client().Get(b, "k").Err()
	require.ErrorIs(t, err, redis.Nil, "the second caller gets the connection the first one's dial made")
	require.NotErrorIs(t, err, redis.ErrPoolExhausted)
}

// slowTLSFront is a TLS proxy to backend whose handshake takes delay.
func slowTLSFront(t *testing.T, backend string, delay time.Duration) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) { mu.Lock(); conns = append(conns, c); mu.Unlock() }
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Go(func() {
				defer c.Close()
				time.Sleep(delay)
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				b, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				track(b)
				defer b.Close()
				done := make(chan struct{})
				go func() { _, _ = io.Copy(b, c); b.Close(); close(done) }()
				_, _ = io.Copy(c, b)
				c.Close()
				select {
				case <-done:
				case <-time.After(10 * time.Second): // the copy ends when c closes; never hang
				}
			})
		}
	})
	return ln.Addr().String()
}

func TestCallerTimeoutWrapping(t *testing.T) {
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	timeout := &net.OpError{Op: "read", Err: osTimeout{}}
	require.ErrorIs(t, callerTimeout(past, timeout), context.DeadlineExceeded)
	require.Equal(t, timeout, callerTimeout(context.Background(), timeout), "no deadline: unchanged")
	other := errors.New("x")
	require.Equal(t, other, callerTimeout(past, other), "not a timeout: unchanged")
	require.Equal(t, outcomeNeutral, classify(past, timeout))
}

type osTimeout struct{}

func (osTimeout) Error() string   { return "i/o timeout" }
func (osTimeout) Timeout() bool   { return true }
func (osTimeout) Temporary() bool { return true }
