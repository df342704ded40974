package ratelimit

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/pool"
)

// renewItem is one key's part of a renewal batch.
type renewItem struct {
	key    string
	renew  []string // tokens held
	remove []string // tokens abandoned
}

// renewChunk bounds the leases (renewed or removed) of one renewal
// pipeline, each under its own Timeout: Redis runs a lease's share of the
// script in some µs, so a chunk ends well within any Timeout, where one
// pipeline for every lease of a process holding thousands of keys did not
// (and failed every time, letting them all lapse).
const renewChunk = 256

// renew is the renewal timer's work, every LeaseTTL/3: pipelined calls (on
// the background lane) of one script per key this process holds or
// abandoned leases of, at most renewChunk leases per call. A lease found
// gone (expired and taken, or lost by Redis) is taken back if its key has
// room, else counted as Lost. With no lease held it sends nothing.
func (s *Semaphore) renew(ctx context.Context) {
	batch := s.renewBatch()
	if len(batch) == 0 {
		return
	}
	var err error
	for _, chunk := range renewChunks(batch) {
		if ctx.Err() != nil {
			s.abandonAll(chunk) // kept for a release's sake; nothing renews after the close
			continue
		}
		if cerr := s.renewOne(ctx, chunk); err == nil {
			err = cerr
		}
	}
	if err == nil && ctx.Err() == nil {
		s.stats.renewals.Add(1)
	} else if ctx.Err() == nil {
		s.redisError("renewal failed; leases not renewed expire after LeaseTTL", err)
	}
}

// renewChunks cuts batch into chunks of at most renewChunk leases; a key
// with more is split, its removals first (see semRenewScript).
func renewChunks(batch []renewItem) [][]renewItem {
	var chunks [][]renewItem
	var cur []renewItem
	n := 0
	for _, it := range batch {
		for {
			if n == renewChunk {
				chunks = append(chunks, cur)
				cur, n = nil, 0
			}
			if room := renewChunk - n; len(it.remove)+len(it.renew) > room {
				part := renewItem{key: it.key}
				k := min(len(it.remove), room)
				part.remove, it.remove = it.remove[:k:k], it.remove[k:]
				part.renew, it.renew = it.renew[:room-k:room-k], it.renew[room-k:]
				chunks = append(chunks, append(cur, part))
				cur, n = nil, 0
				continue
			}
			cur = append(cur, it)
			n += len(it.remove) + len(it.renew)
			break
		}
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// abandonAll queues the removals of items for the next renewal.
func (s *Semaphore) abandonAll(items []renewItem) {
	for _, it := range items {
		for _, tok := range it.remove {
			s.abandon(it.key, tok)
		}
	}
}

// renewOne sends one chunk and reads its answers.
func (s *Semaphore) renewOne(ctx context.Context, batch []renewItem) error {
	rctx, cancel := pool.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	cmds, err := s.runRenew(rctx, batch)
	var stray []renewItem // re-admitted after their holder released them
	for i, it := range batch {
		st, cerr := cmds[i].Int64Slice()
		if cerr != nil || len(st) != len(it.renew) {
			s.abandonAll(batch[i : i+1])
			if err == nil {
				err = cerr
			}
			continue
		}
		var back []string
		for j, v := range st {
			switch v {
			case 2:
				if s.holds(it.key, it.renew[j]) {
					s.stats.readmitted.Add(1)
				} else {
					back = append(back, it.renew[j])
				}
			case 0:
				if !s.holds(it.key, it.renew[j]) {
					// Released while the batch was on its way, and the
					// slot taken since: given back, not lost.
					continue
				}
				s.stats.lost.Add(1)
				s.logf(slog.LevelWarn, "ratelimit: semaphore: a lease held here was gone and its key full: its holder runs past its slot",
					"key", it.key)
			}
		}
		if len(back) > 0 {
			stray = append(stray, renewItem{key: it.key, remove: back})
		}
	}
	if len(stray) > 0 && ctx.Err() == nil {
		// A release raced the batch: its ZREM ran first and the renewal
		// took the slot back. Give it back now, not after LeaseTTL.
		if _, err := s.runRenew(rctx, stray); err != nil {
			s.abandonAll(stray)
		}
	}
	return err
}

// renewBatch takes what the next renewal sends: every held token, and the
// abandoned ones (which it forgets).
func (s *Semaphore) renewBatch() []renewItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := make([]renewItem, 0, len(s.held)+len(s.abandoned))
	idx := make(map[string]int, len(s.held))
	for key, m := range s.held {
		it := renewItem{key: key, renew: make([]string, 0, len(m))}
		for tok := range m {
			it.renew = append(it.renew, tok)
		}
		idx[key] = len(batch)
		batch = append(batch, it)
	}
	for key, toks := range s.abandoned {
		if i, ok := idx[key]; ok {
			batch[i].remove = toks
		} else {
			batch = append(batch, renewItem{key: key, remove: toks})
		}
	}
	clear(s.abandoned)
	s.nAbandoned = 0
	return batch
}

func (s *Semaphore) holds(key, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[key][token]
	return ok
}

// runRenew sends one renewal script per item in one pipeline, by SHA; the
// items whose node lacks the script (a restart, a failover) go again with
// its body, and only those: on a Redis Cluster the others ran already,
// and running them twice would hide a re-admission (the second run finds
// the lease present) from the caller's check for released leases.
func (s *Semaphore) runRenew(ctx context.Context, batch []renewItem) ([]*redis.Cmd, error) {
	send := func(items []int, body bool) ([]*redis.Cmd, error) {
		pipe := s.p.Background().Pipeline()
		cmds := make([]*redis.Cmd, len(items))
		now := s.nowArg()
		for i, j := range items {
			it := batch[j]
			args := make([]any, 0, 6+len(it.renew)+len(it.remove))
			args = append(args, now, s.ttlArg, s.limitArg, s.channel, it.key, strconv.Itoa(len(it.renew)))
			for _, t := range it.renew {
				args = append(args, t)
			}
			for _, t := range it.remove {
				args = append(args, t)
			}
			keys := []string{s.Key(it.key), s.markKey(it.key)}
			if body {
				cmds[i] = semRenewScript.Eval(ctx, pipe, keys, args...)
			} else {
				cmds[i] = semRenewScript.EvalSha(ctx, pipe, keys, args...)
			}
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	all := make([]int, len(batch))
	for i := range all {
		all[i] = i
	}
	cmds, err := send(all, false)
	var again []int
	for i, c := range cmds {
		if c.Err() != nil && strings.HasPrefix(c.Err().Error(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return cmds, err
	}
	cmds2, _ := send(again, true) // its error is one of its commands'
	for i, j := range again {
		cmds[j] = cmds2[i]
	}
	for _, c := range cmds {
		if c.Err() != nil {
			return cmds, c.Err()
		}
	}
	return cmds, nil
}
