package queue

import "time"

// JobState is where a job is: waiting to run, running, dead, or done.
type JobState string

// The states of a job (see JobInfo).
const (
	StateReady   JobState = "ready"   // waiting on the ready list
	StateDelayed JobState = "delayed" // waiting for its due time, or to retry
	StateRunning JobState = "running" // fetched by a consumer, not yet acked
	StateDead    JobState = "dead"    // in the dead letters
	StateDone    JobState = "done"    // finished and its result or ID window is still kept
	// StateCancelled: cancelled (Queue.Cancel) and dropped; reported for
	// 10 minutes after the cancel.
	StateCancelled JobState = "cancelled"
)

// JobInfo describes one job as Redis holds it (Queue.Get, the Inspector).
type JobInfo struct {
	ID          string    `json:"id"`
	Queue       string    `json:"queue"`
	Type        string    `json:"type,omitempty"`      // the Type option
	Partition   string    `json:"partition,omitempty"` // the Partition option
	Priority    int       `json:"priority,omitempty"`  // the Priority option's level
	State       JobState  `json:"state"`
	Attempt     int       `json:"attempt"` // failed runs so far
	MaxAttempts int       `json:"max_attempts"`
	Deliveries  int       `json:"deliveries"`
	EnqueuedAt  time.Time `json:"enqueued_at"`
	Due         time.Time `json:"due,omitzero"`       // StateDelayed: when it becomes ready
	Consumer    string    `json:"consumer,omitempty"` // StateRunning: the consumer holding it
	LastError   string    `json:"last_error,omitempty"`
	Progress    []byte    `json:"progress,omitempty"`
	Result      []byte    `json:"result,omitempty"`
	Payload     []byte    `json:"payload,omitempty"`
	DiedAt      time.Time `json:"died_at,omitzero"` // StateDead
}

// Per-job keys, all in the queue's hash slot. Each one is written only for
// jobs that use the feature and carries a TTL.

// progress holds the last value a handler reported (Job.Progress).
func (k keys) progress(id string) string { return k.tag + ":progress:" + id }

// result holds a finished job's result (opt-in).
func (k keys) result(id string) string { return k.tag + ":result:" + id }

// resultRun names the run whose result keys.result holds (markerValue),
// written with it: Wait tells its job's result from a later job's of the
// ID by it. Not an end key: a result without it (an older version's) is
// taken as Wait's job's.
func (k keys) resultRun(id string) string { return k.tag + ":resultrun:" + id }

// lastErr holds the error of a job's last failed run while it waits to retry.
func (k keys) lastErr(id string) string { return k.tag + ":err:" + id }

// endKeys are what a job leaves under its ID when it ends or while it
// runs: its result, progress, cancel marker and last error. An enqueue that
// takes the ID (its idempotency key) deletes them in the same script, so a
// reused ID never reports the end of an earlier job as its own (Wait, Get).
// The scripts find them right after the idempotency key in KEYS (u+1 to
// u+4).
func (k keys) endKeys(id string) []string {
	return []string{k.result(id), k.progress(id), k.cancelMarker(id), k.lastErr(id)}
}
