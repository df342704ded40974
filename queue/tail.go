package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/pool"
)

// Live outcomes for an operator (Inspector.Tail, boundedctl tail), at no
// cost per job while nobody follows them.
//
// A follower registers the queues it follows in the namespace's tails set
// (member = "<queue> <follower>", score = unix ms until which the
// registration holds; a queue name has no space), renewed while it follows. Every heartbeat (one per process and
// HeartbeatInterval) already sends a pipeline to the namespace's slot; it
// reads the live registrations in that pipeline and tells each worker
// whether its queue is followed. A followed worker's acker publishes the
// outcomes it wrote, one message per pipeline of acks (at most
// maxAckBatch outcomes), on the queue's tail channel. So:
//   - nobody follows: one ZRANGEBYSCORE of an empty key per heartbeat and
//     process, nothing per job;
//   - somebody follows: one PUBLISH per ack pipeline of a followed queue;
//   - a follower sees outcomes from at most one HeartbeatInterval after it
//     registered, and publishing stops at most tailTTL plus one interval
//     after it left without saying so.
// Other designs were measured against this one: a PUBLISH per outcome for
// everybody (a command per job), keyspace notifications (a server setting,
// and they do not say which job), PUBSUB NUMSUB (per node on Redis
// Cluster, so a worker cannot learn of a follower on another node).

// tailTTL is how long a registration holds unless renewed; a follower
// renews it every tailTTL/3.
const tailTTL = 30 * time.Second

// MaxTailQueues is the most queues one Tail follows.
const MaxTailQueues = 100

// maxTailRegistrations is the most live registrations (followed queues of
// all followers) a namespace holds: a heartbeat reads that many, and a
// registration past it is refused (tailRegisterScript) rather than left
// unseen.
const maxTailRegistrations = MaxTailQueues * 10

// tailEventMax caps the error text of an event.
const tailEventMax = 512

func tailsKey(namespace string) string { return "{" + namespace + "}:tails" }

// tailChannel carries the outcomes of a followed queue.
func (k keys) tailChannel() string { return k.tag + ":tail" }

// TailEvent is one outcome of a job, as Inspector.Tail delivers it.
type TailEvent struct {
	Queue   string    `json:"queue"`
	ID      string    `json:"id"`
	Outcome string    `json:"outcome"` // "done", "retry" or "dead"
	At      time.Time `json:"at"`      // when the worker wrote it
	// Error is the failed run's error (retry) or the dead letter's reason
	// (dead), at most 512 bytes.
	Error   string    `json:"error,omitempty"`
	RetryAt time.Time `json:"retry_at,omitzero"` // retry: when the next attempt is due
	// Attempts is the runs a dead job had.
	Attempts int `json:"attempts,omitempty"`
}

// tailState is a worker's side of the tail: whether its queue is followed
// (set by the heartbeat), and the outcomes written since the last publish
// (the acker's own).
type tailState struct {
	on  atomic.Bool
	buf []TailEvent
}

// tailNote reads the live registrations in the heartbeat's pipeline.
func (n *node) tailNote(ctx context.Context, pipe redis.Pipeliner, now time.Time) *redis.StringSliceCmd {
	return pipe.ZRangeByScore(ctx, tailsKey(n.c.cfg.Namespace), &redis.ZRangeBy{
		Min: strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf", Count: maxTailRegistrations,
	})
}

// tailTolerate is the heartbeat pipeline's error, unless the tail read
// alone failed: following is for watching, and must not stop the heartbeat
// from finding dead consumers. Its workers then publish nothing.
func (n *node) tailTolerate(cmds []redis.Cmder, tailCmd redis.Cmder, err error) error {
	if err == nil || tailCmd.Err() == nil {
		return err
	}
	for _, c := range cmds {
		if c != tailCmd && c.Err() != nil && !errors.Is(c.Err(), redis.Nil) {
			return err
		}
	}
	n.log.Debug("queue: reading the tail registrations failed", "err", tailCmd.Err())
	return nil
}

// applyTails tells every attached worker whether its queue is followed.
func (n *node) applyTails(names []string) {
	followed := make(map[string]bool, len(names))
	for _, m := range names {
		name, _, _ := strings.Cut(m, " ")
		followed[name] = true
	}
	for _, m := range n.attached() {
		if w, ok := m.(*Worker); ok {
			w.tail.on.Store(followed[w.q.name])
		}
	}
}

// tailWritten notes an outcome Redis wrote, while the queue is followed.
func (w *Worker) tailWritten(op ackOp) {
	if !w.tail.on.Load() || op.kind == ackDrop || len(w.tail.buf) >= maxAckBatch*2 {
		return
	}
	ev := TailEvent{Queue: w.q.name, ID: op.id, At: w.q.cfg.Now()}
	switch op.kind {
	case ackDone:
		ev.Outcome = "done"
	case ackRetry:
		ev.Outcome, ev.RetryAt = "retry", op.due
		if op.x != nil {
			ev.Error = tailText(op.x.lastErr)
		}
	case ackDead:
		ev.Outcome, ev.Error, ev.Attempts = "dead", tailText(op.reason), op.attempts
		if ev.ID == "" {
			ev.ID = op.deadID
		}
	}
	w.tail.buf = append(w.tail.buf, ev)
}

// tailText is an error text cut to tailEventMax bytes, its mark of the cut
// included, between runes.
func tailText(s string) string {
	if len(s) <= tailEventMax {
		return s
	}
	const mark = "... (truncated)"
	n := tailEventMax - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// tailPublish publishes the outcomes noted since the last call, in one
// message. A failed publish is dropped: the tail is for watching, and
// nothing waits on it.
func (w *Worker) tailPublish(ctx context.Context) {
	if len(w.tail.buf) == 0 {
		return
	}
	b, err := json.Marshal(w.tail.buf)
	w.tail.buf = w.tail.buf[:0]
	if err == nil {
		err = w.q.p.Background().Publish(ctx, w.q.k.tailChannel(), b).Err()
	}
	if err != nil {
		w.log.Debug("queue: publishing outcomes to a tail failed", "err", err)
	}
}

// ErrTailLost: Tail's subscription failed; outcomes after it were missed.
var ErrTailLost = errors.New("queue: tail subscription lost")

// Tail calls fn with the outcomes of the given queues' jobs (done, retry,
// dead) as workers of this version write them, until ctx ends (then it
// returns nil) or its subscription fails (ErrTailLost). Workers learn that
// a queue is followed at their next heartbeat (ConsumerConfig.
// HeartbeatInterval, 10 s by default): outcomes before that are not
// delivered. fn runs on Tail's goroutine; a slow fn delays the reading,
// and Redis disconnects a subscriber that falls too far behind
// (client-output-buffer-limit pubsub), which ends Tail with ErrTailLost.
//
// Tail holds one connection of the pool's blocking lane while it runs
// (pool.Pool.ReserveBlocking), and renews its registration every 10 s.
// At most MaxTailQueues queues, and at most 10*MaxTailQueues live
// registrations (queues followed, all followers of the namespace together:
// what a heartbeat reads); past that Tail fails at once, "too many
// followers", rather than follow unseen.
//
// Its start (the subscription, confirmed by the server, and the
// registration) is bounded by ctx only, unless TailStartTimeout bounds it;
// TailStarted says when it is done.
func (in *Inspector) Tail(ctx context.Context, queues []string, fn func(TailEvent), opts ...TailOption) error {
	var tc tailConfig
	for _, o := range opts {
		if o != nil {
			o(&tc)
		}
	}
	if len(queues) == 0 || len(queues) > MaxTailQueues {
		return fmt.Errorf("queue: inspector: tail: %w: 1..%d queues, got %d", ErrInvalidArgument, MaxTailQueues, len(queues))
	}
	channels := make([]string, len(queues))
	byChannel := make(map[string]string, len(queues))
	for i, name := range queues {
		k, err := in.keysOf(name)
		if err != nil {
			return fmt.Errorf("queue: inspector: tail: %w", err)
		}
		channels[i] = k.tailChannel()
		byChannel[channels[i]] = name
	}
	res, err := in.p.ReserveBlocking("queue inspector tail", 1)
	if err != nil {
		return fmt.Errorf("queue: inspector: tail: %w", err)
	}
	defer func() { _ = res.Release() }()
	startCtx, endStart := ctx, context.CancelFunc(func() {})
	if tc.startTimeout > 0 {
		startCtx, endStart = context.WithTimeout(ctx, tc.startTimeout)
	}
	defer endStart()
	sub, err := res.Subscribe(startCtx, channels...)
	if err != nil {
		return tc.startErr(ctx, startCtx, err)
	}
	// go-redis does not interrupt a read when ctx ends: closing does.
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	defer func() {
		stop()
		_ = sub.Close()
	}()
	follower := newID(in.now())
	members := make([]string, len(queues))
	for i, q := range queues {
		members[i] = q + " " + follower
	}
	if err := in.tailRegister(startCtx, members); err != nil {
		return tc.startErr(ctx, startCtx, err)
	}
	endStart()
	defer in.tailUnregister(ctx, members)
	if tc.started != nil {
		tc.started()
	}
	return in.tailRead(ctx, sub, members, byChannel, fn)
}

// A TailOption configures Inspector.Tail.
type TailOption func(*tailConfig)

type tailConfig struct {
	startTimeout time.Duration
	started      func()
}

// TailStarted makes Tail call fn once it follows: its subscription
// confirmed by the server and its registration written, before the first
// event. fn runs on Tail's goroutine, at most once; a Tail whose start
// fails never calls it. Given more than once, the last one counts (as for
// every TailOption).
func TailStarted(fn func()) TailOption {
	return func(c *tailConfig) { c.started = fn }
}

// TailStartTimeout bounds Tail's start: the subscription (a connection,
// and the server's confirmation) and the registration, not what follows.
// A start that does not finish within d fails with an error that matches
// context.DeadlineExceeded. d <= 0: the start is bounded by ctx only.
func TailStartTimeout(d time.Duration) TailOption {
	return func(c *tailConfig) { c.startTimeout = d }
}

// startErr is the error of a start that failed: one that ran out its
// TailStartTimeout (and not ctx) says so and matches
// context.DeadlineExceeded, whatever the pool's error was (an I/O timeout
// of the socket deadline the start's context set).
func (c tailConfig) startErr(ctx, startCtx context.Context, err error) error {
	// The socket's deadline may fire a moment before startCtx reports it.
	over := func(ctx context.Context) bool {
		dl, ok := ctx.Deadline()
		return ctx.Err() != nil || ok && !time.Now().Before(dl)
	}
	switch {
	case !over(startCtx) || over(ctx):
		return fmt.Errorf("queue: inspector: tail: %w", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("queue: inspector: tail: not following within %v: %w", c.startTimeout.Round(time.Millisecond), err)
	}
	return fmt.Errorf("queue: inspector: tail: not following within %v: %w: %w", c.startTimeout.Round(time.Millisecond), context.DeadlineExceeded, err)
}

func (in *Inspector) tailRead(ctx context.Context, sub *pool.Subscription, members []string, byChannel map[string]string, fn func(TailEvent)) error {
	renew := in.now().Add(tailTTL / 3)
	for {
		msg, err := sub.ReceiveTimeout(ctx, max(renew.Sub(in.now()), time.Millisecond))
		if ctx.Err() != nil {
			return nil
		}
		var nerr interface{ Timeout() bool }
		switch {
		case errors.As(err, &nerr) && nerr.Timeout():
		case err != nil:
			return fmt.Errorf("queue: inspector: tail: %w: %w", ErrTailLost, err)
		default:
			if m, ok := msg.(*redis.Message); ok && byChannel[m.Channel] != "" {
				var evs []TailEvent
				if json.Unmarshal([]byte(m.Payload), &evs) == nil {
					for _, ev := range evs {
						if ctx.Err() != nil { // fn may have ended it
							return nil
						}
						fn(ev)
					}
				}
			}
		}
		if ctx.Err() != nil { // fn may have ended it
			return nil
		}
		if !in.now().Before(renew) {
			if err := in.tailRegister(ctx, members); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("queue: inspector: tail: renewing: %w", err)
			}
			renew = in.now().Add(tailTTL / 3)
		}
	}
}

// tailRegisterScript drops the expired registrations, then adds (or
// renews) a follower's, unless the new ones would take the live count past
// the most a heartbeat reads: then it adds nothing and returns that count.
// The key expires with the last registration.
// KEYS: tails set. ARGV: now ms, until ms, ttl ms, the most, members...
var tailRegisterScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local live, added = redis.call('ZCARD', KEYS[1]), 0
for i = 5, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then added = added + 1 end
end
if live + added > tonumber(ARGV[4]) then return live end
for i = 5, #ARGV do redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return -1
`)

// tailRegister registers (or renews) a follower's members, and drops the
// registrations that expired.
func (in *Inspector) tailRegister(ctx context.Context, members []string) error {
	now := in.now()
	args := make([]any, 0, 4+len(members))
	args = append(args, now.UnixMilli(), now.Add(tailTTL).UnixMilli(), tailTTL.Milliseconds(), maxTailRegistrations)
	for _, m := range members {
		args = append(args, m)
	}
	k := tailsKey(in.ns)
	live, err := tailRegisterScript.Run(ctx, in.p.Client(), []string{k}, args...).Int()
	if err != nil {
		return err
	}
	if live >= 0 {
		return fmt.Errorf("too many followers: %d queue registrations are live in %s, %d more would pass the %d the heartbeats read", live, k, len(members), maxTailRegistrations)
	}
	return nil
}

// tailUnregister removes a follower's registrations, so publishing stops
// at the next heartbeat unless another follows the queue.
func (in *Inspector) tailUnregister(ctx context.Context, members []string) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	ms := make([]any, len(members))
	for i, m := range members {
		ms[i] = m
	}
	_ = in.p.Client().ZRem(uctx, tailsKey(in.ns), ms...).Err()
}
