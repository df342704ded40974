package cache_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
)

type User struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// A cache with its invalidation subscriber owned by a lifecycle group, and
// the group's shutdown.
func Example() {
	m := miniredis.NewMiniRedis() // any Redis; an embedded one keeps the example self-contained
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()

	g := lifecycle.New()
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		panic(err)
	}
	_ = g.OnClose("redis pool", func(context.Context) error { return p.Close() }) // registered first, closed last

	users, err := cache.New(p, "users", cache.Config[User]{TTL: 10 * time.Minute, NegativeTTL: time.Minute})
	if err != nil {
		panic(err)
	}
	if err := users.Start(g); err != nil { // the invalidation subscriber
		panic(err)
	}

	ctx := context.Background()
	byID := func(id int) func(context.Context) (User, error) {
		return func(ctx context.Context) (User, error) {
			fmt.Println("loading user", id)
			if id != 42 {
				return User{}, cache.ErrNotFound
			}
			return User{ID: 42, Name: "Ada"}, nil
		}
	}
	for range 3 {
		u, err := users.GetOrLoad(ctx, "42", byID(42))
		fmt.Println(u.Name, err)
	}
	for range 2 {
		_, err = users.GetOrLoad(ctx, "7", byID(7))
		fmt.Println("user 7 not found:", errors.Is(err, cache.ErrNotFound))
	}
	fmt.Println("loads:", users.Stats().Loads)

	fmt.Println("owned by the group:", g.Tasks())
	fmt.Println("close:", g.Close(ctx))
	fmt.Println("after close:", g.Tasks())
	// Output:
	// loading user 42
	// Ada <nil>
	// Ada <nil>
	// Ada <nil>
	// loading user 7
	// user 7 not found: true
	// user 7 not found: true
	// loads: 2
	// owned by the group: [redis pool (onclose) cache:users loads (onclose) cache:users invalidation (onclose) cache:users invalidation (go)]
	// close: <nil>
	// after close: []
}

// Set, Get and Delete; bad input fails before anything is written.
func ExampleCache_Set() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()

	pages, _ := cache.New(p, "pages", cache.Config[string]{MaxValueBytes: 16}) // strings are stored raw
	ctx := context.Background()

	_ = pages.Set(ctx, "/home", "<h1>hi</h1>", 250*time.Millisecond)
	v, err := pages.Get(ctx, "/home")
	fmt.Println(v, err)
	fmt.Println("redis ttl:", m.TTL(pages.RedisKey("/home")))

	err = pages.Set(ctx, "/big", "<p>far too long for the limit</p>", time.Minute)
	fmt.Println(errors.Is(err, cache.ErrValueTooLarge), err)
	err = pages.Set(ctx, "/home", "x", 0)
	fmt.Println(errors.Is(err, cache.ErrInvalid))

	_ = pages.Delete(ctx, "/home")
	_, err = pages.Get(ctx, "/home")
	fmt.Println(err)
	// Output:
	// <h1>hi</h1> <nil>
	// redis ttl: 250ms
	// true cache "pages": value for key "/big" is 33 bytes encoded, over Config.MaxValueBytes 16; nothing was written
	// true
	// cache: not found
}
