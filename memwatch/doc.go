// Package memwatch is the process watching its own memory: a cheap sampler of
// runtime/metrics with a bounded history, alerts that raise and clear once,
// optional heap profiles on alert, and the soft memory limit a container
// needs.
//
// It replaces what the post-mortem's service ran as three services with four
// timers, histories that grew without bound (about 150 MB of a 255 MB RSS),
// a 30-second "emergency optimisation" and one instance per queue manager.
// Here there is one [Watcher] per process, built once and passed to whoever
// needs it, one sampling task owned by a lifecycle group, and a history of
// fixed size.
//
//	w, err := memwatch.New(memwatch.Config{OnAlert: func(a memwatch.Alert) { log.Println(a.Message) }})
//	...
//	err = w.Start(group) // one task: a sample now, then every 5 s until group.Close
//	http.Handle("/debug/memwatch", w.Handler())
//
// # What is sampled, and why not ReadMemStats
//
// Each [Sample] comes from one runtime/metrics.Read into a slice the Watcher
// reuses: under a microsecond, no allocation, and the world is not stopped.
// runtime.ReadMemStats stops the world on every call (tens of microseconds on
// an idle process, more than a hundred with many goroutines, milliseconds in
// production reports), which is a poor trade for a figure taken every few
// seconds forever. BenchmarkSample measures both in the same run.
//
// A Sample holds the live heap at the last GC, the heap in objects now, the
// heap goal, the memory the runtime holds (what GOMEMLIMIT governs), the
// soft limit, GOGC, the GC cycle count, the GC's share of CPU since the
// previous sample, the goroutine count and, if asked for, the RSS. The last
// Config.History samples (an hour at the defaults) are kept in a ring
// buffer; older ones are overwritten.
//
// # Alerts
//
// Three conditions are watched, each raised once when it starts to hold and
// cleared once when it has clearly stopped, the clear threshold lying below
// the raise threshold ([AlertMemoryHigh], [AlertGoroutines],
// [AlertHeapGrowth]). Alerts go to Config.OnAlert, called on the sampling
// goroutine with no lock on the Watcher's state held, and to each
// [Subscription], a bounded channel
// that drops and counts what its reader is too slow to take; nothing a
// subscriber does can delay a sample. [Watcher.Active] lists the alerts
// raised now.
//
// Heap at goal is not an alert. In a healthy Go process the heap grows from
// the live heap to the goal (twice the live heap at GOGC=100) and the GC
// brings it back: a full-looking heap is the collector doing its job, and
// under a memory limit the goal is the limit, so the memory held sits near
// the limit too. Memory-high therefore measures [Sample.Retained], what the
// process would still hold right after a collection, against the limit: the
// runtime's soft limit if one is set, otherwise Config.MemoryLimit. With
// neither there is nothing to measure against and it cannot fire.
//
// Growth is fitted over two spans of the live heap: the last
// Config.GrowthWindow samples, and the whole history since the alert last
// cleared (an hour at the defaults). The live heap only moves when a GC
// cycle ends, so each span is fitted on one point per cycle's reading (the
// long one on at most GrowthWindow medians of consecutive readings), with
// the Theil-Sen estimator (the median of the slopes between all pairs of
// points), which one GC spike barely moves. Either span raises the alert
// when its slope reaches Config.GrowthRate, most pairs of differing points
// (Config.GrowthAgreement) rise rather than fall, there are enough points
// for that not to be chance (a Mann-Kendall score of 4 over the window, 3
// over the long span, [Trend].Score), and the growth does not vanish when
// its largest single jump is taken out. The span that raised it clears it.
// In simulation at the defaults, with noise up to ±16 MiB at each GC, a
// leak of 2 or 8 MiB/min raises the alert within 40 minutes when the GC
// runs at least every 2 minutes (within 6 minutes at 8 MiB/min with a GC
// every sample), within 9 GC intervals when it runs every 5 or 10 minutes,
// and within 9 intervals with a GC every 15 minutes if History holds two
// hours; it does not clear while the leak goes on. A flat heap, and one
// step up (a cache loaded at once), do not raise it (TestGrowthGrid). A cache that fills gradually is growth: the
// alert clears once it is full and the span has moved past.
//
// Other signs of a leak are in the samples for dashboards: the heap goal
// falling onto the live heap (the limit, not GOGC, drives the GC), GC cycles
// coming faster, and the GC's CPU share rising.
//
// # Heap profiles
//
// With Config.MaxProfiles set, a heap profile is captured when an alert is
// raised, at most once per Config.ProfileInterval, and at most MaxProfiles
// are kept (in memory, or as files in Config.ProfileDir), the oldest dropped
// first. Capturing does not stop the world.
//
// # The memory limit in a container
//
// Go derives GOMAXPROCS from the cgroup CPU limit but not GOMEMLIMIT from the
// memory limit: without one, the GC lets the heap reach twice the live heap
// whatever the container allows, and the kernel kills the process first.
// Call [SetMemoryLimit] once at startup:
//
//	res, err := memwatch.SetMemoryLimit(0.85) // 85% of the container's limit
//	logger.Info("memory limit", "result", res.String(), "err", err)
//
// It finds the cgroup mounts through /proc/self/mountinfo, reads cgroup v2
// memory.max (v1 memory.limit_in_bytes as a fallback), sets
// debug.SetMemoryLimit, and reports what it found, what it did and the
// previous limit. [FollowMemoryLimit] does the same and keeps doing it on a
// task of a lifecycle group, for a limit changed in place. A GOMEMLIMIT set in the environment always wins: it is then
// left alone. A fraction of 0.75-0.9 leaves room for memory the runtime does
// not count. [ComputeLimit] is the decision as a pure function.
// [FreeOSMemory] is there for after a burst that is known to have ended,
// never for a timer.
package memwatch
