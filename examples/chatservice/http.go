package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/examples/internal/chatapi"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
)

// Limits on what a client may send.
const (
	maxUser = 128 // bytes of a user name (it is part of a Redis key)
	maxID   = 64  // bytes of a chat id in a URL
	// fetcherSlack is how late a queue's fetcher may be back from Redis
	// before /healthz calls it dead (see queue.Worker.FetcherAlive).
	fetcherSlack = 2 * time.Second
	pingTimeout  = 250 * time.Millisecond
)

func (s *service) routes() http.Handler {
	mux := http.NewServeMux()
	// Decoding comes before the limiter: a malformed request is answered 400
	// without spending the user's budget, and the limiter's key is the user
	// named in the body.
	// Shedding comes before the limiter: a refused chat costs no Redis round
	// trip and none of the user's budget.
	mux.Handle("POST "+chatapi.PathChat, s.decodeChat(s.shedChat(s.limiter.Middleware(userOf, http.HandlerFunc(s.postChat)))))
	mux.HandleFunc("GET "+chatapi.PathChat+"/{id}", s.getChat)
	mux.HandleFunc("GET "+chatapi.PathAgents, s.getAgents)
	mux.HandleFunc("GET "+chatapi.PathHealth, s.getHealth)
	mux.HandleFunc("GET "+chatapi.PathDebug, s.getDebug)
	mux.HandleFunc("GET "+chatapi.PathDebugHistory, s.getHistory)
	mux.Handle("GET "+chatapi.PathMetrics, s.metrics)
	// The dashboard's relative links need the trailing slash.
	mux.Handle("/admin/", http.StripPrefix("/admin", s.admin))
	mux.Handle("GET /admin", http.RedirectHandler("/admin/", http.StatusMovedPermanently))
	// The router's own 404 and 405 and the limiter's 429 are plain text:
	// jsonErrors rewrites them, so every error has one format.
	return jsonErrors(mux)
}

// shedChat answers 503 with Retry-After, without queueing, when the shedder
// refuses the chat (a queue full, or the wait past the budget).
func (s *service) shedChat(next http.Handler) http.Handler {
	if s.shed == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := s.shed.admit(r.Context()); d.shed {
			s.refuse(w, d)
			return
		}
		adm := &admission{}
		// Deferred, both: a handler that panics (net/http recovers it) must
		// still count its chat out, or each panic holds a place in the gate.
		defer func() {
			if !adm.queued {
				s.shed.notQueued()
			}
			s.shed.done()
		}()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), admissionKey{}, adm)))
	})
}

// admission tells shedChat whether postChat queued the chat it admitted.
type admission struct{ queued bool }

type admissionKey struct{}

// refuse answers a shed chat: 503, Retry-After, and a public message; the
// reason, with the figures, is for /healthz and the debug log.
func (s *service) refuse(w http.ResponseWriter, d decision) {
	s.log.Debug("shedding a chat", "reason", d.reason)
	w.Header().Set("Retry-After", retryAfterSeconds(d.retryAfter))
	msg := "overloaded: a chat would wait too long for a handler now; retry later"
	if d.code == chatapi.CodeQueueFull {
		msg = "overloaded: the chat queue is full; retry later"
	}
	s.fail(w, http.StatusServiceUnavailable, d.code, msg)
}

// chatKey carries the decoded request from decodeChat to the limiter's key
// function and postChat.
type chatKey struct{}

func chatOf(r *http.Request) *chatapi.ChatRequest {
	c, _ := r.Context().Value(chatKey{}).(*chatapi.ChatRequest)
	return c
}

func userOf(r *http.Request) string {
	if c := chatOf(r); c != nil {
		return c.User
	}
	return "" // unreachable behind decodeChat; "" would exempt the request
}

// decodeChat reads and checks the body of POST /api/chat, answering 400 with
// the reason (413 past the body limit), and passes the request on in the
// context.
func (s *service) decodeChat(next http.Handler) http.Handler {
	maxBody := int64(2*s.cfg.MaxMessage + 4<<10) // room for escapes and the other fields
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		var req chatapi.ChatRequest
		if err := dec.Decode(&req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.fail(w, http.StatusRequestEntityTooLarge, chatapi.CodeTooLarge, fmt.Sprintf("body over %d bytes", tooBig.Limit))
				return
			}
			s.fail(w, http.StatusBadRequest, chatapi.CodeBadRequest, "malformed JSON: "+err.Error())
			return
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			s.fail(w, http.StatusBadRequest, chatapi.CodeBadRequest, "malformed JSON: data after the object")
			return
		}
		if reason := s.check(r.Context(), &req); reason != "" {
			s.fail(w, http.StatusBadRequest, chatapi.CodeBadRequest, reason)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), chatKey{}, &req)))
	})
}

// check returns why req cannot be served, or "".
func (s *service) check(ctx context.Context, req *chatapi.ChatRequest) string {
	var missing []string
	for _, f := range []struct{ name, v string }{{"user", req.User}, {"agent", req.Agent}, {"message", req.Message}} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	switch {
	case len(missing) > 0:
		return "missing field(s): " + strings.Join(missing, ", ")
	case len(req.User) > maxUser:
		return fmt.Sprintf("user is %d bytes, over the limit of %d", len(req.User), maxUser)
	case len(req.Message) > s.cfg.MaxMessage:
		return fmt.Sprintf("message is %d bytes, over the limit of %d", len(req.Message), s.cfg.MaxMessage)
	}
	if _, err := s.agent(ctx, req.Agent); errors.Is(err, errUnknownAgent) {
		return err.Error()
	}
	// Any other error (Redis down and the loader failing) surfaces in the
	// worker, which looks the agent up again; the request is not at fault.
	return ""
}

// postChat accepts a decoded, admitted chat: it writes the pending marker,
// then enqueues the job, so the worker's reply always lands after the marker.
func (s *service) postChat(w http.ResponseWriter, r *http.Request) {
	req := chatOf(r)
	ctx := r.Context()
	now := time.Now()
	id := rand.Text()
	pending := chatapi.Reply{ID: id, Status: chatapi.StatusPending, User: req.User, Agent: req.Agent, CreatedAt: now}
	if err := s.replies.Set(ctx, id, pending, s.cfg.ReplyTTL); err != nil {
		s.failErr(w, "storing the chat", err)
		return
	}
	payload, err := json.Marshal(chatJob{ID: id, User: req.User, Agent: req.Agent, Message: req.Message, CreatedAt: now})
	if err != nil {
		s.failErr(w, "encoding the job", err)
		return
	}
	if _, err := s.enqueueChat(ctx, req.User, payload); err != nil {
		// Nothing will answer this chat: drop the marker, on a context of its
		// own since the request's may be what ended.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = s.replies.Delete(dctx, id)
		cancel()
		var full *queue.FullError
		if errors.As(err, &full) {
			d := decision{shed: true, code: chatapi.CodeQueueFull, retryAfter: full.RetryAfter,
				reason: fmt.Sprintf("queue %s is full: %d jobs, the limit is %d", full.Queue, full.Len, full.Limit)}
			if s.shed != nil {
				s.shed.shed(d)
			}
			s.refuse(w, d)
			return
		}
		s.failErr(w, "enqueueing the chat", err)
		return
	}
	if adm, _ := ctx.Value(admissionKey{}).(*admission); adm != nil {
		adm.queued = true
	}
	s.httpStats.accepted.Add(1)
	w.Header().Set("Location", chatapi.PathChat+"/"+id)
	writeJSON(w, http.StatusAccepted, chatapi.Accepted{ID: id, Status: chatapi.StatusPending})
}

// getChat answers 200 with the reply, 202 while it is pending, 404 for an id
// it does not know (or whose reply expired).
func (s *service) getChat(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if len(id) > maxID || strings.ContainsFunc(id, func(c rune) bool { return c <= ' ' || c > '~' }) {
		s.fail(w, http.StatusBadRequest, chatapi.CodeBadRequest, "malformed chat id")
		return
	}
	reply, err := s.replies.Get(r.Context(), id)
	switch {
	case errors.Is(err, cache.ErrNotFound):
		s.fail(w, http.StatusNotFound, chatapi.CodeNotFound, fmt.Sprintf("no chat %q (unknown, or older than %s)", id, s.cfg.ReplyTTL))
	case err != nil:
		s.failErr(w, "reading the chat", err)
	case reply.Status == chatapi.StatusPending:
		writeJSON(w, http.StatusAccepted, reply)
	default:
		writeJSON(w, http.StatusOK, reply)
	}
}

func (s *service) getAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.agentList(r.Context())
	if err != nil {
		s.failErr(w, "loading agents", err)
		return
	}
	writeJSON(w, http.StatusOK, chatapi.Agents{Agents: agents})
}

// getHealth answers 200 when Redis answers a PING, every queue's fetcher is
// alive and no memory alert is raised; 503 with the reasons otherwise.
func (s *service) getHealth(w http.ResponseWriter, r *http.Request) {
	h := chatapi.Health{Reasons: []string{}, Queues: make(map[string]chatapi.QueueHealth), Alerts: s.mem.Active()}
	ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
	start := time.Now()
	err := s.p.Ping(ctx)
	cancel()
	h.Redis.PingMS = float64(time.Since(start).Microseconds()) / 1000
	h.Redis.Healthy = s.p.Healthy()
	if err != nil {
		h.Redis.Error = err.Error()
		h.Reasons = append(h.Reasons, "redis: "+err.Error())
	} else if !h.Redis.Healthy {
		h.Reasons = append(h.Reasons, "redis: marked down by the pool")
	}
	for _, wk := range s.workers {
		st := wk.Stats()
		alive := wk.FetcherAlive(fetcherSlack)
		mem := wk.Memory()
		h.Queues[wk.Queue().Name()] = chatapi.QueueHealth{FetcherAlive: alive, FetcherState: st.FetcherState, LastReturn: st.FetcherLastReturn, Memory: mem}
		h.Warnings = append(h.Warnings, memoryWarnings(wk.Queue().Name(), mem)...)
		if !alive {
			h.Reasons = append(h.Reasons, fmt.Sprintf("queue %s: fetcher not alive (state %s, last back from Redis %s ago)",
				wk.Queue().Name(), st.FetcherState, time.Since(st.FetcherLastReturn).Round(time.Millisecond)))
		}
	}
	for _, a := range h.Alerts {
		h.Reasons = append(h.Reasons, fmt.Sprintf("memwatch %s: %s", a.Kind, a.Message))
	}
	code := http.StatusOK
	h.Status = "ok"
	if s.shed != nil {
		h.Shedding = s.shed.shedding()
	}
	switch {
	case len(h.Reasons) > 0:
		code, h.Status = http.StatusServiceUnavailable, "unhealthy"
	case h.Shedding != "" || len(h.Warnings) > 0:
		// Still 200: a load balancer that took an overloaded instance out
		// would push its load onto the others, and a Redis at its memory
		// limit is drained by these very workers.
		h.Status = "degraded"
	}
	writeJSON(w, code, h)
}

// memoryWarnings says what a worker's view of Redis's memory makes worth
// an operator's attention.
func memoryWarnings(queueName string, m queue.MemoryStats) []string {
	var out []string
	if m.AtLimit {
		out = append(out, fmt.Sprintf("queue %s: Redis is at maxmemory: enqueues fail until the workers drain it", queueName))
	}
	if m.Evicting {
		out = append(out, fmt.Sprintf("queue %s: Redis maxmemory-policy %s may evict queue keys: set noeviction", queueName, m.Policy))
	}
	return out
}

// getDebug answers with every component's stats.
func (s *service) getDebug(w http.ResponseWriter, r *http.Request) {
	d := chatapi.Debug{
		Time:          time.Now(),
		UptimeSeconds: time.Since(s.started).Seconds(),
		Process:       readProcess(),
		Pool:          s.p.Stats(),
		Queues:        make(map[string]chatapi.QueueStats, len(s.queues)),
		Caches:        map[string]cache.Stats{s.replies.Name(): s.replies.Stats(), s.agents.Name(): s.agents.Stats()},
		Limiter:       s.limiter.Stats(),
		ChatWait:      s.chatWaitHistogram(),
		Memwatch:      chatapi.Memwatch{Latest: s.mem.Latest(), Alerts: s.mem.Active()},
		HTTP: chatapi.HTTPStats{
			Accepted:    s.httpStats.accepted.Load(),
			BadRequests: s.httpStats.badRequests.Load(),
			Unavailable: s.httpStats.unavailable.Load(),
			Errors:      s.httpStats.errors.Load(),
		},
	}
	if l := s.conns.Load(); l != nil {
		d.HTTP.OpenConns = l.open.Load()
	}
	if s.shed != nil {
		d.Shed = s.shed.stats()
	}
	if tr, ok := s.mem.Trend(); ok {
		d.Memwatch.Trend = &tr
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	for name, q := range s.queues {
		st, err := q.Stats(ctx)
		qs := chatapi.QueueStats{Stats: st}
		if err != nil {
			qs.Error = err.Error()
		}
		d.Queues[name] = qs
	}
	for _, t := range s.g.Tasks() {
		d.Tasks = append(d.Tasks, chatapi.Task{Name: t.Name, Kind: string(t.Kind), Since: t.Since, Interval: t.Interval})
	}
	writeJSON(w, http.StatusOK, d)
}

// getHistory answers with memwatch's ring of samples.
func (s *service) getHistory(w http.ResponseWriter, r *http.Request) {
	h := chatapi.History{Interval: s.cfg.Memwatch.Interval, Capacity: s.cfg.Memwatch.History, Samples: s.mem.History()}
	if h.Interval == 0 {
		h.Interval = memwatch.DefaultInterval
	}
	if h.Capacity == 0 {
		h.Capacity = memwatch.DefaultHistory
	}
	writeJSON(w, http.StatusOK, h)
}

// fail writes a client or server error: msg is public (no internal error
// chain), errCode one of chatapi's Code constants. A 503 without a
// Retry-After of its own gets one of a second.
func (s *service) fail(w http.ResponseWriter, code int, errCode, msg string) {
	switch {
	case code == http.StatusServiceUnavailable:
		s.httpStats.unavailable.Add(1)
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", "1")
		}
	case code >= 500:
		s.httpStats.errors.Add(1)
	case code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge:
		s.httpStats.badRequests.Add(1)
	}
	writeJSON(w, code, chatapi.Error{Error: msg, Code: errCode})
}

// failErr answers an error from Redis or a component: 503 when Redis is down
// or unreachable, its lane is full or the client went away (the client may
// retry), 500 otherwise (a bug). Either way the error chain goes to the log
// and the client gets a short message saying what failed.
func (s *service) failErr(w http.ResponseWriter, doing string, err error) {
	var netErr net.Error
	if errors.Is(err, pool.ErrUnavailable) || errors.Is(err, pool.ErrLaneExhausted) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) {
		s.logUnavailable(doing, err)
		s.fail(w, http.StatusServiceUnavailable, chatapi.CodeUnavailable, doing+": storage unavailable; retry later")
		return
	}
	s.log.Error("request failed", "doing", doing, "err", err)
	s.fail(w, http.StatusInternalServerError, chatapi.CodeInternal, doing+": internal error")
}

// logUnavailable logs the error chain of a 503 at most once a second, with
// the number of those it did not log: under overload every request may fail
// this way, and a line each would flood the log.
func (s *service) logUnavailable(doing string, err error) {
	now := time.Now().UnixNano()
	last := s.unavailableLog.last.Load()
	if now-last < int64(time.Second) || !s.unavailableLog.last.CompareAndSwap(last, now) {
		s.unavailableLog.suppressed.Add(1)
		return
	}
	s.log.Warn("request failed: unavailable", "doing", doing, "err", err,
		"not_logged_since_last", s.unavailableLog.suppressed.Swap(0))
}

// jsonErrors rewrites the plain-text error answers of the handlers it wraps
// (http.Error's, as the router and the limiter write them) into
// chatapi.Error, keeping the status and the headers.
func jsonErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jw := &jsonErrorWriter{ResponseWriter: w}
		next.ServeHTTP(jw, r)
		if jw.code != 0 {
			msg := strings.TrimSpace(jw.buf.String())
			if msg == "" {
				msg = http.StatusText(jw.code)
			}
			_ = json.NewEncoder(w).Encode(chatapi.Error{Error: msg, Code: codeOf(jw.code)})
		}
	})
}

// jsonErrorWriter holds back the body of a plain-text error answer.
type jsonErrorWriter struct {
	http.ResponseWriter
	code int // of the error being rewritten; 0: passing through
	buf  strings.Builder
	sent bool
}

func (w *jsonErrorWriter) WriteHeader(code int) {
	if w.sent {
		return
	}
	if code < 200 { // informational (103): the final answer is still to come
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.sent = true
	h := w.Header()
	if code >= 400 && !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		w.code = code
		h.Set("Content-Type", "application/json")
		h.Del("Content-Length")
		if code == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
			h.Set("Retry-After", "1") // the limiter's answer while Redis is away
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *jsonErrorWriter) Write(b []byte) (int, error) {
	if !w.sent {
		w.WriteHeader(http.StatusOK)
	}
	if w.code == 0 {
		return w.ResponseWriter.Write(b)
	}
	if room := 200 - w.buf.Len(); room > 0 {
		w.buf.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *jsonErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// codeOf is the chatapi code of an HTTP status that the service's own
// handlers did not write.
func codeOf(status int) string {
	switch status {
	case http.StatusNotFound:
		return chatapi.CodeNotFound
	case http.StatusMethodNotAllowed:
		return chatapi.CodeNotAllowed
	case http.StatusTooManyRequests:
		return chatapi.CodeRateLimited
	case http.StatusServiceUnavailable:
		return chatapi.CodeUnavailable
	case http.StatusRequestEntityTooLarge:
		return chatapi.CodeTooLarge
	}
	if status >= 500 {
		return chatapi.CodeInternal
	}
	return chatapi.CodeBadRequest
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // an error here is the client going away
}
