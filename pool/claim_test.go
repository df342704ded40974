package pool

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClaimHoldsANameUntilReleased(t *testing.T) {
	p, err := New(Config{Addrs: []string{"127.0.0.1:1"}}) // never dialled
	require.NoError(t, err)
	defer p.Close()
	other, err := New(Config{Addrs: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	defer other.Close()

	release, ok := p.Claim("queue: consumer a")
	require.True(t, ok)
	again, ok := p.Claim("queue: consumer a")
	require.False(t, ok, "held")
	require.Nil(t, again)
	_, ok = p.Claim("queue: consumer b")
	require.True(t, ok, "another name")
	rel2, ok := other.Claim("queue: consumer a")
	require.True(t, ok, "another pool holds its own names")
	rel2()

	release()
	release() // a second call does nothing...
	second, ok := p.Claim("queue: consumer a")
	require.True(t, ok, "released")
	release() // ...even after the name was claimed again
	_, ok = p.Claim("queue: consumer a")
	require.False(t, ok, "the stale release freed the new claim")
	second()
}

func TestClaimOnceUnderContention(t *testing.T) {
	p, err := New(Config{Addrs: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	defer p.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 16 {
		wg.Go(func() {
			if _, ok := p.Claim("x"); ok {
				mu.Lock()
				won++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, won)
}
