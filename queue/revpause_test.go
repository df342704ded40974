package queue

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// An operator's Inspector.Pause of a name the namespace never used (a typo)
// must say so, not answer nil and list a new, paused, queue that nothing
// will ever enqueue to while the queue meant keeps running.
func TestInspectorPauseOfUnknownQueue(t *testing.T) {
	p := miniPool(t, pool.Config{})
	ctx := context.Background()
	q := mustQueue(t, p, "emails", Config{})
	_, err := q.Enqueue(ctx, []byte("x"))
	require.NoError(t, err)
	in, err := NewInspector(p, "")
	require.NoError(t, err)

	err = in.Pause(ctx, "emials")
	require.ErrorIs(t, err, ErrUnknownQueue)
	require.ErrorContains(t, err, `"emials"`, "the error names the queue")
	page, err := in.Queues(ctx, "", 100)
	require.NoError(t, err)
	for _, qi := range page.Queues {
		require.NotEqual(t, "emials", qi.Name, "a refused pause registered the name")
	}
	paused, err := mustQueue(t, p, "emials", Config{}).Paused(ctx)
	require.NoError(t, err)
	require.False(t, paused)

	// A queue the namespace knows pauses; a paused one resumes even if the
	// registry forgot it (Resume never refuses).
	require.NoError(t, in.Pause(ctx, "emails"))
	paused, err = q.Paused(ctx)
	require.NoError(t, err)
	require.True(t, paused)
	require.NoError(t, in.Resume(ctx, "emails"))
	paused, err = q.Paused(ctx)
	require.NoError(t, err)
	require.False(t, paused)
}
