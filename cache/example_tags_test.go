package cache_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/pool"
)

// Tag every value derived from one user, and drop them all at once when the
// user changes.
func ExampleCache_InvalidateTag() {
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
	pages, err := cache.New(p, "pages", cache.Config[string]{})
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	_ = pages.Set(ctx, "/u/42", "profile of 42", time.Hour, cache.Tags("user:42"))
	_, _ = pages.GetOrLoad(ctx, "/u/42/posts", func(context.Context) (string, error) {
		return "posts of 42", nil
	}, cache.Tags("user:42"))
	_ = pages.Set(ctx, "/u/7", "profile of 7", time.Hour, cache.Tags("user:7"))

	// User 42 changed.
	if err := pages.InvalidateTag(ctx, "user:42"); err != nil {
		panic(err)
	}
	for _, k := range []string{"/u/42", "/u/42/posts", "/u/7"} {
		v, err := pages.Get(ctx, k)
		fmt.Printf("%s: %q %v\n", k, v, errors.Is(err, cache.ErrNotFound))
	}
	// Output:
	// /u/42: "" true
	// /u/42/posts: "" true
	// /u/7: "profile of 7" false
}
