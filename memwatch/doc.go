// Package memwatch is the process watching its own memory: a cheap sampler of
// runtime/metrics with a bounded history, alerts that raise and clear once,
// optional heap profiles on alert, and the soft memory limit a container
// needs.
//
//	w, err := memwatch.New(memwatch.Config{OnAlert: func(a memwatch.Alert) { log.Println(a.Message) }})
//	...
//	err = w.Start(group) // one task: a sample now, then every 5 s until group.Close
//	http.Handle("/debug/memwatch", w.Handler())
//
// # Model
//
// A [Watcher], one per process, takes a [Sample] every Config.Interval from
// one runtime/metrics read (no allocation, the world is not stopped, unlike
// runtime.ReadMemStats) and keeps the last Config.History samples in a ring
// buffer. Three conditions are watched, each raised once when it starts to
// hold and cleared once when it has clearly stopped: [AlertMemoryHigh]
// ([Sample.Retained] against the runtime's soft memory limit, or
// Config.MemoryLimit without one), [AlertGoroutines], and [AlertHeapGrowth]
// (a robust slope of the live heap over a short and a long span, see
// [Trend]). Alerts go to Config.OnAlert and to each [Subscription], a
// bounded channel that drops and counts what its reader does not take. With
// Config.MaxProfiles set, a heap profile is captured when an alert is
// raised, at most once per Config.ProfileInterval, the oldest dropped first.
// [Watcher.Handler] serves the latest sample, alerts and trend as JSON.
//
// [SetMemoryLimit] sets the runtime's soft memory limit to a fraction of the
// container's cgroup memory limit, unless GOMEMLIMIT is set;
// [FollowMemoryLimit] keeps doing so on a task of a lifecycle group;
// [ComputeLimit] is the decision as a pure function.
//
// # Zero value, concurrency, closing
//
// The zero Watcher is not usable: build one with [New]. The zero Config is
// useful. A Watcher is safe for concurrent use. It holds no resources of its
// own: its one sampling task belongs to the lifecycle group given to
// [Watcher.Start], and closing that group stops it, as it stops
// FollowMemoryLimit's. Whoever subscribes closes the Subscription.
// Config.OnAlert and Config.Source run on the sampling goroutine, one sample
// at a time, with no lock of the Watcher held.
//
// # Errors
//
// New and FollowMemoryLimit return errors wrapping [ErrInvalidConfig] that
// name every field at fault. Start returns [ErrAlreadyStarted] when called a
// second time, and an error matching lifecycle.ErrClosed when the group is
// closing. Subscribe returns [ErrTooManySubscribers] past
// Config.MaxSubscribers.
//
// The reasoning, the figures and the tests behind each part are in
// docs/memwatch.md.
package memwatch
