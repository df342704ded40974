package ratelimit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
)

// HandlerOption configures [Limiter.Handler].
type HandlerOption func(*handlerConfig)

type handlerConfig struct {
	key       func(*http.Request) string
	keySet    bool
	limits    func(*http.Request) []Limit
	deny      func(http.ResponseWriter, *http.Request, Result)
	skip      func(*http.Request) bool
	status    int
	setStatus bool
	errs      []error
}

// WithKey sets the key function, which Handler requires: each request is
// one event for the key it returns. A key of "" exempts the request (served
// without a limit or headers), as in Middleware: the key function decides
// who is limited, and one that always returns "" limits nothing, so test
// yours. (An error for "" would turn a key function's bug into an outage of
// every request it misses.)
func WithKey(key func(*http.Request) string) HandlerOption {
	return func(c *handlerConfig) {
		if key == nil {
			c.errs = append(c.errs, errors.New("WithKey: nil key function"))
		}
		c.key, c.keySet = key, true
	}
}

// WithLimits gives each request its limits (AllowLimits), for quotas that
// depend on the caller (a plan read from the request); without it the
// Limiter's own limit applies. Limits that AllowLimits refuses answer 500:
// the function is wrong, not the client.
func WithLimits(limits func(*http.Request) []Limit) HandlerOption {
	return func(c *handlerConfig) {
		if limits == nil {
			c.errs = append(c.errs, errors.New("WithLimits: nil limits function"))
		}
		c.limits = limits
	}
}

// WithDenyHandler replaces the default answer to a denied request (the
// status of WithStatus, 429 by default, and a JSON body). deny is called
// with the RateLimit and Retry-After headers set, and writes the status and
// body itself; next is not called. A deny handler that writes no status
// (it only logs, or writes a body without WriteHeader) answers 429: a
// denial never goes out as 200 OK.
func WithDenyHandler(deny func(w http.ResponseWriter, r *http.Request, res Result)) HandlerOption {
	return func(c *handlerConfig) {
		if deny == nil {
			c.errs = append(c.errs, errors.New("WithDenyHandler: nil deny handler"))
		}
		c.deny = deny
	}
}

// WithSkip exempts the requests for which skip returns true, before the key
// function is called: served without a limit or headers (health checks,
// internal callers).
func WithSkip(skip func(*http.Request) bool) HandlerOption {
	return func(c *handlerConfig) {
		if skip == nil {
			c.errs = append(c.errs, errors.New("WithSkip: nil predicate"))
		}
		c.skip = skip
	}
}

// WithStatus sets the status of the default deny answer, 429 Too Many
// Requests by default: a 4xx or 5xx code (503 for clients that only back
// off on it). It cannot be combined with WithDenyHandler, which writes its
// own status.
func WithStatus(code int) HandlerOption {
	return func(c *handlerConfig) {
		if code < 400 || code > 599 {
			c.errs = append(c.errs, fmt.Errorf("WithStatus: %d is not a 4xx or 5xx status", code))
		}
		c.status, c.setStatus = code, true
	}
}

// DenyBody is the JSON body of Handler's default deny answer.
type DenyBody struct {
	Error string `json:"error"` // "rate limit exceeded"
	// RetryAfter is Result.RetryAfter in seconds, rounded up, as the
	// Retry-After header.
	RetryAfter int64 `json:"retry_after"`
	Limit      int   `json:"limit"`
	Remaining  int   `json:"remaining"`
}

// Handler limits the requests next serves, configured by options; WithKey
// is required. Every limited response carries the RateLimit headers and a
// denied one Retry-After, as with Middleware (of the deciding window, with
// WithLimits). A denied request gets the deny handler's answer, by default
// the status of WithStatus (429) with a JSON DenyBody; next is not called.
// A request whose context ends before Redis answers gets 503. While Redis
// is unavailable, Config.OnRedisError answers, as for AllowN.
//
// Handler checks its options: a missing key function, a nil function, a
// status outside 400-599, or WithStatus with WithDenyHandler is an error
// wrapping ErrInvalidConfig that names the option.
func (l *Limiter) Handler(next http.Handler, opts ...HandlerOption) (http.Handler, error) {
	c := handlerConfig{status: http.StatusTooManyRequests}
	for _, o := range opts {
		o(&c)
	}
	if next == nil {
		c.errs = append(c.errs, errors.New("nil next handler"))
	}
	if !c.keySet {
		c.errs = append(c.errs, errors.New("WithKey is required: the key function says whose limit a request spends"))
	}
	if c.setStatus && c.deny != nil {
		c.errs = append(c.errs, errors.New("WithStatus and WithDenyHandler together: the deny handler writes its own status"))
	}
	if len(c.errs) > 0 {
		return nil, fmt.Errorf("%w: %s: Handler: %w", ErrInvalidConfig, l.name, errors.Join(c.errs...))
	}
	if c.deny == nil {
		status := c.status
		c.deny = func(w http.ResponseWriter, _ *http.Request, res Result) { denyJSON(w, status, res) }
	} else {
		deny, status := c.deny, c.status
		c.deny = func(w http.ResponseWriter, r *http.Request, res Result) {
			dw := &denyWriter{ResponseWriter: w, status: status}
			deny(dw, r, res)
			dw.writeStatus()
		}
	}
	return l.handler(next, &c), nil
}

// denyWriter is the ResponseWriter a deny handler gets: the first write
// that would send the headers without a status (Write, Flush) sends status
// first, and so does the end of a deny handler that wrote nothing, where
// net/http would send 200 OK. Unwrap gives http.ResponseController the
// writer underneath.
type denyWriter struct {
	http.ResponseWriter
	status int
	wrote  bool // a final status was written, or the connection hijacked
}

func (w *denyWriter) writeStatus() {
	if !w.wrote {
		w.WriteHeader(w.status)
	}
}

func (w *denyWriter) WriteHeader(code int) {
	if code >= 200 { // 1xx are informational: a final status still follows
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *denyWriter) Write(b []byte) (int, error) {
	w.writeStatus()
	return w.ResponseWriter.Write(b)
}

func (w *denyWriter) Flush() { _ = w.FlushError() }

func (w *denyWriter) FlushError() error {
	w.writeStatus()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *denyWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.wrote = true // the deny handler answers on the connection itself
	}
	return conn, rw, err
}

func (w *denyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// denyJSON is Handler's default deny answer.
func denyJSON(w http.ResponseWriter, status int, res Result) {
	body, _ := json.Marshal(DenyBody{ // cannot fail: ints and a string
		Error:      "rate limit exceeded",
		RetryAfter: secondsOf(res.RetryAfter),
		Limit:      res.Limit,
		Remaining:  res.Remaining,
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// handler is Handler and Middleware: c is complete.
func (l *Limiter) handler(next http.Handler, c *handlerConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.skip != nil && c.skip(r) {
			next.ServeHTTP(w, r)
			return
		}
		k := c.key(r)
		if k == "" {
			next.ServeHTTP(w, r)
			return
		}
		var res Result
		var err error
		if c.limits != nil {
			res, err = l.AllowLimits(r.Context(), k, 1, c.limits(r)...)
		} else {
			res, err = l.Allow(r.Context(), k)
		}
		if err != nil {
			if errors.Is(err, ErrInvalidArgument) {
				http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
				return
			}
			http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
			return
		}
		h := w.Header()
		h.Set("RateLimit-Limit", strconv.Itoa(res.Limit))
		h.Set("RateLimit-Remaining", strconv.Itoa(res.Remaining))
		h.Set("RateLimit-Reset", seconds(res.ResetAfter))
		if !res.Allowed {
			h.Set("Retry-After", seconds(res.RetryAfter))
			c.deny(w, r, res)
			return
		}
		next.ServeHTTP(w, r)
	})
}
