package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bounded-go/bounded/pool"
)

// A heartbeat interval of 1ms would send 1,000 pipelines a second per
// process: NewWorker refuses anything under MinHeartbeatInterval, naming
// the field (issue 13, also-fix list).
func TestHeartbeatIntervalHasAFloor(t *testing.T) {
	p := miniPool(t, pool.Config{})
	q := mustQueue(t, p, "hbfloor", Config{})
	h := func(context.Context, *Job) error { return nil }
	for _, d := range []time.Duration{time.Nanosecond, time.Millisecond, MinHeartbeatInterval - time.Millisecond} {
		_, err := NewWorker(q, h, WorkerConfig{HeartbeatInterval: d})
		require.ErrorContains(t, err, "queue: WorkerConfig.HeartbeatInterval must be at least 100ms, got "+d.String())
	}
	_, err := NewWorker(q, h, WorkerConfig{HeartbeatInterval: MinHeartbeatInterval})
	require.NoError(t, err)
}
