package main

import (
	"context"
	"errors"
	"testing"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/stretchr/testify/require"
)

// refusingQueues is a queueSystem whose Enqueue fails: the warm-up job of
// startOneQueue can never run.
type refusingQueues struct{ closed bool }

func (q *refusingQueues) Enqueue(context.Context, int, []byte) error { return errRefused }
func (q *refusingQueues) EnqueueAll(context.Context, int, [][]byte) error {
	return errRefused
}
func (q *refusingQueues) Start(context.Context, func([]byte)) error { return nil }
func (q *refusingQueues) Stop(context.Context) error                { return nil }
func (q *refusingQueues) Left(context.Context) (int64, error)       { return 0, nil }
func (q *refusingQueues) Close() error                              { q.closed = true; return nil }

var errRefused = errors.New("enqueue refused")

// TestStartOneQueueReportsAFailedWarmUp: a warm-up job that could not be
// enqueued fails the run instead of starting the measurement without it
// (the error was assigned to a shadowed variable, staticcheck SA4006).
func TestStartOneQueueReportsAFailedWarmUp(t *testing.T) {
	sys := &refusingQueues{}
	mk := func(string, queueShape, *Run) (queueSystem, error) { return sys, nil }
	r := &Run{Redis: &Server{redis: new(redistest.Redis)}} // mk never dials
	_, _, err := startOneQueue(context.Background(), r, mk, 3)
	require.ErrorIs(t, err, errRefused)
	require.True(t, sys.closed, "the system is closed when its warm-up fails")
}
