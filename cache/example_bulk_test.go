package cache_test

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/pool"
)

// GetOrLoadMany calls its loader once with every key neither tier holds;
// a key the loader leaves out is not found (and, with NegativeTTL, cached
// as such).
func ExampleCache_GetOrLoadMany() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	users, err := cache.New(p, "users", cache.Config[User]{TTL: 10 * time.Minute, NegativeTTL: time.Minute})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	byIDs := func(ctx context.Context, ids []string) (map[string]User, error) {
		fmt.Println("loading", ids)
		out := map[string]User{}
		for _, id := range ids {
			if n, _ := strconv.Atoi(id); n < 100 {
				out[id] = User{ID: n, Name: "user " + id}
			}
		}
		return out, nil
	}
	for range 2 {
		got, err := users.GetOrLoadMany(ctx, []string{"1", "2", "404"}, byIDs)
		fmt.Println(len(got), got["2"].Name, err)
	}
	// Output:
	// loading [1 2 404]
	// 2 user 2 <nil>
	// 2 user 2 <nil>
}
