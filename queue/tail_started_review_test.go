package queue

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// TailStarted given twice: the last one counts (as for every TailOption).
// A fn that ends Tail's ctx ends it cleanly: nil, and its registration
// removed.
func TestTailStartedLastOneEndsTail(t *testing.T) {
	p := miniPool(t, pool.Config{})
	in, err := NewInspector(p, "")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var first, last int
	err = in.Tail(ctx, []string{"q"}, func(TailEvent) {},
		TailStarted(func() { first++ }), TailStarted(func() { last++; cancel() }))
	require.NoError(t, err)
	require.Equal(t, 0, first, "replaced by the last TailStarted")
	require.Equal(t, 1, last)
	n, err := p.Client().ZCard(context.Background(), "{bq}:tails").Result()
	require.NoError(t, err)
	require.Zero(t, n, "unregistered")
}
