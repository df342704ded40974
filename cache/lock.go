package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/bounded-go/bounded/internal/backoff"
	"github.com/bounded-go/bounded/pool"
)

// Waiting for another instance's load: the holder publishes a note when it
// has written the value (or given up), and the waiters wake on it. A note
// can be lost (no subscriber running, a reconnect), so a waiter also checks
// again after a backoff that starts at lockWaitMin and doubles up to
// lockWaitMax, with equal jitter so that instances do not check in step,
// never later than the lock's expiry. A load of a second costs a waiter
// about eight checks without the note and one with it.
const (
	lockWaitMin = 5 * time.Millisecond
	lockWaitMax = 500 * time.Millisecond
)

// lockOrWait takes key's load lock, or waits until the instance holding it
// has written the value. It returns the value (done, with ErrNotFound for a
// negative entry), or the lock's token, or an error when Redis failed or ctx
// ended.
func (c *Cache[V]) lockOrWait(ctx context.Context, key string, gen uint64) (v V, done bool, token string, err error) {
	token = c.lockToken()
	keys := []string{c.RedisKey(key), c.lockKey(key)}
	lockMS := strconv.FormatInt(c.cfg.LockTTL.Milliseconds(), 10)
	recheck := backoff.Backoff{Min: lockWaitMin, Max: lockWaitMax}
	undecodable, waited := 0, false
	for {
		// Registered before the check, so a note published after it is not
		// missed.
		wake := c.addWaiter(key)
		start := c.clock()
		r, err := c.scripts.lock.Run(ctx, c.p.Client(), keys, token, lockMS).Slice()
		if err != nil {
			c.removeWaiter(key, wake)
			if ctx.Err() == nil {
				c.st.redisErrors.Add(1)
			}
			c.releaseUnknown(ctx, key, token, err)
			return v, false, "", err
		}
		switch state, _ := r[0].(int64); state {
		case lockTaken:
			c.removeWaiter(key, wake)
			return v, false, token, nil
		case lockValue:
			c.removeWaiter(key, wake)
			e, err := c.valueFromLock(ctx, key, r, start, gen)
			switch {
			case err == nil && e.notFound:
				return e.v, true, "", fmt.Errorf("cache %q: %q: %w", c.name, key, ErrNotFound)
			case err == nil:
				return e.v, true, "", nil
			case undecodable > 0:
				// Someone keeps writing values this instance cannot read
				// (an older deploy): load without Redis.
				return e.v, false, "", err
			}
			undecodable++
			continue // deleted: take the lock now
		}
		// Held by another instance: wait for its note, or check again. (Not
		// "the first attempt": that one may have found an undecodable value.)
		if !waited {
			waited = true
			c.st.lockWaits.Add(1)
		}
		if !c.awaitNote(ctx, key, wake, min(recheck.Next(), lockLeft(r))) {
			return v, false, "", ctx.Err()
		}
	}
}

// valueFromLock reads the value the lock script found ({1, value, pttl})
// and keeps it locally, as getRedis does. A value the codec cannot decode is
// deleted, and the error returned.
func (c *Cache[V]) valueFromLock(ctx context.Context, key string, r []any, start int64, gen uint64) (encoded[V], error) {
	data, _ := r[1].(string)
	pttl, _ := r[2].(int64)
	e, err := c.decode(key, []byte(data))
	if err != nil {
		c.dropUndecodable(ctx, key, []byte(data))
		return e, err
	}
	c.st.redisHits.Add(1)
	c.fillLocal(key, e, start, pttlDuration(pttl), gen)
	return e, nil
}

// lockLeft is how long the lock the script found held ({0, pttl}) has
// left, plus a millisecond: no waiter checks later than its expiry.
func lockLeft(r []any) time.Duration {
	if len(r) > 1 {
		if left, _ := r[1].(int64); left >= 0 {
			return time.Duration(left+1) * time.Millisecond
		}
	}
	return time.Duration(math.MaxInt64)
}

// awaitNote waits for the lock holder's note on wake, for d, or for ctx to
// end, and reports whether ctx is still live. It leaves the waiters.
func (c *Cache[V]) awaitNote(ctx context.Context, key string, wake chan struct{}, d time.Duration) bool {
	defer c.removeWaiter(key, wake)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
		return true
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// release gives up the load lock without a value and tells the waiters, so
// one of them takes over at once instead of at the lock's expiry.
func (c *Cache[V]) release(ctx context.Context, key, token string) {
	if token == "" {
		return
	}
	if _, err := c.fillLocked(ctx, key, nil, 0, token); err != nil {
		c.log.Warn("cache: could not release the load lock; it expires by itself", "key", key, "err", err)
	}
}

// releaseUnknown releases key's load lock after a lock script failed with
// err: the script may have run, and taken the lock, before its reply was
// lost (a read timeout while Redis ran it, the context ending meanwhile),
// and the waiters of every other instance would wait for it until LockTTL.
// A lock token does not hold is left alone. An error the pool returned
// without sending the command (Redis marked down, the lane exhausted) took
// nothing.
func (c *Cache[V]) releaseUnknown(ctx context.Context, key, token string, err error) {
	if !sent(err) {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	c.release(rctx, key, token)
}

// sent reports whether a command that failed with err may have reached
// Redis.
func sent(err error) bool {
	return !errors.Is(err, pool.ErrUnavailable) && !errors.Is(err, pool.ErrLaneExhausted)
}

// waiter is the flights waiting for one key's value: usually one, but a
// flight that Forget left running and the one started after it can wait
// together. They share the channel the note closes, and the entry stays
// until the last of them leaves.
type waiter struct {
	ch chan struct{}
	n  int // flights registered on ch
}

func (c *Cache[V]) addWaiter(key string) chan struct{} {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	w := c.waiters[key]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		c.waiters[key] = w
	}
	w.n++
	return w.ch
}

func (c *Cache[V]) removeWaiter(key string, ch chan struct{}) {
	c.waitMu.Lock()
	// After a wake the entry is gone (or is a newer one): nothing to do.
	if w := c.waiters[key]; w != nil && w.ch == ch {
		if w.n--; w.n == 0 {
			delete(c.waiters, key)
		}
	}
	c.waitMu.Unlock()
}

// wake wakes the flights waiting for key's value, if any.
func (c *Cache[V]) wake(key string) {
	c.waitMu.Lock()
	if w := c.waiters[key]; w != nil {
		close(w.ch)
		delete(c.waiters, key)
	}
	c.waitMu.Unlock()
}

// wakeAll wakes every waiting flight (after a flush: notes may have been
// lost).
func (c *Cache[V]) wakeAll() {
	c.waitMu.Lock()
	for k, w := range c.waiters {
		close(w.ch)
		delete(c.waiters, k)
	}
	c.waitMu.Unlock()
}
