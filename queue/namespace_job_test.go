package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// A queue and its jobs say which namespace they are of: metrics and logs
// keep apart two queues of one name in two namespaces by it.
func TestQueueAndJobNamespace(t *testing.T) {
	p := miniPool(t, pool.Config{})
	require.Equal(t, DefaultNamespace, mustQueue(t, p, "mail", Config{}).Namespace())
	q := mustQueue(t, p, "mail", Config{Namespace: "tenant1"})
	require.Equal(t, "tenant1", q.Namespace())
	_, err := q.Enqueue(context.Background(), []byte("x"))
	require.NoError(t, err)
	got := make(chan [2]string, 1)
	startWorker(t, group(t), q, func(_ context.Context, j *Job) error {
		select {
		case got <- [2]string{j.Namespace, j.Queue}:
		default:
		}
		return nil
	}, WorkerConfig{})
	require.Equal(t, [2]string{"tenant1", "mail"}, recv(t, got, 10*time.Second, "the job's run"))
}
