package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

// cacheItem is the value every cache case stores: a small struct, as in
// bounded/cache's own benchmarks.
type cacheItem struct {
	ID    int
	Name  string
	Score int64
}

const (
	// cacheTTL is the Redis TTL of every value the cases write.
	cacheTTL = time.Hour
	// cacheLocalEntries sizes both local tiers: bounded's default
	// MaxEntries, given to go-redis/cache's TinyLFU too, so that the 1,024
	// keys of the hit cases fit in either.
	cacheLocalEntries = cache.DefaultMaxEntries
	// cacheLocalTTL is go-redis/cache's TinyLFU TTL, bounded's default
	// LocalTTL.
	cacheLocalTTL = cache.DefaultLocalTTL
)

// cacher is one instance of either cache, as the cases drive it: what a
// process of a service would hold.
type cacher interface {
	Get(ctx context.Context, key string) (cacheItem, error)
	Set(ctx context.Context, key string, v cacheItem, ttl time.Duration) error
	GetOrLoad(ctx context.Context, key string, load func(context.Context) (cacheItem, error)) (cacheItem, error)
	// RedisKey is the Redis key that holds key's value.
	RedisKey(key string) string
	// Hits is what the implementation's own statistics count as hits.
	Hits() uint64
	Close() error
}

// cacheOpts are what a case needs of an instance.
type cacheOpts struct {
	noLocal bool // no local tier: every Get goes to Redis
	start   bool // bounded: Start the invalidation subscriber (and wait for it)
}

type newCacher func(ctx context.Context, addr string, o cacheOpts) (cacher, error)

type boundedCache struct {
	p *pool.Pool
	c *cache.Cache[cacheItem]
	g *lifecycle.Group // nil unless started
}

// newBoundedCache: cache.Config[cacheItem]{} (NoLocal when asked) on a
// pool.Config{} pool, so JSON in Redis, a local tier of 10,000 entries and
// 64 MiB, and the cross-instance load lock; with o.start, Start on a
// lifecycle group of its own, returning once the subscriber listens.
func newBoundedCache(ctx context.Context, addr string, o cacheOpts) (cacher, error) {
	p, err := pool.New(pool.Config{Addrs: []string{addr}})
	if err != nil {
		return nil, err
	}
	c, err := cache.New(p, "bench", cache.Config[cacheItem]{TTL: cacheTTL, NoLocal: o.noLocal})
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	b := &boundedCache{p: p, c: c}
	if !o.start {
		return b, nil
	}
	b.g = lifecycle.New()
	if err := c.Start(b.g); err != nil {
		_ = b.Close()
		return nil, err
	}
	if err := waitFor(ctx, 10*time.Second, "the invalidation subscriber", func() bool { return c.Stats().Subscribed }); err != nil {
		_ = b.Close()
		return nil, err
	}
	return b, nil
}

func (b *boundedCache) Get(ctx context.Context, key string) (cacheItem, error) {
	return b.c.Get(ctx, key)
}

func (b *boundedCache) Set(ctx context.Context, key string, v cacheItem, ttl time.Duration) error {
	return b.c.Set(ctx, key, v, ttl)
}

func (b *boundedCache) GetOrLoad(ctx context.Context, key string, load func(context.Context) (cacheItem, error)) (cacheItem, error) {
	return b.c.GetOrLoad(ctx, key, load)
}

func (b *boundedCache) RedisKey(key string) string { return b.c.RedisKey(key) }

func (b *boundedCache) Hits() uint64 {
	st := b.c.Stats()
	return st.LocalHits + st.RedisHits
}

// Close closes the group (the subscriber, and the wait for loads in
// flight), then the pool.
func (b *boundedCache) Close() error {
	var err error
	if b.g != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = b.g.Close(ctx)
	}
	return errors.Join(err, b.p.Close())
}

type goRedisCache struct {
	rdb *redis.Client
	c   *gocache.Cache
}

// newGoRedisCache: cache.New(&cache.Options{Redis: rdb, LocalCache:
// cache.NewTinyLFU(10_000, time.Minute)}) on redis.NewClient with
// go-redis's defaults, as go-redis/cache's README sets it up (its README
// sizes the TinyLFU at 1,000; here it gets bounded's 10,000). StatsEnabled
// is on, which changes nothing on a local hit. o.start means nothing: it
// has no background work.
func newGoRedisCache(_ context.Context, addr string, o cacheOpts) (cacher, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	opt := &gocache.Options{Redis: rdb, StatsEnabled: true}
	if !o.noLocal {
		opt.LocalCache = gocache.NewTinyLFU(cacheLocalEntries, cacheLocalTTL)
	}
	return &goRedisCache{rdb: rdb, c: gocache.New(opt)}, nil
}

// Get decodes into a variable of the caller's, as go-redis/cache's API has
// it.
func (g *goRedisCache) Get(ctx context.Context, key string) (cacheItem, error) {
	var v cacheItem
	err := g.c.Get(ctx, key, &v)
	return v, err
}

func (g *goRedisCache) Set(ctx context.Context, key string, v cacheItem, ttl time.Duration) error {
	return g.c.Set(&gocache.Item{Ctx: ctx, Key: key, Value: v, TTL: ttl})
}

// GetOrLoad is Once, go-redis/cache's get-or-compute.
func (g *goRedisCache) GetOrLoad(ctx context.Context, key string, load func(context.Context) (cacheItem, error)) (cacheItem, error) {
	var v cacheItem
	err := g.c.Once(&gocache.Item{
		Ctx:   ctx,
		Key:   key,
		Value: &v,
		TTL:   cacheTTL,
		Do:    func(it *gocache.Item) (any, error) { return load(it.Context()) },
	})
	return v, err
}

func (g *goRedisCache) RedisKey(key string) string { return key }

func (g *goRedisCache) Hits() uint64 {
	if st := g.c.Stats(); st != nil {
		return st.Hits
	}
	return 0
}

func (g *goRedisCache) Close() error { return g.rdb.Close() }

// waitFor waits until cond holds, for at most d: a condition with a
// deadline, checked every 5ms.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s", d, what)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}
