// Command boundedctl shows and operates the queues of bounded in a Redis:
// their counts, state and consumers, jobs by state, one job, dead letters,
// and requeue, purge, cancel, pause and resume.
//
// Usage:
//
//	boundedctl [--redis URL] [--namespace NS] [--timeout D] COMMAND [flags] [args]
//
//	boundedctl stats [QUEUE] [--limit N] [--cursor C]   queues with their counts and state, and the live consumers
//	boundedctl ls QUEUE [--state ready|delayed|running|dead] [--limit N] [--cursor C] [--payloads]
//	boundedctl show ID [--queue QUEUE] [--search N]     one job; without --queue, searched in at most N queues
//	boundedctl dead QUEUE [--limit N] [--cursor C]      dead letters, newest first
//	boundedctl requeue QUEUE ID...                      dead letters back to the ready list
//	boundedctl requeue QUEUE --all --yes                every dead letter, page by page
//	boundedctl purge QUEUE --yes                        delete every dead letter
//	boundedctl cancel QUEUE ID                          cancel a waiting or running job
//	boundedctl pause QUEUE / resume QUEUE               stop / restart the fleet's workers taking the queue's jobs
//	boundedctl tail QUEUE... [--count N]                outcomes (done, retry, dead) as workers write them
//
// The Redis URL is --redis or $BOUNDED_REDIS_URL (redis://[user:password@]host:port[/db],
// rediss:// for TLS). No message prints the password. --namespace is the
// queues' Config.Namespace ("bq" by default). Flags go before or after the
// command's arguments. Every read command (stats, ls, show, dead) takes
// --json and prints the queue package's types (queue.QueuePage,
// queue.JobPage, queue.JobInfo) as JSON. --timeout (10s) bounds a whole
// command.
//
// Listings are one page: --limit (20, at most 1000) jobs or queues, and the
// cursor of the next page is printed after it ("more: --cursor ..."; "next"
// in JSON). A page of jobs the Inspector returns short (wake markers take
// places in the ready list; about 4 MiB of elements end a page) is filled
// from at most 3 further pages. Redis work per command is bounded by the page, never by the
// size of a queue (queue.Inspector). A queue that the namespace's registry
// does not list is an error. A destructive command over a whole queue
// (purge, requeue --all) needs --yes. requeue --all costs two round trips
// per dead letter: give a larger --timeout for a large dead set (a rerun
// goes on where a timed-out one stopped). It goes through every page: a
// malformed dead letter (its job does not decode) is left and reported at
// the end, with exit 1.
//
// pause and resume act for the whole fleet (queue.Inspector.Pause): no
// worker of any process takes the queue's jobs until resume; enqueues go
// on and running jobs finish. Workers built with a version of the queue
// package older than pause do not read the flag and go on taking. stats
// shows each queue's STATE (active or paused; "paused" in JSON), and ls
// and dead say so above a paused queue's jobs.
//
// tail follows queue.Inspector.Tail: workers learn at their next
// heartbeat (10s by default) that a queue is followed and then publish the
// outcomes they write, one message per pipeline of acks; nobody tailing
// costs nothing per job. It runs until interrupted (exit 0) or --count
// outcomes, and fails (exit 1) when its subscription is lost. Its
// --timeout bounds its start as a whole: the queues' lookup, the
// connection, the server's confirmation of the subscription and the
// registration; a start that does not finish in time fails (exit 1) with
// "did not start within --timeout D".
//
// Exit codes: 0 success, 1 the command failed (Redis unreachable or too
// slow, an unknown queue or job, a job that cannot be cancelled), 2 the
// command line is wrong (unknown command or flag, missing argument or
// --yes, a bad URL, limit or cursor).
package main
