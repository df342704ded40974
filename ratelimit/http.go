package ratelimit

import (
	"net/http"
	"strconv"
	"time"
)

// Middleware limits the requests next serves by the key that key returns
// for each: one event per request.
//
// Every limited response carries RateLimit-Limit (the burst),
// RateLimit-Remaining and RateLimit-Reset (seconds until the bucket is full,
// rounded up), the fields of the IETF RateLimit header draft. A denied
// request is answered 429 Too Many Requests with Retry-After in seconds,
// rounded up so a client that honours it is admitted, and next is not
// called. While Redis is unavailable the Config.OnRedisError policy answers,
// as for AllowN.
//
// A key of "" exempts the request: it is served without a limit or headers.
// That lets one key function decide who is limited (return "" for health
// checks, or for callers another limiter covers); a key function that always
// returns "" limits nothing, so test yours. If the request's context ends
// before Redis answers, the client has gone: it gets 503 and next is not
// called.
func (l *Limiter) Middleware(key func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := key(r)
		if k == "" {
			next.ServeHTTP(w, r)
			return
		}
		res, err := l.Allow(r.Context(), k)
		if err != nil {
			http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
			return
		}
		h := w.Header()
		h.Set("RateLimit-Limit", strconv.Itoa(res.Limit))
		h.Set("RateLimit-Remaining", strconv.Itoa(res.Remaining))
		h.Set("RateLimit-Reset", seconds(res.ResetAfter))
		if !res.Allowed {
			h.Set("Retry-After", seconds(res.RetryAfter))
			http.Error(w, http.StatusText(http.StatusTooManyRequests), http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// seconds renders d in whole seconds, rounded up.
func seconds(d time.Duration) string {
	s := d / time.Second
	if d%time.Second > 0 {
		s++
	}
	return strconv.FormatInt(int64(s), 10)
}
