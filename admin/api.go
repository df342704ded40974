package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// CSRFHeader is the request header that must carry the handler's token on
// every mutation.
const CSRFHeader = "X-Bounded-CSRF"

func (h *handler) routes() {
	m := h.mux
	m.HandleFunc("/", h.page)
	for p, get := range map[string]http.HandlerFunc{
		"/api/session": h.session, "/api/queues": h.queues, "/api/jobs": h.jobs, "/api/job": h.job,
		"/api/consumers": h.consumers, "/api/stats": h.stats, "/api/memwatch": h.memwatch,
		"/api/workers": h.workers,
	} {
		m.HandleFunc(p, onlyGet(get))
	}
	for p, f := range map[string]http.HandlerFunc{
		"/api/requeue": h.requeue, "/api/delete": h.delete, "/api/purge": h.purge, "/api/cancel": h.cancel,
		"/api/pause": h.pause, "/api/resume": h.resume,
	} {
		m.HandleFunc(p, h.mutation(f))
	}
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
}

func onlyGet(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" not allowed: this endpoint is read-only (GET)")
			return
		}
		f(w, r)
	}
}

// mutation checks, in order: POST, mutations allowed, same origin, the CSRF
// token, a JSON body of at most MaxBody.
func (h *handler) mutation(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" not allowed: mutations are POST only")
			return
		}
		if !h.cfg.AllowMutations {
			writeError(w, http.StatusForbidden, "read_only", "the dashboard is read-only (admin.Config.AllowMutations is off)")
			return
		}
		if msg := crossOrigin(r); msg != "" {
			writeError(w, http.StatusForbidden, "cross_origin", msg)
			return
		}
		got := r.Header.Get(CSRFHeader)
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) != 1 {
			writeError(w, http.StatusForbidden, "csrf", "missing or wrong "+CSRFHeader+" header (reload the page)")
			return
		}
		if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "content_type", "the body must be application/json")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		f(w, r)
	}
}

// crossOrigin says why a request is not same-origin, "" when it is (or when
// the browser sent neither header: non-browser clients still need the token).
func crossOrigin(r *http.Request) string {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return "cross-site request refused (Sec-Fetch-Site: " + s + ")"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if o == "null" || err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return "cross-origin request refused (Origin " + strconv.Quote(o) + " is not " + strconv.Quote(r.Host) + ")"
		}
	}
	return ""
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" not allowed")
		return
	}
	name, ctype := "", ""
	switch r.URL.Path {
	case "/", "", "/index.html":
		name, ctype = "static/index.html", "text/html; charset=utf-8"
	case "/app.js":
		name, ctype = "static/app.js", "text/javascript; charset=utf-8"
	case "/style.css":
		name, ctype = "static/style.css", "text/css; charset=utf-8"
	default:
		writeError(w, http.StatusNotFound, "not_found", "no such page: "+r.URL.Path)
		return
	}
	b, err := static.ReadFile(name)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

type sessionView struct {
	CSRFToken     string   `json:"csrf_token"`
	Mutations     bool     `json:"mutations"`
	Namespace     string   `json:"namespace"`
	MaxLimit      int      `json:"max_limit"`
	DefaultLimit  int      `json:"default_limit"`
	PreviewBytes  int      `json:"preview_bytes"`
	Pools         []string `json:"pools"`
	Caches        []string `json:"caches"`
	Limiters      []string `json:"limiters"`
	Memwatch      bool     `json:"memwatch"`
	Workers       int      `json:"workers"`
	MaxRequeueIDs int      `json:"max_requeue_ids"`
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (h *handler) session(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, sessionView{
		CSRFToken: h.token, Mutations: h.cfg.AllowMutations, Namespace: h.cfg.Inspector.Namespace(),
		MaxLimit: queue.MaxPageLimit, DefaultLimit: DefaultLimit, PreviewBytes: PreviewBytes,
		Pools: sortedKeys(h.cfg.Pools), Caches: sortedKeys(h.cfg.Caches), Limiters: sortedKeys(h.cfg.Limiters),
		Memwatch: h.cfg.Memwatch != nil, Workers: len(h.cfg.Workers), MaxRequeueIDs: MaxRequeueIDs,
	})
}

// limitOf reads ?limit=, DefaultLimit when absent; 1..queue.MaxPageLimit.
func limitOf(r *http.Request) (int, string) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return DefaultLimit, ""
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > queue.MaxPageLimit {
		return 0, "limit must be an integer in [1, " + strconv.Itoa(queue.MaxPageLimit) + "], got " + strconv.Quote(s)
	}
	return n, ""
}

func (h *handler) queues(w http.ResponseWriter, r *http.Request) {
	limit, msg := limitOf(r)
	if msg != "" {
		writeError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	page, err := h.cfg.Inspector.Queues(r.Context(), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if page.Queues == nil {
		page.Queues = []queue.QueueInfo{}
	}
	writeJSON(w, http.StatusOK, page)
}

var states = []queue.JobState{queue.StateReady, queue.StateDelayed, queue.StateRunning, queue.StateDead}

func required(w http.ResponseWriter, name, v string) bool {
	if v == "" {
		writeError(w, http.StatusBadRequest, "bad_request", name+" is required")
		return false
	}
	return true
}

type jobPageView struct {
	Jobs []jobView `json:"jobs"`
	Next string    `json:"next,omitempty"`
}

func (h *handler) jobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, state := q.Get("queue"), queue.JobState(q.Get("state"))
	if !required(w, "queue", name) {
		return
	}
	if !slices.Contains(states, state) {
		writeError(w, http.StatusBadRequest, "bad_request", "state must be one of ready, delayed, running, dead; got "+strconv.Quote(string(state)))
		return
	}
	limit, msg := limitOf(r)
	if msg != "" {
		writeError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	page, err := h.cfg.Inspector.Jobs(r.Context(), name, state, q.Get("cursor"), limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := jobPageView{Jobs: make([]jobView, len(page.Jobs)), Next: page.Next}
	for i, j := range page.Jobs {
		out.Jobs[i] = listedView(j)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) job(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, id := q.Get("queue"), q.Get("id")
	if !required(w, "queue", name) || !required(w, "id", id) {
		return
	}
	info, err := h.cfg.Inspector.Get(r.Context(), name, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, infoView(info))
}

func (h *handler) consumers(w http.ResponseWriter, r *http.Request) {
	cs, err := h.cfg.Inspector.Consumers(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if cs == nil {
		cs = []queue.ConsumerInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"consumers": cs})
}

type statsView struct {
	Pools    map[string]pool.Stats `json:"pools"`
	Caches   map[string]any        `json:"caches"`
	Limiters map[string]any        `json:"limiters"`
}

func (h *handler) stats(w http.ResponseWriter, r *http.Request) {
	v := statsView{Pools: map[string]pool.Stats{}, Caches: map[string]any{}, Limiters: map[string]any{}}
	for n, p := range h.cfg.Pools {
		v.Pools[n] = p.Stats()
	}
	for n, c := range h.cfg.Caches {
		v.Caches[n] = c.Stats()
	}
	for n, l := range h.cfg.Limiters {
		v.Limiters[n] = l.Stats()
	}
	writeJSON(w, http.StatusOK, v)
}

type memwatchView struct {
	Latest    memwatch.Sample   `json:"latest"`
	Alerts    []memwatch.Alert  `json:"alerts"`
	Trend     *memwatch.Trend   `json:"trend,omitempty"`
	LongTrend *memwatch.Trend   `json:"long_trend,omitempty"`
	Stats     memwatch.Stats    `json:"stats"`
	History   []memwatch.Sample `json:"history"`
}

func (h *handler) memwatch(w http.ResponseWriter, r *http.Request) {
	mw := h.cfg.Memwatch
	if mw == nil {
		writeError(w, http.StatusNotFound, "not_configured", "no memwatch.Watcher is registered (admin.Config.Memwatch)")
		return
	}
	v := memwatchView{Latest: mw.Latest(), Alerts: mw.Active(), Stats: mw.Stats(), History: mw.History()}
	if t, ok := mw.Trend(); ok {
		v.Trend = &t
	}
	if t, ok := mw.LongTrend(); ok {
		v.LongTrend = &t
	}
	if v.Alerts == nil {
		v.Alerts = []memwatch.Alert{}
	}
	if v.History == nil {
		v.History = []memwatch.Sample{}
	}
	writeJSON(w, http.StatusOK, v)
}

type mutationBody struct {
	Queue  string   `json:"queue"`
	ID     string   `json:"id"`
	IDs    []string `json:"ids"`
	Handle string   `json:"handle"`
}

func decode(w http.ResponseWriter, r *http.Request) (mutationBody, bool) {
	var b mutationBody
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the body is over "+strconv.Itoa(MaxBody)+" bytes")
		} else {
			writeError(w, http.StatusBadRequest, "bad_request", "the body is not a JSON object of queue, id, ids, handle: "+err.Error())
		}
		return b, false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "bad_request", "the body holds more than one JSON value")
		return b, false
	}
	return b, required(w, "queue", b.Queue)
}

func (h *handler) requeue(w http.ResponseWriter, r *http.Request) {
	b, ok := decode(w, r)
	if !ok {
		return
	}
	if len(b.IDs) == 0 || len(b.IDs) > MaxRequeueIDs {
		writeError(w, http.StatusBadRequest, "bad_request", "ids must hold 1 to "+strconv.Itoa(MaxRequeueIDs)+" IDs, got "+strconv.Itoa(len(b.IDs)))
		return
	}
	n, err := h.cfg.Inspector.Requeue(r.Context(), b.Queue, b.IDs...)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, map[string]any{"requeued": n})
	case n > 0 && errors.Is(err, queue.ErrNotFound) && !redisUnavailable(r.Context(), err):
		// Some were not dead letters: the queue's answer, which names
		// them and no server.
		writeJSON(w, http.StatusOK, map[string]any{"requeued": n, "error": err.Error()})
	default:
		// Redis failed after n moved (or before any): the failure's
		// status, with how many moved.
		status, v := h.failure(w, r, err)
		writeJSON(w, status, struct {
			errorView
			Requeued int `json:"requeued"`
		}{v, n})
	}
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) {
	b, ok := decode(w, r)
	if !ok || !required(w, "handle", b.Handle) {
		return
	}
	if err := h.cfg.Inspector.Delete(r.Context(), b.Queue, b.Handle); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": 1})
}

func (h *handler) purge(w http.ResponseWriter, r *http.Request) {
	b, ok := decode(w, r)
	if !ok {
		return
	}
	n, err := h.cfg.Inspector.Purge(r.Context(), b.Queue)
	if err != nil {
		// Purge deletes in steps: say how many went before the failure.
		status, v := h.failure(w, r, err)
		writeJSON(w, status, struct {
			errorView
			Purged int `json:"purged"`
		}{v, n})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": n})
}

func (h *handler) cancel(w http.ResponseWriter, r *http.Request) {
	b, ok := decode(w, r)
	if !ok || !required(w, "id", b.ID) {
		return
	}
	if err := h.cfg.Inspector.Cancel(r.Context(), b.Queue, b.ID); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"cancelled": b.ID})
}

// fail maps the queue package's errors to statuses: bad input 400, not
// found 404, a job that moved or finished 409, Redis unavailable or too slow
// 503 with a Retry-After; anything else is a 500. The text of a 503 or a 500
// stays in the server's log (it may name a Redis server).
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, v := h.failure(w, r, err)
	writeJSON(w, status, v)
}

// failure is fail's status and body; it sets the headers and logs what is
// not sent.
func (h *handler) failure(w http.ResponseWriter, r *http.Request, err error) (int, errorView) {
	switch {
	case errors.Is(err, queue.ErrInvalidArgument), errors.Is(err, queue.ErrInvalidConfig):
		return http.StatusBadRequest, errorView{Error: err.Error(), Code: "bad_request"}
	case errors.Is(err, queue.ErrJobNotFound), errors.Is(err, queue.ErrNotFound):
		return http.StatusNotFound, errorView{Error: err.Error(), Code: "not_found"}
	case errors.Is(err, queue.ErrLookupIncomplete):
		return http.StatusNotFound, errorView{Error: err.Error(), Code: "lookup_incomplete"}
	case errors.Is(err, queue.ErrJobGone):
		return http.StatusConflict, errorView{Error: err.Error(), Code: "gone"}
	case errors.Is(err, queue.ErrJobFinished):
		return http.StatusConflict, errorView{Error: err.Error(), Code: "finished"}
	}
	if errors.Is(r.Context().Err(), context.Canceled) {
		// The client went away (its connection closed, or the server is
		// shutting down): nobody reads the answer and Redis did not fail, so
		// nothing is logged and the status says so (nginx's 499, for the
		// access log). Config.Timeout passing is DeadlineExceeded: a 503.
		return StatusClientClosedRequest, errorView{Error: "client closed request", Code: "client_closed"}
	}
	if h.cfg.ErrorLog != nil {
		h.cfg.ErrorLog(r, err)
	}
	if !redisUnavailable(r.Context(), err) {
		return http.StatusInternalServerError, internalError
	}
	// Redis is down, refusing to serve, or slower than Config.Timeout: the
	// request was fine and may be sent again (503, not 500).
	w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	msg := "Redis is unavailable or did not answer in time (admin.Config.Timeout); retry in a few seconds"
	if r.Method == http.MethodPost {
		msg += " (the change may have been made before the failure)"
	}
	return http.StatusServiceUnavailable, errorView{Error: msg, Code: "unavailable"}
}

// StatusClientClosedRequest (nginx's 499) answers a request whose client
// went away before Redis answered: not a server failure, not logged.
const StatusClientClosedRequest = 499

// RetryAfterSeconds is the Retry-After of a 503: Redis unreachable,
// failing over, or slower than Config.Timeout.
const RetryAfterSeconds = 5

// redisUnavailable reports whether err says that Redis could not serve the
// request (as opposed to an answer about the request): the pool believes it
// down (pool.ErrUnavailable), has no connection to give (a lane exhausted),
// or is closed; the connection failed (refused, reset, closed, a network
// error or timeout); Redis answered that it does not serve (LOADING,
// MASTERDOWN, CLUSTERDOWN, TRYAGAIN, BUSY, READONLY, NOREPLICAS); or the request's
// deadline (Config.Timeout) passed.
func redisUnavailable(ctx context.Context, err error) bool {
	switch {
	case errors.Is(err, pool.ErrUnavailable), errors.Is(err, pool.ErrLaneExhausted), errors.Is(err, pool.ErrClosed),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, context.DeadlineExceeded), ctx.Err() != nil,
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	if rerr, ok := errors.AsType[redis.Error](err); ok {
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "READONLY", "NOREPLICAS"} {
			if strings.HasPrefix(msg, p+" ") || msg == p {
				return true
			}
		}
	}
	return false
}

var internalError = errorView{Error: "internal error (Redis failing); see the server's log", Code: "internal"}

func (h *handler) internal(w http.ResponseWriter, r *http.Request, err error) {
	if h.cfg.ErrorLog != nil {
		h.cfg.ErrorLog(r, err)
	}
	writeJSON(w, http.StatusInternalServerError, internalError)
}

type errorView struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorView{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// json.Marshal escapes <, > and & (as \u003c ...), so nothing in a body
	// can be read as markup even by a client that sniffs. The body is
	// encoded before the status is sent: a value it cannot encode (NaN)
	// answers a 500 that says so, not a 200 with an empty body.
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorView{Error: "admin: the answer could not be encoded as JSON: " + err.Error(), Code: "internal"})
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// jobView is a job as the API shows it: payload, progress and result as
// capped text (invalid UTF-8 replaced), never as markup.
type jobView struct {
	ID                string         `json:"id"`
	Queue             string         `json:"queue"`
	State             queue.JobState `json:"state"`
	Attempt           int            `json:"attempt"`
	MaxAttempts       int            `json:"max_attempts"`
	Deliveries        int            `json:"deliveries"`
	EnqueuedAt        time.Time      `json:"enqueued_at,omitzero"`
	Due               time.Time      `json:"due,omitzero"`
	DiedAt            time.Time      `json:"died_at,omitzero"`
	Consumer          string         `json:"consumer,omitempty"`
	LastError         string         `json:"last_error,omitempty"`
	Payload           string         `json:"payload"`
	PayloadSize       int            `json:"payload_size"`
	PayloadTruncated  bool           `json:"payload_truncated,omitempty"`
	PayloadApart      bool           `json:"payload_apart,omitempty"`
	Progress          string         `json:"progress,omitempty"`
	ProgressTruncated bool           `json:"progress_truncated,omitempty"`
	Result            string         `json:"result,omitempty"`
	ResultTruncated   bool           `json:"result_truncated,omitempty"`
	Malformed         bool           `json:"malformed,omitempty"`
	Error             string         `json:"error,omitempty"`
	Handle            string         `json:"handle,omitempty"`
}

func preview(b []byte, max int) (string, bool) {
	cut := len(b) > max
	if cut {
		b = b[:max]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), cut
}

func infoView(j queue.JobInfo) jobView {
	v := jobView{
		ID: j.ID, Queue: j.Queue, State: j.State, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts,
		Deliveries: j.Deliveries, EnqueuedAt: j.EnqueuedAt, Due: j.Due, DiedAt: j.DiedAt, Consumer: j.Consumer,
		PayloadSize: len(j.Payload),
	}
	v.LastError, _ = preview([]byte(j.LastError), maxErrorText)
	v.Payload, v.PayloadTruncated = preview(j.Payload, PreviewBytes)
	v.Progress, v.ProgressTruncated = preview(j.Progress, PreviewBytes)
	v.Result, v.ResultTruncated = preview(j.Result, PreviewBytes)
	return v
}

func listedView(j queue.ListedJob) jobView {
	v := infoView(j.JobInfo)
	v.PayloadSize = j.PayloadSize
	v.PayloadTruncated = v.PayloadTruncated || j.Truncated
	v.PayloadApart = j.PayloadApart
	v.Malformed = j.Malformed
	v.Error, _ = preview([]byte(j.Error), maxErrorText)
	v.Handle = j.Handle
	return v
}
