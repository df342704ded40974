package ratelimit_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/lifecycle"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/ratelimit"
)

// Three login attempts a minute per user. A fixed clock makes the numbers
// exact; without Config.Now, Redis's TIME is the clock. The fourth attempt is
// denied by Redis, the fifth by the local denied cache without a round trip.
func Example() {
	m := miniredis.NewMiniRedis() // any Redis; an embedded one keeps the example self-contained
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		panic(err)
	}
	defer p.Close()

	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	logins, err := ratelimit.New(p, "login", ratelimit.Config{
		Rate:         3,
		Period:       time.Minute,
		OnRedisError: ratelimit.FailClosed, // never let guessing through
		Now:          func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		r, err := logins.Allow(ctx, "user:42")
		if err != nil {
			panic(err)
		}
		fmt.Printf("attempt %d: allowed=%t remaining=%d retry-after=%s (%s)\n", i, r.Allowed, r.Remaining, r.RetryAfter, r.Source)
	}
	now = now.Add(20 * time.Second)
	r, _ := logins.Allow(ctx, "user:42")
	fmt.Printf("20s later: allowed=%t remaining=%d reset-after=%s\n", r.Allowed, r.Remaining, r.ResetAfter)
	fmt.Println("key:", logins.Key("user:42"))
	// Output:
	// attempt 1: allowed=true remaining=2 retry-after=0s (redis)
	// attempt 2: allowed=true remaining=1 retry-after=0s (redis)
	// attempt 3: allowed=true remaining=0 retry-after=0s (redis)
	// attempt 4: allowed=false remaining=0 retry-after=20s (redis)
	// attempt 5: allowed=false remaining=0 retry-after=20s (denied-cache)
	// 20s later: allowed=true remaining=0 reset-after=1m0s
	// key: {rl:login}:user:42
}

// The middleware answers 429 with Retry-After, and sets the RateLimit
// headers on every limited response.
func ExampleLimiter_Middleware() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	api, _ := ratelimit.New(p, "api", ratelimit.Config{Rate: 2, Period: 10 * time.Second, Now: func() time.Time { return now }})

	byToken := func(r *http.Request) string { return r.Header.Get("Authorization") }
	h := api.Middleware(byToken, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	}))
	for range 3 {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Authorization", "token-1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		hd := rec.Header()
		fmt.Printf("%d limit=%s remaining=%s reset=%s retry-after=%q\n", rec.Code, hd.Get("RateLimit-Limit"),
			hd.Get("RateLimit-Remaining"), hd.Get("RateLimit-Reset"), hd.Get("Retry-After"))
	}
	// Output:
	// 200 limit=2 remaining=1 reset=5 retry-after=""
	// 200 limit=2 remaining=0 reset=10 retry-after=""
	// 429 limit=2 remaining=0 reset=10 retry-after="5"
}

// A Limiter starts nothing and owns nothing: the service's lifecycle group
// stops the server that uses it, then closes the pool it draws from.
func Example_shutdown() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()

	g := lifecycle.New()
	p, err := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		panic(err)
	}
	_ = g.OnClose("redis pool", func(context.Context) error { // registered first, closed last
		fmt.Println("closed: redis pool")
		return p.Close()
	})
	limiter, err := ratelimit.New(p, "api", ratelimit.Config{Rate: 100})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(limiter.Middleware(
		func(r *http.Request) string { return r.RemoteAddr },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
	))
	_ = g.OnClose("http server", func(context.Context) error {
		srv.Close() // waits for requests in flight
		fmt.Println("closed: http server")
		return nil
	})

	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status, "remaining", resp.Header.Get("RateLimit-Remaining"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("close:", g.Close(ctx))
	// Output:
	// 200 OK remaining 99
	// closed: http server
	// closed: redis pool
	// close: <nil>
}
