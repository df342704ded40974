package ratelimit_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/ratelimit"
)

// One Limiter for every plan: each call gives its limits, here a burst
// window and a daily quota checked at once. The free plan's daily quota
// of 3 (one more every 8 hours, as GCRA spreads it) is spent by the third
// call; the fourth is denied by that window (Window 1) though the
// per-second window would admit it, and nothing is counted in either.
func ExampleLimiter_AllowLimits() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	api, _ := ratelimit.New(p, "api", ratelimit.Config{Rate: 10, Now: func() time.Time { return now }})

	plans := map[string][]ratelimit.Limit{
		"free": {ratelimit.PerSecond(2), ratelimit.PerDay(3)},
		"pro":  {ratelimit.PerSecond(20), ratelimit.PerDay(100_000)},
	}
	ctx := context.Background()
	for i := 1; i <= 4; i++ {
		r, err := api.AllowLimits(ctx, "customer:7", 1, plans["free"]...)
		if err != nil {
			panic(err)
		}
		fmt.Printf("call %d: allowed=%t remaining=%d retry-after=%s window=%d\n", i, r.Allowed, r.Remaining, r.RetryAfter, r.Window)
		now = now.Add(time.Second)
	}
	// Upgraded. What a key has spent is kept as time: a spent day is a day
	// under any plan, so an upgrade that should take effect at once resets.
	if err := api.Reset(ctx, "customer:7"); err != nil {
		panic(err)
	}
	r, _ := api.AllowLimits(ctx, "customer:7", 1, plans["pro"]...)
	fmt.Printf("pro: allowed=%t remaining=%d window=%d\n", r.Allowed, r.Remaining, r.Window)
	// Output:
	// call 1: allowed=true remaining=1 retry-after=0s window=0
	// call 2: allowed=true remaining=1 retry-after=0s window=1
	// call 3: allowed=true remaining=0 retry-after=0s window=1
	// call 4: allowed=false remaining=0 retry-after=7h59m57s window=1
	// pro: allowed=true remaining=19 window=0
}

// Handler takes options: here a skipped health check, a JSON deny answer
// with status 503 instead of 429.
func ExampleLimiter_Handler() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	p, _ := pool.New(pool.Config{Addrs: []string{m.Addr()}})
	defer p.Close()
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	api, _ := ratelimit.New(p, "api", ratelimit.Config{Rate: 1, Period: 10 * time.Second, Now: func() time.Time { return now }})

	h, err := api.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") }),
		ratelimit.WithKey(func(r *http.Request) string { return r.Header.Get("Authorization") }),
		ratelimit.WithSkip(func(r *http.Request) bool { return r.URL.Path == "/healthz" }),
		ratelimit.WithStatus(http.StatusServiceUnavailable))
	if err != nil {
		panic(err)
	}
	for _, path := range []string{"/", "/", "/healthz"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "token-1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Printf("%s %d retry-after=%q %s", path, rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
	}
	// Output:
	// / 200 retry-after="" hello
	// / 503 retry-after="10" {"error":"rate limit exceeded","retry_after":10,"limit":1,"remaining":0}
	// /healthz 200 retry-after="" hello
}
