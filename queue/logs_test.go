package queue

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	tu "github.com/bounded-go/bounded/internal/testutil"
	"github.com/bounded-go/bounded/pool"
)

// TestWorkerLogKeys: a worker's records name the queue, the consumer and
// the job once each (docs/logging.md), even when the queue's logger is
// the one the worker inherits.
func TestWorkerLogKeys(t *testing.T) {
	logs := tu.NewLogs()
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "mail", Config{Logger: logs.Logger().With("component", "queue")})
	g := group(t)
	w := startWorker(t, g, q, func(context.Context, *Job) error { return Permanent(errors.New("no")) }, WorkerConfig{})
	id, err := q.Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	tu.Eventually(t, tu.Wait, "the job dead-lettered", func() bool { return w.Stats().Dead == 1 })

	var dead *tu.LogRecord
	rs := logs.Records()
	for i, r := range rs {
		require.Empty(t, r.Duplicates(), "record with a duplicated key: %s", r)
		if r.Message == "queue: job sent to the dead letters" {
			dead = &rs[i]
		}
	}
	require.NotNil(t, dead, "no dead-letter record among %d", len(rs))
	values := map[string]string{}
	for _, a := range dead.Attrs {
		values[a.Key] = a.Value.String()
	}
	require.Equal(t, "mail", values["queue"])
	require.Equal(t, w.Stats().ConsumerID, values["consumer"])
	require.Equal(t, id, values["job"])
	require.Equal(t, "queue", values["component"], "the caller's own attributes are kept")
}
