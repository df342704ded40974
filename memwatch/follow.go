package memwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/bounded-go/bounded/internal/check"
	"github.com/bounded-go/bounded/lifecycle"
)

// DefaultLimitInterval is how often FollowMemoryLimit re-reads the
// container's memory limit when LimitConfig.Interval is zero.
const DefaultLimitInterval = time.Minute

// LimitTaskName is the name of the task FollowMemoryLimit registers.
const LimitTaskName = "memwatch-limit"

// LimitConfig configures FollowMemoryLimit.
type LimitConfig struct {
	// Fraction of the container's memory limit to set as the soft limit. It
	// must be in (0, 1]; there is no default (0.75-0.9 is usual).
	Fraction float64
	// Interval between two readings of the container's limit. Zero means
	// DefaultLimitInterval. The files are small and in memory; a reading
	// costs a few system calls.
	Interval time.Duration
	// OnChange, if set, is called with what was done each time a reading
	// found the container's limit changed, on the group's task.
	OnChange func(LimitResult)
	// Logger receives each change and each reading that failed. Nil
	// discards.
	Logger *slog.Logger
}

// withDefaults returns c with its zero fields filled in, or an error naming
// every field that cannot work.
func (c LimitConfig) withDefaults() (LimitConfig, error) {
	e := check.New(ErrInvalidConfig)
	if !(c.Fraction > 0 && c.Fraction <= 1) { // also rejects NaN
		e.Addf("LimitConfig.Fraction must be in (0, 1], got %v", c.Fraction)
	}
	check.Default(e, &c.Interval, DefaultLimitInterval, "LimitConfig.Interval")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, e.Err()
}

// FollowMemoryLimit does what SetMemoryLimit does, now, and again whenever
// the container's memory limit changes in place (docker update --memory, a
// Kubernetes in-place pod resize): one task registered on g re-reads the
// limit every cfg.Interval and, when it differs from the last reading, sets
// the soft limit to cfg.Fraction of the new one, or back to the soft limit
// the process had before, when the container's limit went away. The
// soft limit is only touched when the container's limit changed, so a value
// set meanwhile by other means stays until then. Closing g stops it.
//
// It returns the result of the first reading. With GOMEMLIMIT set in the
// environment it changes nothing and registers no task (LimitKeptEnv). When
// the first reading fails, or g is closing, it returns the error and has
// changed nothing; a later reading that fails is logged and changes nothing.
func FollowMemoryLimit(g *lifecycle.Group, cfg LimitConfig) (LimitResult, error) {
	return followMemoryLimit(g, cfg, limitEnv{root: "/", getenv: os.Getenv, set: debug.SetMemoryLimit})
}

// follower is FollowMemoryLimit's state, owned by its task.
type follower struct {
	cfg      LimitConfig
	env      limitEnv
	mu       sync.Mutex // the first setting and each reading, one at a time
	cgroup   int64      // the container's limit at the last reading, 0 for none
	original int64      // the soft limit before the first one this set
	changed  bool       // whether original holds
}

func followMemoryLimit(g *lifecycle.Group, cfg LimitConfig, env limitEnv) (LimitResult, error) {
	if g == nil {
		return LimitResult{}, errors.New("memwatch: FollowMemoryLimit: nil lifecycle group")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return LimitResult{}, err
	}
	cur := env.set(-1)
	if env.getenv("GOMEMLIMIT") != "" {
		return LimitResult{Action: LimitKeptEnv, Limit: cur, Previous: cur}, nil
	}
	cg, file, err := CgroupMemoryLimit(env.root)
	if err != nil {
		return LimitResult{Limit: cur, Previous: cur}, err
	}

	f := &follower{cfg: cfg, env: env}
	// The task's first run is an interval away, but it must not read before
	// the first setting is made: hold the lock across both.
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := g.Every(LimitTaskName, cfg.Interval, func(context.Context) { f.refresh() }); err != nil {
		return LimitResult{Limit: cur, Previous: cur}, fmt.Errorf("memwatch: FollowMemoryLimit: %w", err)
	}
	return f.apply(cg, file), nil
}

// refresh reads the container's limit and applies it if it changed.
func (f *follower) refresh() {
	f.mu.Lock()
	defer f.mu.Unlock()
	cg, file, err := CgroupMemoryLimit(f.env.root)
	if err != nil {
		f.cfg.Logger.Warn("memwatch: cannot read the container's memory limit; soft limit unchanged", "err", err)
		return
	}
	if cg == f.cgroup {
		return
	}
	res := f.apply(cg, file)
	f.cfg.Logger.Info("memwatch: the container's memory limit changed", "result", res.String())
	if f.cfg.OnChange != nil {
		f.cfg.OnChange(res)
	}
}

// apply sets the soft limit for container limit cg (0: none). f.mu is held.
func (f *follower) apply(cg int64, file string) LimitResult {
	f.cgroup = cg
	res := LimitResult{CgroupLimit: cg, CgroupFile: file}
	if cg == 0 {
		res.Action = LimitNoCgroupLimit
		if !f.changed {
			res.Limit = f.env.set(-1)
			res.Previous = res.Limit
			return res
		}
		res.Limit, res.Previous = f.original, f.env.set(f.original)
		f.changed = false
		return res
	}
	limit, _, _ := ComputeLimit(cg, f.cfg.Fraction, "") // cg > 0 and the fraction were checked
	res.Action, res.Limit = LimitSet, limit
	res.Previous = f.env.set(limit)
	if !f.changed {
		f.original, f.changed = res.Previous, true
	}
	return res
}
