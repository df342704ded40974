package cache

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
)

// Tags: a tagged write adds its key to one sorted set per tag,
// {c:<name>}:t:<tag>, scored by the key's expiry in Redis's own clock (so
// no instance's clock skew can make a membership end before its key), in
// the same Lua script that writes the value. InvalidateTag deletes every
// member's value and lock and publishes their invalidations. All of it
// shares the cache's hash tag, so it runs in the cache's slot on a Redis
// Cluster like everything else. See docs/cache.md, "Tags".

const (
	// DefaultMaxTagMembers is Config.MaxTagMembers's default.
	DefaultMaxTagMembers = 10_000
	// MaxTagBytes is the longest tag Tags accepts.
	MaxTagBytes = 1024
	// MaxTagsPerWrite is the most tags one write may carry: each costs a
	// few sorted-set commands inside the write's script.
	MaxTagsPerWrite = 32
	// tagChunk is how many members InvalidateTag deletes per round trip,
	// so that a tag of MaxTagMembers keys does not block Redis for one long
	// script, and one chunk's keys travel in a few 16 KiB messages.
	tagChunk = 256
)

// Option changes one call of Set or GetOrLoad.
type Option func(*callOptions)

type callOptions struct {
	tags []string
}

// Tags attaches tags to the value written: InvalidateTag(ctx, tag) removes
// it (from Redis and from every instance's local tier) until it expires.
// On GetOrLoad they go with the loaded value, if this call's flight loads
// it (callers that join a flight another caller started get that caller's
// tags). A tag is 1 to MaxTagBytes bytes, any bytes; a write takes at most
// MaxTagsPerWrite tags, duplicates counted once. A later write of the key
// without the tag does not take the key out of it: the membership lasts
// until the tagged write's TTL ends (InvalidateTag may remove a key more
// than asked, never less).
func Tags(tags ...string) Option {
	return func(o *callOptions) { o.tags = append(o.tags, tags...) }
}

// callOptions applies opts and checks them for op on key.
func (c *Cache[V]) callOptions(op, key string, opts []Option) (callOptions, error) {
	if len(opts) == 0 {
		// Before o: its address goes to the options, so it lives on
		// the heap, an allocation a call without options need not make.
		return callOptions{}, nil
	}
	var o callOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if len(o.tags) == 0 {
		return o, nil
	}
	uniq := o.tags[:0:0]
	for i, t := range o.tags {
		if t == "" || len(t) > MaxTagBytes {
			// Formatted only here: a call with good tags pays nothing.
			return o, c.checkTag(fmt.Sprintf("%s %q: tag %d of %d", op, key, i+1, len(o.tags)), t)
		}
		dup := false
		for _, u := range uniq {
			if u == t {
				dup = true
				break
			}
		}
		if !dup {
			uniq = append(uniq, t)
			if len(uniq) > MaxTagsPerWrite {
				// Stop here: the search for duplicates is quadratic.
				return o, fmt.Errorf("%w: cache %q: %s %q: more than %d distinct tags (of %d given), over MaxTagsPerWrite (%d)", ErrInvalid, c.name, op, key, MaxTagsPerWrite, len(o.tags), MaxTagsPerWrite)
			}
		}
	}
	o.tags = uniq
	return o, nil
}

// checkTag checks one tag; what says where it came from.
func (c *Cache[V]) checkTag(what, tag string) error {
	if tag == "" {
		return fmt.Errorf("%w: cache %q: %s: empty tag", ErrInvalid, c.name, what)
	}
	if len(tag) > MaxTagBytes {
		return fmt.Errorf("%w: cache %q: %s: tag %q... is %d bytes, over MaxTagBytes (%d)", ErrInvalid, c.name, what, tag[:32], len(tag), MaxTagBytes)
	}
	return nil
}

// checkTags fills and checks Config.MaxTagMembers.
func (c *Config[V]) checkTags(e *check.Errors) {
	check.Default(e, &c.MaxTagMembers, DefaultMaxTagMembers, "Config.MaxTagMembers")
	if c.TrackRawWrites && c.NoInvalidation {
		e.Addf("Config.TrackRawWrites needs the invalidation subscriber, which Config.NoInvalidation turns off")
	}
}

// tagKeys are the names of a cache's tag keys and its tag scripts.
type tagKeys struct {
	prefix      string // {c:<name>}:t:
	drainPrefix string // {c:<name>}:ti: the members of an InvalidateTag in progress
	epochPrefix string // {c:<name>}:te: how many InvalidateTags of the tag began lately
	write       *redis.Script
	drainStart  *redis.Script
}

func newTagKeys(hashTag string) tagKeys {
	return tagKeys{
		prefix:      hashTag + "t:",
		drainPrefix: hashTag + "ti:",
		epochPrefix: hashTag + "te:",
		write:       redis.NewScript(taggedWriteScript),
		drainStart:  redis.NewScript(tagDrainStartScript),
	}
}

// TagKey returns the Redis key of tag's member set.
func (c *Cache[V]) TagKey(tag string) string { return c.tags.prefix + tag }

func (c *Cache[V]) tagDrainKey(tag string) string { return c.tags.drainPrefix + tag }

func (c *Cache[V]) tagEpochKey(tag string) string { return c.tags.epochPrefix + tag }

// tagEpochTTL is how long a tag's epoch outlives its last InvalidateTag:
// longer than any load that may have read it before (a flight lasts at
// most LockTTL+LoadTimeout, its write writeTimeout more), twice over. An
// epoch that expired reads as none, which a load that read a number
// takes for a change: it does not write.
func (c *Cache[V]) tagEpochTTL() time.Duration {
	return 2 * (c.cfg.LockTTL + c.cfg.LoadTimeout + writeTimeout)
}

// Modes of taggedWriteScript.
const (
	writeSet      = "s" // a Set: overwrite, delete the load lock
	writeLocked   = "l" // a load's fill under its lock
	writeIfAbsent = "n" // a load's fill without the lock (Config.NoLock): SET NX
)

// taggedWriteScript writes a value and adds its key to its tags' sets in
// one atomic step, so no InvalidateTag sees the value without its tags or
// the tags without the value. It trims each set of members that expired,
// evicts the members that expire first when a set would hold more than
// ARGV[8] (deleting their values and locks and publishing their
// invalidations), sets the set's expiry to its last member's, and publishes
// the write's invalidation. Evicted members are keys of the same cache, so
// of the same hash tag and slot, but not in KEYS: nobody knows them before
// the script runs.
//
// A load's write also gets, for each tag, the tag's epoch key and the
// epoch its load read before the loader ran: if an InvalidateTag of one of
// its tags began since (the epoch moved), the loader may have read the
// source before the change the InvalidateTag is about, and the key, not
// yet a member, was out of its reach; the value is not written (and the
// lock is released), as after a Delete.
//
// KEYS[1] value, KEYS[2] lock, KEYS[3..2+n] the n tag sets, then, for a
// load, KEYS[3+n..2+2n] their epochs. ARGV[1] mode (writeSet, writeLocked,
// writeIfAbsent), ARGV[2] value, ARGV[3] ttl in ms, ARGV[4] lock token,
// ARGV[5] channel, ARGV[6] message (empty: none), ARGV[7] the key, ARGV[8]
// max members, ARGV[9] value key prefix, ARGV[10] lock key prefix,
// ARGV[11] header of an eviction's message (empty: none), ARGV[12] n,
// ARGV[13..12+n] the epochs the load read (empty: none).
//
// Returns {wrote, evicted keys...}.
const taggedWriteScript = `
local wrote = 0
local ntags = tonumber(ARGV[12])
local current = true
if #KEYS > 2 + ntags then
	for i = 1, ntags do
		local e = redis.call('GET', KEYS[2 + ntags + i]) or ''
		if e ~= ARGV[12 + i] then
			current = false
			break
		end
	end
end
if ARGV[1] == 's' then
	redis.call('DEL', KEYS[2])
	redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
	wrote = 1
elseif not current then
	if ARGV[1] == 'l' and redis.call('GET', KEYS[2]) == ARGV[4] then
		redis.call('DEL', KEYS[2])
	end
elseif ARGV[1] == 'l' then
	if redis.call('GET', KEYS[2]) == ARGV[4] then
		redis.call('DEL', KEYS[2])
		redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
		wrote = 1
	end
elseif redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3], 'NX') then
	wrote = 1
end
local out = {wrote}
if wrote == 1 then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	local exp = string.format('%.0f', now + tonumber(ARGV[3]))
	local nows = string.format('%.0f', now)
	local max = tonumber(ARGV[8])
	for i = 3, 2 + ntags do
		local tk = KEYS[i]
		redis.call('ZREMRANGEBYSCORE', tk, '-inf', '(' .. nows)
		redis.call('ZADD', tk, exp, ARGV[7])
		local over = redis.call('ZCARD', tk) - max
		if over > 0 then
			for _, m in ipairs(redis.call('ZRANGE', tk, 0, over)) do
				if over == 0 then break end
				if m ~= ARGV[7] then
					redis.call('ZREM', tk, m)
					redis.call('DEL', ARGV[9] .. m, ARGV[10] .. m)
					if ARGV[11] ~= '' then
						local n, len = #m, ''
						while n >= 128 do
							len = len .. string.char(n % 128 + 128)
							n = math.floor(n / 128)
						end
						redis.call('PUBLISH', ARGV[5], ARGV[11] .. len .. string.char(n) .. m)
					end
					out[#out + 1] = m
					over = over - 1
				end
			end
		end
		local top = redis.call('ZRANGE', tk, -1, -1, 'WITHSCORES')
		redis.call('PEXPIREAT', tk, top[2])
	end
end
if ARGV[6] ~= '' then
	redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return out
`

// tagDrainStartScript starts an InvalidateTag: it moves the tag's members
// into the tag's drain set (merged with what a failed InvalidateTag left
// there), so that writes tagged from now on go to a new set and survive,
// trims both of expired members, gives the drain its last member's expiry,
// and returns how many members it holds. First it moves the tag's epoch,
// so that the loads in progress of keys not yet in the tag do not write
// what they loaded (see taggedWriteScript).
//
// KEYS[1] tag set, KEYS[2] drain set, KEYS[3] the tag's epoch; ARGV[1] the
// epoch's ttl in ms.
const tagDrainStartScript = `
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
local t = redis.call('TIME')
local nows = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. nows)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. nows)
if redis.call('EXISTS', KEYS[1]) == 1 then
	if redis.call('EXISTS', KEYS[2]) == 1 then
		redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MAX')
		redis.call('DEL', KEYS[1])
	else
		redis.call('RENAME', KEYS[1], KEYS[2])
	end
	local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
	redis.call('PEXPIREAT', KEYS[2], top[2])
end
return redis.call('ZCARD', KEYS[2])
`

// writeTagged runs taggedWriteScript for key (mode: writeSet, writeLocked
// with token, writeIfAbsent) and reports whether it wrote. epochs are, for
// a load, its tags' epochs read before its loader ran (nil for a Set). The
// keys it evicted from full tags are dropped here (the script told the
// other instances).
func (c *Cache[V]) writeTagged(ctx context.Context, mode, key string, data []byte, ttl time.Duration, token string, tags, epochs []string) (wrote bool, err error) {
	msg, header, sent := "", "", 0
	if !c.cfg.NoInvalidation {
		op := byte(opKeys)
		if mode != writeSet {
			op = opLoaded
		}
		msg, sent = keyMessages(c.id, op, []string{key})[0], 1
		header = messageHeader(c.id, opKeys)
	}
	keys := make([]string, 0, 2+2*len(tags))
	keys = append(keys, c.RedisKey(key), c.lockKey(key))
	for _, t := range tags {
		keys = append(keys, c.TagKey(t))
	}
	args := make([]any, 0, 12+len(epochs))
	args = append(args, mode, data, ttl.Milliseconds(), token,
		c.channel, msg, key, c.cfg.MaxTagMembers, c.keyPrefix, c.lockPrefix, header, len(tags))
	if epochs != nil {
		for _, t := range tags {
			keys = append(keys, c.tagEpochKey(t))
		}
		for _, e := range epochs {
			args = append(args, e)
		}
	}
	res, err := c.tags.write.Run(ctx, c.p.Client(), keys, args...).Slice()
	if err != nil {
		return false, err
	}
	c.st.invalSent.Add(uint64(sent))
	for _, m := range res[1:] {
		k, _ := m.(string)
		c.dropLocal(k)
		c.flights.Forget(k)
		c.st.tagEvictions.Add(1)
		if header != "" {
			c.st.invalSent.Add(1)
		}
	}
	n, _ := res[0].(int64)
	return n == 1, nil
}

// messageHeader is the header of an invalidation message (see message.go).
func messageHeader(id uint64, op byte) string {
	h := make([]byte, msgHeader)
	h[0], h[1] = msgMagic, op
	binary.BigEndian.PutUint64(h[2:], id)
	return string(h)
}

// setTagged is a Set's write with tags: as setRedis, in one script.
func (c *Cache[V]) setTagged(ctx context.Context, key string, data []byte, ttl time.Duration, tags []string) error {
	_, err := c.writeTagged(ctx, writeSet, key, data, ttl, "", tags, nil)
	c.flights.Forget(key)
	if err != nil {
		c.st.redisErrors.Add(1)
		c.dropLocal(key)
		return fmt.Errorf("cache %q: set %q with %d tag(s): %w", c.name, key, len(tags), err)
	}
	return nil
}

// setRedisWith is a Set's write, with tags or without.
func (c *Cache[V]) setRedisWith(ctx context.Context, key string, data []byte, ttl time.Duration, tags []string) error {
	if len(tags) == 0 {
		return c.setRedis(ctx, key, data, ttl)
	}
	return c.setTagged(ctx, key, data, ttl, tags)
}

// tagsCtxKey carries a GetOrLoad's tags to its flight's write: the flight
// runs on a context with the first caller's values. The value names the
// cache and the key it is for: the loader gets that context too, and a
// GetOrLoad it makes of another key (of this cache or another) must not
// write its value with the outer call's tags.
type tagsCtxKey struct{}

type flightTags struct {
	owner any // the *Cache[V] of the call
	key   string
	tags  []string
}

func withTags(ctx context.Context, owner any, key string, tags []string) context.Context {
	if len(tags) == 0 {
		return ctx
	}
	return context.WithValue(ctx, tagsCtxKey{}, &flightTags{owner: owner, key: key, tags: tags})
}

// tagsOf returns the tags ctx carries for owner's key, if any.
func tagsOf(ctx context.Context, owner any, key string) []string {
	ft, _ := ctx.Value(tagsCtxKey{}).(*flightTags)
	if ft == nil || ft.owner != owner || ft.key != key {
		return nil
	}
	return ft.tags
}

// tagWrite is what a tagged load's write needs: its tags and their
// epochs, read before its loader ran (or why they could not be).
type tagWrite struct {
	tags   []string
	epochs []string
	err    error
}

// tagWriteOf reads, before a tagged load's loader runs, its tags' epochs,
// which its write checks: an InvalidateTag that begins after this read
// keeps the value out of Redis, and one that began before it came before
// the loader read the source. Nil for an untagged load.
func (c *Cache[V]) tagWriteOf(ctx context.Context, key string) *tagWrite {
	tags := tagsOf(ctx, c, key)
	if len(tags) == 0 {
		return nil
	}
	tw := &tagWrite{tags: tags}
	keys := make([]string, len(tags))
	for i, t := range tags {
		keys[i] = c.tagEpochKey(t)
	}
	vals, err := c.p.Client().MGet(ctx, keys...).Result()
	if err != nil {
		tw.err = fmt.Errorf("reading the epochs of its %d tag(s): %w", len(keys), err)
		return tw
	}
	tw.epochs = make([]string, len(vals))
	for i, v := range vals {
		tw.epochs[i], _ = v.(string)
	}
	return tw
}

// writeLoadedTagged is writeLoaded for a tagged load.
func (c *Cache[V]) writeLoadedTagged(ctx context.Context, tw *tagWrite, key string, data []byte, ttl time.Duration, token string) (wrote bool, err error) {
	if tw.err != nil {
		return false, tw.err
	}
	mode := writeLocked
	if token == "" {
		mode = writeIfAbsent
	}
	return c.writeTagged(ctx, mode, key, data, ttl, token, tw.tags, tw.epochs)
}

// InvalidateTag removes every key that carries tag: from Redis, and from
// the local tier of every instance whose subscriber runs (through the usual
// invalidation messages, sent with each deletion). A key written with the
// tag before InvalidateTag began is removed; one written with it while
// InvalidateTag runs either survives, still tagged, or is removed too; a
// key is never left in Redis, written with the tag, but unknown to it. The
// loads in progress for those keys do not write their values back (as for
// Delete).
//
// The members are deleted in chunks of a few hundred keys, one round trip
// each, so a tag of Config.MaxTagMembers keys does not stall Redis. If
// Redis fails midway, InvalidateTag returns the error and the members not
// yet removed stay in a set of their own ({c:<name>}:ti:<tag>, expiring
// with them): calling InvalidateTag again finishes the job. A tag nobody
// used is not an error.
func (c *Cache[V]) InvalidateTag(ctx context.Context, tag string) error {
	if err := c.checkOpen("InvalidateTag"); err != nil {
		return err
	}
	if err := c.checkTag("InvalidateTag", tag); err != nil {
		return err
	}
	tk, dk := c.TagKey(tag), c.tagDrainKey(tag)
	if _, err := c.tags.drainStart.Run(ctx, c.p.Client(), []string{tk, dk, c.tagEpochKey(tag)}, c.tagEpochTTL().Milliseconds()).Int64(); err != nil {
		c.st.redisErrors.Add(1)
		return fmt.Errorf("cache %q: InvalidateTag %q: %w", c.name, tag, err)
	}
	if c.testHookTagDrain != nil {
		c.testHookTagDrain()
	}
	removed := 0
	for {
		members, err := c.p.Client().ZRange(ctx, dk, 0, tagChunk-1).Result()
		if err == nil && len(members) > 0 {
			err = c.deleteTagChunk(ctx, dk, members)
		}
		if err != nil {
			c.st.redisErrors.Add(1)
			return fmt.Errorf("cache %q: InvalidateTag %q: %d key(s) removed, the rest not yet (call again): %w", c.name, tag, removed, err)
		}
		if len(members) == 0 {
			c.st.tagInvalidations.Add(1)
			return nil
		}
		removed += len(members)
	}
}

// deleteTagChunk deletes members' values and locks, publishes their
// invalidations and only then takes them out of the drain set dk, in one
// pipeline: whatever prefix of it runs, a member leaves the set only once
// its value is gone, so a retry finds what is left.
func (c *Cache[V]) deleteTagChunk(ctx context.Context, dk string, members []string) error {
	rks := make([]string, 0, 2*len(members))
	zm := make([]any, len(members))
	for i, k := range members {
		rks = append(rks, c.RedisKey(k), c.lockKey(k))
		zm[i] = k
	}
	pipe := c.p.Client().Pipeline()
	pipe.Del(ctx, rks...)
	sent := c.publish(ctx, pipe, opKeys, members...)
	pipe.ZRem(ctx, dk, zm...)
	_, err := pipe.Exec(ctx)
	// Dropped after Redis, as in Delete; also when it failed (the values
	// may be gone).
	for _, k := range members {
		c.dropLocal(k)
		c.flights.Forget(k)
	}
	if err != nil {
		return err
	}
	c.st.invalSent.Add(uint64(sent))
	c.st.tagKeysInvalidated.Add(uint64(len(members)))
	return nil
}
