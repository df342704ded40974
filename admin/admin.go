// Package admin serves a dashboard of a bounded deployment: one
// http.Handler with a JSON API under api/ and an embedded single-page
// dashboard (plain HTML, CSS and JavaScript, no CDN, no build step).
//
// Its data comes from a queue.Inspector (queues, jobs by state, a job's
// detail, consumers) and from the components the caller registers: pools,
// caches, limiters and a memwatch.Watcher. Every page of the API is one
// Inspector call, so its Redis work is bounded by the page's limit (see
// docs/queue.md, "Inspecting queues"), never by the size of the queues.
//
// Safe by default: read-only unless Config.AllowMutations; Config.Authorize
// is called on every request; mutations are POST only, need the page's CSRF
// token in the X-Bounded-CSRF header, a JSON body and a same-origin Origin and
// Sec-Fetch-Site (when the browser sends them). Payloads are returned as
// capped, JSON-escaped text and the page renders them with textContent.
//
// Mount it under a prefix with http.StripPrefix, with a trailing slash:
//
//	h, err := admin.New(admin.Config{Inspector: in})
//	mux.Handle("/admin/", http.StripPrefix("/admin", h))
//
// The API, the safety rules, the tests and the measured Redis work per page
// are in docs/admin.md.
package admin

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

// ErrInvalidConfig is wrapped by New's errors.
var ErrInvalidConfig = errors.New("admin: invalid config")

// CacheStats is what the dashboard reads of a cache (any *cache.Cache[V]).
type CacheStats interface{ Stats() cache.Stats }

// LimiterStats is what the dashboard reads of a limiter (*ratelimit.Limiter).
type LimiterStats interface{ Stats() ratelimit.Stats }

// PoolStats is what the dashboard reads of a pool (*pool.Pool).
type PoolStats interface{ Stats() pool.Stats }

// Config configures New.
type Config struct {
	// Inspector is the source of the queue pages; required.
	Inspector *queue.Inspector
	// Pools, Caches and Limiters are shown by name; all optional.
	Pools    map[string]PoolStats
	Caches   map[string]CacheStats
	Limiters map[string]LimiterStats
	// Workers, optional, are the queue workers of this process: the queue
	// table adds their rates and enqueue-to-start latency, marked "this
	// process" (another process's workers are not counted). Their queues
	// must be of the Inspector's namespace.
	Workers []Worker
	// Memwatch, optional, adds the memory history, trend and alerts.
	Memwatch *memwatch.Watcher
	// AllowMutations enables requeue, delete, purge, cancel, pause and
	// resume. Without it the handler is read-only: those endpoints answer
	// 403, and the page shows no buttons.
	AllowMutations bool
	// Authorize, when set, is called on every request (page, assets and
	// API) before anything else; an error answers 403 with its message.
	Authorize func(*http.Request) error
	// Timeout bounds the Redis work of one API request (default 5s, at
	// most 1 minute).
	Timeout time.Duration
	// ErrorLog, when set, receives the errors answered as 500 or 503
	// (their text is not sent to the client: it may name Redis servers);
	// not a request whose client went away (answered 499, not logged).
	ErrorLog func(r *http.Request, err error)
}

// Limits.
const (
	DefaultTimeout = 5 * time.Second
	maxTimeout     = time.Minute
	// DefaultLimit is the page size when the request names none.
	DefaultLimit = 50
	// MaxBody is the largest mutation body accepted.
	MaxBody = 64 << 10
	// MaxRequeueIDs is the most IDs one requeue call takes.
	MaxRequeueIDs = 1000
	// PreviewBytes caps each payload, progress and result preview; longer
	// ones are cut and marked truncated.
	PreviewBytes = queue.PreviewBytes
	// maxErrorText caps a job's last error.
	maxErrorText = 4 << 10
)

//go:embed static/index.html static/app.js static/style.css
var static embed.FS

type handler struct {
	cfg   Config
	token string
	mux   *http.ServeMux
	rates *rates
	now   func() time.Time // time.Now; tests inject a clock
}

// New returns the dashboard's handler. Each handler has its own random CSRF
// token, served to the page by api/session.
func New(cfg Config) (http.Handler, error) {
	e := check.New(ErrInvalidConfig)
	if cfg.Inspector == nil {
		e.Addf("Config.Inspector is required")
	}
	if cfg.Timeout < 0 || cfg.Timeout > maxTimeout {
		e.Addf("Config.Timeout must be in [0, %v], got %v", maxTimeout, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	for name, p := range cfg.Pools {
		if p == nil {
			e.Addf("Config.Pools[%q] is nil", name)
		}
	}
	for name, c := range cfg.Caches {
		if c == nil {
			e.Addf("Config.Caches[%q] is nil", name)
		}
	}
	for i, w := range cfg.Workers {
		switch {
		case w == nil || isNilPointer(w):
			e.Addf("Config.Workers[%d] is nil", i)
		case cfg.Inspector != nil && w.Queue() != nil && w.Queue().Namespace() != cfg.Inspector.Namespace():
			// The page adds workers to the Inspector's queues by name: a
			// queue of that name in another namespace is another queue.
			e.Addf("Config.Workers[%d]: queue %q is in namespace %q, the Inspector reads %q", i,
				w.Queue().Name(), w.Queue().Namespace(), cfg.Inspector.Namespace())
		}
	}
	for name, l := range cfg.Limiters {
		if l == nil {
			e.Addf("Config.Limiters[%q] is nil", name)
		}
	}
	if err := e.Err(); err != nil {
		return nil, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("admin: csrf token: %w", err)
	}
	h := &handler{cfg: cfg, token: hex.EncodeToString(b[:]), mux: http.NewServeMux(), rates: newRates(len(cfg.Workers)), now: time.Now}
	h.routes()
	return h, nil
}

// isNilPointer says whether v holds a nil pointer (a nil *queue.Worker in
// a Worker), whose methods would panic.
func isNilPointer(v any) bool {
	r := reflect.ValueOf(v)
	return r.Kind() == reflect.Pointer && r.IsNil()
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	if h.cfg.Authorize != nil {
		if err := h.cfg.Authorize(r); err != nil {
			writeError(w, http.StatusForbidden, "forbidden", "not authorized: "+err.Error())
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	h.mux.ServeHTTP(w, r.WithContext(ctx))
}
