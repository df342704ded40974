package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/bounded-go/bounded/internal/check"
)

// ScheduleSpec is one schedule of a deploy's set (SetSchedules): the
// arguments of Schedule.
type ScheduleSpec struct {
	Name    string
	Spec    string // a cron spec, a descriptor or Every(d), as for Schedule
	Payload []byte
	Options []ScheduleOption
}

// SetSchedules registers a deploy's whole set of schedules on the queue:
// each one as Schedule would with Version(version), and every registered
// schedule that is not in the set and was registered with a lower version
// is removed (as by Unschedule), so a deploy that drops a schedule stops
// it without anyone calling Unschedule. Every process of a deploy may call
// it with the same set and version; the newest deploy wins: a call whose
// version is below the highest one SetSchedules has seen on the queue
// changes nothing and returns ErrScheduleSuperseded (an older process
// restarting during a rolling deploy cannot bring back what the new one
// removed). version must be positive and the same in every process of a
// deploy (a build number, or the deploy's time in unix ms); a process's own
// clock would let a restarted old process win.
//
// The set is checked before anything is written: names unique and valid,
// specs parseable, at most Config.MaxSchedules. A schedule registered with
// Schedule and a version at or above version is kept even if not in the
// set. Errors: ErrBadSchedule, ErrTooManySchedules, ErrScheduleSuperseded,
// ErrPayloadTooLarge, option errors and Redis's; an error from one
// schedule's registration does not stop the others (all are joined).
func (q *Queue) SetSchedules(ctx context.Context, version int64, set ...ScheduleSpec) error {
	if version <= 0 {
		return q.errorf("set schedules: version must be positive, got %d", version)
	}
	if len(set) > q.cfg.MaxSchedules {
		return q.errorf("set schedules: %w: %d in the set, the limit is %d (Config.MaxSchedules)", ErrTooManySchedules, len(set), q.cfg.MaxSchedules)
	}
	names := make([]any, 0, 1+len(set))
	names = append(names, version)
	seen := make(map[string]bool, len(set))
	for i, s := range set {
		if err := check.Name("schedule name", s.Name); err != nil {
			return q.errorf("set schedules: schedule %d: %w", i, err)
		}
		if seen[s.Name] {
			return q.errorf("set schedules: schedule %q is in the set twice", s.Name)
		}
		seen[s.Name] = true
		if _, _, err := q.scheduleDef(s.Name, s.Spec, s.Payload, s.Options); err != nil {
			return q.errorf("set schedules: %w", err)
		}
		names = append(names, s.Name)
	}
	res, err := cronPruneScript.Run(ctx, q.p.Client(), []string{q.k.cron(), q.k.cronSet()}, names...).StringSlice()
	if err != nil {
		return q.errorf("set schedules: %w", err)
	}
	if len(res) == 0 || (res[0] != "0" && res[0] != "1") {
		return q.errorf("set schedules: the registry answered %v", res)
	}
	if res[0] == "1" {
		return q.errorf("set schedules (version %d): %w", version, ErrScheduleSuperseded)
	}
	var errs []error
	if removed := res[1:]; len(removed) > 0 {
		markers := make([]string, len(removed))
		for i, name := range removed {
			markers[i] = q.k.cronRun(name)
		}
		if err := q.p.Client().Del(ctx, markers...).Err(); err != nil {
			errs = append(errs, fmt.Errorf("deleting the running markers of removed schedules %v: %w", removed, err))
		}
		q.cfg.Logger.Info("queue: schedules removed: not in the newer deploy's set", "queue", q.name, "schedules", removed, "version", version)
	}
	for _, s := range set {
		opts := append(append([]ScheduleOption(nil), s.Options...), Version(version))
		if err := q.Schedule(ctx, s.Name, s.Spec, s.Payload, opts...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cronSet holds the highest version SetSchedules has seen on the queue.
func (k keys) cronSet() string { return k.tag + ":cronset" }

// cronPruneScript records a deploy's version and removes the schedules an
// older deploy registered that are not in the new set.
// KEYS: registry, set version. ARGV: version, then the names in the set.
// Returns {"1"} when a newer version was seen (nothing changed), else
// {"0", removed names...}.
var cronPruneScript = redis.NewScript(cronMetaLua + `
local cur = redis.call('GET', KEYS[2])
if cur and tonumber(cur) > tonumber(ARGV[1]) then return {'1'} end
redis.call('SET', KEYS[2], ARGV[1])
local keep = {}
for i = 2, #ARGV do keep[ARGV[i]] = true end
local out = {'0'}
local fields = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(fields) do
  if string.sub(f, 1, 2) == 'm:' then
    local name = string.sub(f, 3)
    if not keep[name] then
      local ver = meta(redis.call('HGET', KEYS[1], f))
      if ver == nil or tonumber(ver) == nil or tonumber(ver) < tonumber(ARGV[1]) then
        redis.call('HDEL', KEYS[1], f, 'd:' .. name)
        out[#out+1] = name
      end
    end
  end
end
return out
`)
