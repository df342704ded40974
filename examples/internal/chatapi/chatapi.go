// Package chatapi holds the JSON documents examples/chatservice serves and
// examples/loadtest reads, so that the two programs cannot drift apart: a
// renamed field breaks the build instead of making the soak tool read zeros
// and pass.
package chatapi

import (
	"time"

	"github.com/bounded-go/bounded/cache"
	"github.com/bounded-go/bounded/memwatch"
	"github.com/bounded-go/bounded/pool"
	"github.com/bounded-go/bounded/queue"
	"github.com/bounded-go/bounded/ratelimit"
)

// Paths of the service's endpoints.
const (
	PathChat         = "/api/chat"      // POST a ChatRequest; GET PathChat+"/{id}" for the Reply
	PathAgents       = "/api/agents"    // GET: Agents
	PathHealth       = "/healthz"       // GET: Health
	PathDebug        = "/debug/bounded" // GET: Debug
	PathDebugHistory = "/debug/bounded/history"
	PathMetrics      = "/metrics" // GET: the Prometheus text exposition
)

// The queues of the service, in the order the worker pipeline uses them: a
// chat job enqueues one embeddings job and one webhooks job when it is done.
const (
	QueueChat       = "chat"
	QueueEmbeddings = "embeddings"
	QueueWebhooks   = "webhooks"
)

// QueueChatPaid is the chat stage's priority lane: the chats of paying
// users. Its worker and the chat queue's share the chat handlers
// (queue.Slots), and a free handler takes a paid chat before any other.
// It is not a stage of the pipeline, so Queues leaves it out.
const QueueChatPaid = "chat-paid"

// NumQueues is how many queues the pipeline has.
const NumQueues = 3

// Queues returns the queue names in pipeline order.
func Queues() [NumQueues]string { return [NumQueues]string{QueueChat, QueueEmbeddings, QueueWebhooks} }

// AllQueues returns every queue of the service: the pipeline's in order,
// then the paid lane.
func AllQueues() [NumQueues + 1]string {
	return [NumQueues + 1]string{QueueChat, QueueEmbeddings, QueueWebhooks, QueueChatPaid}
}

// ChatRequest is the body of POST /api/chat. Every field is required.
type ChatRequest struct {
	User    string `json:"user"`
	Agent   string `json:"agent"`
	Message string `json:"message"`
}

// Status is the state of a chat.
type Status string

// The states of a chat.
const (
	StatusPending Status = "pending" // accepted, the model has not answered yet
	StatusDone    Status = "done"
	StatusFailed  Status = "failed" // every attempt failed; Error says why
)

// Accepted is the 202 answer to POST /api/chat.
type Accepted struct {
	ID     string `json:"id"`
	Status Status `json:"status"`
}

// Reply is a chat as GET /api/chat/{id} returns it (202 while pending).
type Reply struct {
	ID        string    `json:"id"`
	Status    Status    `json:"status"`
	User      string    `json:"user"`
	Agent     string    `json:"agent"`
	Model     string    `json:"model,omitempty"`
	Reply     string    `json:"reply,omitempty"`
	Error     string    `json:"error,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	DoneAt    time.Time `json:"done_at,omitzero"`
}

// Agent is one agent's configuration.
type Agent struct {
	Name         string `json:"name"`
	Model        string `json:"model"`
	SystemPrompt string `json:"system_prompt"`
	MaxTokens    int    `json:"max_tokens"`
}

// Agents is the answer to GET /api/agents.
type Agents struct {
	Agents []Agent `json:"agents"`
}

// Error is the body of every 4xx and 5xx answer of the service, its own and
// those of the components it wraps (the limiter's 429, the router's 404):
// a short public message and a stable code. A 503's message never carries an
// internal error chain; the service logs that.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// The codes of Error.
const (
	CodeBadRequest  = "bad_request"        // 400: the body or the id is malformed
	CodeTooLarge    = "too_large"          // 413
	CodeNotFound    = "not_found"          // 404
	CodeNotAllowed  = "method_not_allowed" // 405
	CodeRateLimited = "rate_limited"       // 429: the user's limit; Retry-After says when
	CodeOverloaded  = "overloaded"         // 503: shed, a chat would wait past the budget; Retry-After
	CodeQueueFull   = "queue_full"         // 503: shed, a queue holds its MaxLen; Retry-After
	CodeUnavailable = "unavailable"        // 503: Redis is down or its lane full; Retry-After
	CodeInternal    = "internal"           // 500: a bug, logged
)

// Health is the answer to GET /healthz: 200 when Reasons is empty, else 503.
// Status is "ok", "degraded" (200: healthy, but shedding load; Shedding says
// why) or "unhealthy" (503).
type Health struct {
	Status   string   `json:"status"`
	Reasons  []string `json:"reasons"`
	Shedding string   `json:"shedding,omitempty"` // why the service sheds, while it does
	// Warnings make the status "degraded" (still 200): Redis at its memory
	// limit, or a maxmemory-policy that may evict the queues' keys.
	Warnings []string               `json:"warnings,omitempty"`
	Redis    RedisHealth            `json:"redis"`
	Queues   map[string]QueueHealth `json:"queues"`
	Alerts   []memwatch.Alert       `json:"alerts"`
}

// RedisHealth is what the health check found out about Redis.
type RedisHealth struct {
	Healthy bool    `json:"healthy"` // the pool's belief (pool.Pool.Healthy)
	PingMS  float64 `json:"ping_ms"` // of the PING this check sent
	Error   string  `json:"error,omitempty"`
}

// QueueHealth is one worker's part of the health check.
type QueueHealth struct {
	FetcherAlive bool              `json:"fetcher_alive"`
	FetcherState string            `json:"fetcher_state"`
	LastReturn   time.Time         `json:"fetcher_last_return"`
	Memory       queue.MemoryStats `json:"redis_memory"` // the worker's view of Redis's memory limit and policy
}

// Debug is the answer to GET /debug/bounded: every component's stats.
type Debug struct {
	Time          time.Time              `json:"time"`
	UptimeSeconds float64                `json:"uptime_seconds"`
	Process       Process                `json:"process"`
	Pool          pool.Stats             `json:"pool"`
	Queues        map[string]QueueStats  `json:"queues"`
	Caches        map[string]cache.Stats `json:"caches"`
	Limiter       ratelimit.Stats        `json:"limiter"`
	Memwatch      Memwatch               `json:"memwatch"`
	HTTP          HTTPStats              `json:"http"`
	Shed          Shed                   `json:"shed"`
	// ChatWait is the enqueue-to-start latency of chat jobs on their first
	// run in this process, since it started.
	ChatWait WaitHistogram `json:"chat_wait"`
	Tasks    []Task        `json:"tasks"`
}

// Shed is the load shedder's configuration, its latest estimate and its
// counts since the service started.
type Shed struct {
	Enabled    bool             `json:"enabled"`
	WaitBudget time.Duration    `json:"wait_budget_ns"`
	MaxLen     [NumQueues]int64 `json:"max_len"` // by queue in Queues() order; 0: unbounded
	Backlog    [NumQueues]int64 `json:"backlog"` // estimated ready + delayed, by queue
	// DrainRate is the chat workers' rate, jobs/s, as the estimate uses it
	// (the recent peak, decaying); 0 until it was measured.
	DrainRate    float64       `json:"drain_rate"`
	ExpectedWait time.Duration `json:"expected_wait_ns"` // of a chat accepted now
	Overloaded   uint64        `json:"overloaded"`       // 503s for the wait budget
	Full         uint64        `json:"full"`             // 503s for a full queue
	Shedding     string        `json:"shedding,omitempty"`
}

// Process is read when /debug/bounded is requested (memwatch's latest sample
// may be a sampling interval old).
type Process struct {
	Goroutines  int    `json:"goroutines"`
	HeapLive    uint64 `json:"heap_live_bytes"`    // marked live by the last GC
	HeapObjects uint64 `json:"heap_objects_bytes"` // live and not yet swept
	MemoryUsed  uint64 `json:"memory_used_bytes"`  // mapped by the runtime, not released
	RSS         uint64 `json:"rss_bytes"`          // 0 where /proc is missing
}

// QueueStats is one queue's stats, or the error reading them.
type QueueStats struct {
	queue.Stats
	Error string `json:"error,omitempty"`
}

// Memwatch is the memory watcher's latest sample and active alerts.
type Memwatch struct {
	Latest memwatch.Sample  `json:"latest"`
	Alerts []memwatch.Alert `json:"alerts"`
	Trend  *memwatch.Trend  `json:"trend,omitempty"`
}

// HTTPStats counts the service's answers to POST /api/chat and the chat
// reads, since it started. 429s are the limiter's Stats.Denied.
type HTTPStats struct {
	Accepted    uint64 `json:"accepted"`     // 202 to POST /api/chat
	BadRequests uint64 `json:"bad_requests"` // 400 and 413
	Unavailable uint64 `json:"unavailable"`  // 503: Redis down or its lane full, or shed (Shed counts those)
	Errors      uint64 `json:"errors"`       // 500
	// OpenConns is the HTTP connections open now. net/http runs one
	// goroutine per connection, so a soak judges the service's own
	// goroutines as Process.Goroutines - OpenConns.
	OpenConns int64 `json:"open_conns"`
}

// Task is one thing the service's lifecycle group owns.
type Task struct {
	Name     string        `json:"name"`
	Kind     string        `json:"kind"`
	Since    time.Time     `json:"since"`
	Interval time.Duration `json:"interval_ns,omitempty"`
}

// History is the answer to GET /debug/bounded/history: memwatch's ring of
// samples, oldest first.
type History struct {
	Interval time.Duration     `json:"interval_ns"`
	Capacity int               `json:"capacity"`
	Samples  []memwatch.Sample `json:"samples"`
}
