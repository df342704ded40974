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
//
// Handler is the same with options: a deny handler, a JSON body, a status,
// skipping by predicate, limits per request.
func (l *Limiter) Middleware(key func(*http.Request) string, next http.Handler) http.Handler {
	return l.handler(next, &handlerConfig{key: key, deny: denyText})
}

// denyText is Middleware's deny answer: 429 with a text body.
func denyText(w http.ResponseWriter, _ *http.Request, _ Result) {
	http.Error(w, http.StatusText(http.StatusTooManyRequests), http.StatusTooManyRequests)
}

// seconds renders d in whole seconds, rounded up.
func seconds(d time.Duration) string { return strconv.FormatInt(secondsOf(d), 10) }

// secondsOf is d in whole seconds, rounded up.
func secondsOf(d time.Duration) int64 {
	s := d / time.Second
	if d%time.Second > 0 {
		s++
	}
	return int64(s)
}
