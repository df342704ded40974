package queue

// keys are the Redis keys of one queue. All of them carry the same hash tag,
// {<namespace>:<name>}, so every script and pipeline of a queue touches one
// Redis Cluster slot, and every script receives its keys in KEYS. The
// namespace never contains ':' (Config.withDefaults refuses it), so the first ':' of
// a tag ends the namespace and no two (namespace, name) pairs share a key.
type keys struct {
	tag       string // "{bq:chat}"
	ready     string // list: LPUSH on enqueue, the fetcher takes from the right
	delayed   string // sorted set: delayed and retrying jobs, score = due (unix ms)
	wake      string // "a wake marker is on the ready list" flag, with a TTL
	deadIdx   string // sorted set: dead job IDs, score = died at (unix ms)
	deadData  string // hash: dead job ID -> dead record (see deadRecord)
	payloads  string // hash: payload ref -> payload of a job over inlineMax
	deadRefs  string // hash: dead job ID -> payload ref, for dead jobs whose payload is kept apart
	consumers string // set: consumer IDs that have consumed this queue
	// incarnations is a hash: consumer ID -> token of its current
	// incarnation, so a sweep never takes jobs from a consumer that
	// restarted with the same ID (see Worker.sweep).
	incarnations string
	sweepLock    string // SET NX PX lock: one process sweeps the queue at a time
	// bell is the queue's doorbell: a sorted set with one member ("1"),
	// added (ZADD bell 0 1, idempotent) by every write that adds to the
	// ready list, popped by the consumers' fetch hubs (hub.go).
	bell string
	// paused is set while the queue is paused (pause.go): the take script
	// then hands out nothing.
	paused string
	// levels are the ready lists of priority levels 1..MaxLevel
	// (levels.go), "<ready>:<level>".
	levels []string
}

func newKeys(namespace, name string) keys {
	tag := "{" + namespace + ":" + name + "}"
	return keys{
		tag:       tag,
		ready:     tag + ":ready",
		delayed:   tag + ":delayed",
		wake:      tag + ":wake",
		deadIdx:   tag + ":dead",
		deadData:  tag + ":deadjobs",
		payloads:  tag + ":payloads",
		deadRefs:  tag + ":deadrefs",
		consumers: tag + ":consumers",
		// Set apart from the consumers set (not merged into a hash there)
		// so that a Redis written by an earlier version keeps working.
		incarnations: tag + ":incarnations",
		sweepLock:    tag + ":sweeplock",
		bell:         tag + ":bell",
		paused:       tag + ":paused",
		levels:       levelLists(tag + ":ready"),
	}
}

// proc is a consumer's processing list: jobs it has fetched and not acked.
func (k keys) proc(consumer string) string { return k.tag + ":proc:" + consumer }

// cron is the registry of the queue's schedules (see cron.go).
func (k keys) cron() string { return k.tag + ":cron" }

// cronRun is the running marker of a schedule (NoOverlap, redeliveries).
func (k keys) cronRun(name string) string { return k.tag + ":cronrun:" + name }

// unique is the idempotency key of a job enqueued with ID.
func (k keys) unique(id string) string { return k.tag + ":id:" + id }

// heartbeatKey is the sorted set where every process consuming queues of a
// namespace proves it is alive: member = consumer ID, score = the time (unix
// ms) after which it counts as dead. It is one key per namespace, not per
// queue, so a process sends one heartbeat whatever the number of queues.
func heartbeatKey(namespace string) string { return "{" + namespace + "}:heartbeats" }

// liveKey is the hash of the incarnation token each consumer in the
// heartbeat set runs as (member = consumer ID). A queue's incarnations hash
// holding another token for a live consumer ID is a previous life's, whose
// jobs on that queue nobody else would take back if the new incarnation no
// longer consumes the queue (see Worker.sweep). Its members are always in
// the heartbeat set too: written, trimmed and removed with them.
func liveKey(namespace string) string { return "{" + namespace + "}:incarnations" }
