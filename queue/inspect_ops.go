package queue

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrJobGone: Inspector.Delete found the job no longer where its listing
// saw it (it ran, moved to another state, or was deleted). Nothing was
// deleted.
var ErrJobGone = errors.New("queue: job no longer there")

// maxHandleElem is the largest element a ready job's handle carries; a
// larger one (a Durable job keeps its payload in its element) is named by
// its position and digest instead.
const maxHandleElem = 16 << 10

func encodeHandle(state JobState, fields ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(string(state) + "|" + strings.Join(fields, "|")))
}

// readyHandle names a ready job: by its element, or, over maxHandleElem,
// by its position from the tail and the element's SHA-1.
// The position of a job of a priority level counts in its level's list
// (levels.go): "at|p<level>:<position>|<sum>".
func readyHandle(e string, off int64, level int) string {
	if len(e) <= maxHandleElem {
		return encodeHandle(StateReady, "e", e)
	}
	sum := sha1.Sum([]byte(e))
	return encodeHandle(StateReady, "at", levelField(level)+strconv.FormatInt(off, 10), hex.EncodeToString(sum[:]))
}

// Delete deletes the job a listing (Jobs) named by handle: a ready or
// delayed job (with its payload kept apart, its last error and its
// idempotency key, so its ID is free again, and the producers waiting for
// the room it leaves woken, see WaitForRoom), or a dead letter. It is one
// script that deletes only if the job is still where the listing saw it,
// else fails with ErrJobGone: a job that started running meanwhile is not
// deleted. A ready job over 16 KiB (Durable) is found by its position,
// which shifts as jobs are fetched: list again and retry on ErrJobGone.
// Deleting the pending occurrence of a schedule stops the schedule until
// a process registers it again.
func (in *Inspector) Delete(ctx context.Context, queue, handle string) error {
	k, err := in.keysOf(queue)
	if err != nil {
		return fmt.Errorf("queue: inspector: delete: %w", err)
	}
	b, err := base64.RawURLEncoding.DecodeString(handle)
	if err != nil || handle == "" {
		return fmt.Errorf("queue: inspector: delete: %w: handle %q is not one of a listing", ErrInvalidArgument, preview([]byte(handle)))
	}
	st, rest, _ := strings.Cut(string(b), "|")
	switch JobState(st) {
	case StateReady:
		err = in.deleteReady(ctx, k, rest)
	case StateDelayed:
		err = in.deleteDelayed(ctx, k, rest)
	case StateDead:
		err = in.deleteDead(ctx, k, rest)
	default:
		err = fmt.Errorf("%w: handle of state %q: only ready, delayed and dead jobs are deleted", ErrInvalidArgument, st)
	}
	if err != nil {
		return fmt.Errorf("queue: inspector: delete from %q: %w", queue, err)
	}
	return nil
}

// deleteDead deletes the dead letter of a handle "<died at>|<dead ID>",
// only if the dead ID still died at that time.
func (in *Inspector) deleteDead(ctx context.Context, k keys, rest string) error {
	score, id, _ := strings.Cut(rest, "|")
	if err := checkScore(score); err != nil || id == "" {
		return fmt.Errorf("%w: malformed handle", ErrInvalidArgument)
	}
	n, err := deleteDeadScript.Run(ctx, in.p.Client(), []string{k.deadIdx, k.deadData, k.payloads, k.deadRefs}, id, score).Int()
	if err == nil && n == 0 {
		err = fmt.Errorf("%w: dead letter %s", ErrJobGone, id)
	}
	return err
}

func (in *Inspector) deleteReady(ctx context.Context, k keys, rest string) error {
	kind, v, _ := strings.Cut(rest, "|")
	elem := v
	switch kind {
	case "e":
	case "g": // in a partition (parts.go): "<tag>|<member prefix>"
		score, prefix, _ := strings.Cut(v, "|")
		if err := checkScore(score); err != nil || prefix == "" {
			return fmt.Errorf("%w: malformed handle", ErrInvalidArgument)
		}
		elem, err := locateScript.Run(ctx, in.p.Client(), []string{k.fair()}, score, prefix).Text()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("%w: %s", ErrJobGone, preview([]byte(prefix)))
		}
		if err != nil {
			return err
		}
		return in.deleteElem(ctx, k, k.fair(), "part", elem)
	case "at":
		off, sum, _ := strings.Cut(v, "|")
		level, off, err := cutLevel(off)
		if err != nil {
			return fmt.Errorf("%w: malformed handle", ErrInvalidArgument)
		}
		n, err := strconv.ParseInt(off, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: malformed handle", ErrInvalidArgument)
		}
		elem, err = in.p.Client().LIndex(ctx, k.readyAt(level), -(n + 1)).Result()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("%w: no job at position %d", ErrJobGone, n)
		}
		if err != nil {
			return err
		}
		if got := sha1.Sum([]byte(elem)); hex.EncodeToString(got[:]) != sum {
			return fmt.Errorf("%w: another job is at position %d now", ErrJobGone, n)
		}
	default:
		return fmt.Errorf("%w: malformed handle", ErrInvalidArgument)
	}
	env, _ := decodeEnvelope([]byte(elem)) // a malformed one is level 0's
	return in.deleteElem(ctx, k, k.readyAt(env.level), "list", elem)
}

func (in *Inspector) deleteDelayed(ctx context.Context, k keys, rest string) error {
	score, prefix, _ := strings.Cut(rest, "|")
	if err := checkScore(score); err != nil || prefix == "" {
		return fmt.Errorf("%w: malformed handle", ErrInvalidArgument)
	}
	elem, err := locateScript.Run(ctx, in.p.Client(), []string{k.delayed}, score, prefix).Text()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: %s", ErrJobGone, preview([]byte(prefix)))
	}
	if err != nil {
		return err
	}
	return in.deleteElem(ctx, k, k.delayed, "zset", elem)
}

// deleteElem runs deleteJobScript on elem, which the caller read: the
// script deletes it only if it is still there.
func (in *Inspector) deleteElem(ctx context.Context, k keys, from, kind, elem string) error {
	env, derr := decodeEnvelope([]byte(elem))
	ks := []string{from, k.payloads, k.lastErr(env.id)}
	if derr != nil {
		ks[2] = k.lastErr("") // no job has an empty ID: nothing to delete
	}
	if env.unique {
		ks = append(ks, k.unique(env.id))
	}
	if kind == "part" || kind == "zset" {
		ks = append(ks, k.partKeys()...)
	}
	ks = append(ks, k.waitersKey(), k.partWaiters())
	n, err := deleteJobScript.Run(ctx, in.p.Client(), ks, kind, elem, env.ref, k.roomChannel()).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrJobGone, env.id)
	}
	return nil
}

// queue returns a Queue value for a queue of the namespace, for the
// operations a Queue already has.
func (in *Inspector) queue(name string) (*Queue, error) {
	if _, err := in.keysOf(name); err != nil {
		return nil, err
	}
	return New(in.p, name, Config{Namespace: in.ns})
}

// Requeue moves dead letters of queue back to its ready list (see
// Queue.Requeue; ids are ListedJob.ID of a dead listing).
func (in *Inspector) Requeue(ctx context.Context, queue string, ids ...string) (int, error) {
	q, err := in.queue(queue)
	if err != nil {
		return 0, fmt.Errorf("queue: inspector: requeue: %w", err)
	}
	return q.Requeue(ctx, ids...)
}

// Purge deletes the dead letters of queue (see Queue.Purge).
func (in *Inspector) Purge(ctx context.Context, queue string) (int, error) {
	q, err := in.queue(queue)
	if err != nil {
		return 0, fmt.Errorf("queue: inspector: purge: %w", err)
	}
	return q.Purge(ctx)
}

// Get says where the job id of queue is and what Redis holds of it (see
// Queue.Get: the same lookup, its bounds and its errors).
func (in *Inspector) Get(ctx context.Context, queue, id string) (JobInfo, error) {
	q, err := in.queue(queue)
	if err != nil {
		return JobInfo{}, fmt.Errorf("queue: inspector: get: %w", err)
	}
	return q.Get(ctx, id)
}

// Cancel cancels the job id of queue, waiting or running (see
// Queue.Cancel).
func (in *Inspector) Cancel(ctx context.Context, queue, id string) error {
	q, err := in.queue(queue)
	if err != nil {
		return fmt.Errorf("queue: inspector: cancel: %w", err)
	}
	return q.Cancel(ctx, id)
}
