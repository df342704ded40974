package memwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// LimitAction says what SetMemoryLimit did.
type LimitAction string

// The outcomes of SetMemoryLimit and ComputeLimit.
const (
	// LimitSet: the soft memory limit was set to a fraction of the
	// container's memory limit.
	LimitSet LimitAction = "set"
	// LimitKeptEnv: GOMEMLIMIT is set in the environment; an explicit
	// setting always wins, so nothing was changed.
	LimitKeptEnv LimitAction = "kept_env"
	// LimitNoCgroupLimit: no cgroup memory limit was found (not in a
	// container, or a container without one); nothing was changed.
	LimitNoCgroupLimit LimitAction = "no_cgroup_limit"
)

// LimitResult reports what SetMemoryLimit found and did.
type LimitResult struct {
	Action LimitAction `json:"action"`
	// Limit is the runtime's soft memory limit after the call and Previous
	// the one before, as debug.SetMemoryLimit reports them: math.MaxInt64
	// means none.
	Limit    int64 `json:"limit_bytes"`
	Previous int64 `json:"previous_bytes"`
	// CgroupLimit is the container's memory limit, 0 when there is none or
	// it was not looked up (LimitKeptEnv); CgroupFile is the file it was
	// read from.
	CgroupLimit int64  `json:"cgroup_limit_bytes"`
	CgroupFile  string `json:"cgroup_file,omitempty"`
}

func (r LimitResult) String() string {
	lim := func(v int64) string {
		if v == math.MaxInt64 {
			return "none"
		}
		return fmtBytes(float64(v))
	}
	switch r.Action {
	case LimitSet:
		return fmt.Sprintf("memory limit set to %s (cgroup limit %s from %s; was %s)",
			lim(r.Limit), lim(r.CgroupLimit), r.CgroupFile, lim(r.Previous))
	case LimitKeptEnv:
		return fmt.Sprintf("memory limit %s left alone: GOMEMLIMIT is set", lim(r.Limit))
	case LimitNoCgroupLimit:
		if r.Limit != r.Previous { // FollowMemoryLimit, after the container's limit went away
			return fmt.Sprintf("memory limit restored to %s: no cgroup memory limit any more (was %s)",
				lim(r.Limit), lim(r.Previous))
		}
		fallthrough
	default:
		return fmt.Sprintf("memory limit %s left alone: no cgroup memory limit", lim(r.Limit))
	}
}

func checkFraction(fraction float64) error {
	if !(fraction > 0 && fraction <= 1) { // also rejects NaN
		return fmt.Errorf("memwatch: memory limit fraction must be in (0, 1], got %v", fraction)
	}
	return nil
}

// ComputeLimit decides the soft memory limit for a container: fraction of
// cgroupLimit (bytes; 0 means no limit), unless envGOMEMLIMIT (the value of
// the GOMEMLIMIT environment variable) is set, which always wins. It returns
// the limit to set and LimitSet, or 0 and the reason to change nothing.
// Practice is a fraction of 0.75-0.9: the rest is headroom for memory the Go
// runtime does not count (cgo, the kernel's page cache charged to the
// cgroup) and for the time the GC needs to react.
//
// ComputeLimit is a pure function; SetMemoryLimit applies it.
func ComputeLimit(cgroupLimit int64, fraction float64, envGOMEMLIMIT string) (int64, LimitAction, error) {
	if err := checkFraction(fraction); err != nil {
		return 0, "", err
	}
	if cgroupLimit < 0 {
		return 0, "", fmt.Errorf("memwatch: cgroup limit must not be negative, got %d", cgroupLimit)
	}
	if envGOMEMLIMIT != "" {
		return 0, LimitKeptEnv, nil
	}
	if cgroupLimit == 0 {
		return 0, LimitNoCgroupLimit, nil
	}
	v := float64(cgroupLimit) * fraction
	if v >= math.MaxInt64 {
		// float64(MaxInt64) rounds up to 2^63, which does not convert back.
		return cgroupLimit, LimitSet, nil
	}
	return max(1, int64(v)), LimitSet, nil
}

// SetMemoryLimit sets the runtime's soft memory limit (debug.SetMemoryLimit)
// to fraction of the container's memory limit, read from cgroup v2
// memory.max or, failing that, cgroup v1 memory.limit_in_bytes. Go does not
// do this by itself (it derives GOMAXPROCS from the cgroup, not GOMEMLIMIT).
//
// It changes nothing when GOMEMLIMIT is set in the environment or when no
// cgroup limit is found, and says so in the result. Call it once at startup,
// before the work begins. fraction must be in (0, 1].
func SetMemoryLimit(fraction float64) (LimitResult, error) {
	return setMemoryLimit(fraction, limitEnv{root: "/", getenv: os.Getenv, set: debug.SetMemoryLimit})
}

// limitEnv is what SetMemoryLimit and FollowMemoryLimit touch in the
// process, replaced in tests.
type limitEnv struct {
	root   string                  // file system root the cgroup files are under
	getenv func(string) string     // os.Getenv
	set    func(limit int64) int64 // debug.SetMemoryLimit; a negative limit only reads
}

func setMemoryLimit(fraction float64, env limitEnv) (LimitResult, error) {
	if err := checkFraction(fraction); err != nil {
		return LimitResult{}, err
	}
	cur := env.set(-1)
	res := LimitResult{Limit: cur, Previous: cur}
	if v := env.getenv("GOMEMLIMIT"); v != "" {
		res.Action = LimitKeptEnv
		return res, nil
	}
	cg, file, err := CgroupMemoryLimit(env.root)
	if err != nil {
		return res, err
	}
	res.CgroupLimit, res.CgroupFile = cg, file
	limit, action, err := ComputeLimit(cg, fraction, "")
	if err != nil {
		return res, err
	}
	res.Action = action
	if action == LimitSet {
		res.Previous = env.set(limit)
		res.Limit = limit
	}
	return res, nil
}

// v1Unlimited: cgroup v1 reports "no limit" as the largest page-aligned
// int64 (9223372036854771712); anything this large is no limit.
const v1Unlimited = int64(1) << 62

// CgroupMemoryLimit returns the memory limit of the cgroup this process is
// in, in bytes, and the file it was read from; 0 and no error when there is
// none. root is the file system root the files are read under ("/" in
// production; a test directory in tests).
//
// It finds the cgroup file systems where /proc/self/mountinfo says they are
// mounted (not at fixed paths), finds the process's cgroup in
// /proc/self/cgroup, and takes the lowest limit along its path up to the
// mount's root, because a parent's limit binds its children. cgroup v2
// (memory.max, "max" meaning none) is tried first, then the v1 memory
// controller (memory.limit_in_bytes). A mount's root in mountinfo is the
// cgroup it shows at its mount point: in a container without a cgroup
// namespace that is the container's own cgroup, so the process's path is
// taken relative to it. When the path does not exist under the mount, the
// nearest existing parent's file is used. Without mountinfo (not Linux)
// there is no limit.
func CgroupMemoryLimit(root string) (limit int64, file string, err error) {
	v2Path, v1Path := "/", "/"
	data, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	switch {
	case err == nil:
		v2Path, v1Path = parseProcCgroup(data)
	case !errors.Is(err, fs.ErrNotExist):
		return 0, "", fmt.Errorf("memwatch: %w", err)
	}
	data, err = os.ReadFile(filepath.Join(root, "proc/self/mountinfo"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, "", nil
	case err != nil:
		return 0, "", fmt.Errorf("memwatch: %w", err)
	}
	v2, v1 := parseMountinfo(data)

	if v2.point != "" {
		limit, file, found, err := lowestLimit(filepath.Join(root, v2.point), v2.relative(v2Path), "memory.max", parseV2Limit)
		if err != nil || found {
			return limit, file, err
		}
	}
	if v1.point != "" {
		limit, file, _, err = lowestLimit(filepath.Join(root, v1.point), v1.relative(v1Path), "memory.limit_in_bytes", parseV1Limit)
	}
	return limit, file, err
}

// cgroupMount is a cgroup file system from /proc/self/mountinfo.
type cgroupMount struct {
	root  string // the cgroup shown at the mount point
	point string // where it is mounted; empty if there is none
}

// relative returns cgroup path p as a path under the mount point: p without
// the mount's root, or "/" when p is not under it (the mount shows a cgroup
// that does not contain the process's, or the namespace hides it).
func (m cgroupMount) relative(p string) string {
	p, r := path.Clean("/"+p), path.Clean("/"+m.root)
	switch {
	case r == "/":
		return p
	case p == r:
		return "/"
	case strings.HasPrefix(p, r+"/"):
		return p[len(r):]
	}
	return "/"
}

// parseMountinfo returns the first cgroup v2 mount and the first cgroup v1
// mount with the memory controller in mountinfo (proc(5): "36 35 98:0
// /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue").
func parseMountinfo(data []byte) (v2, v1 cgroupMount) {
	for line := range bytes.Lines(data) {
		fields := strings.Fields(string(line))
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+3 > len(fields) {
			continue
		}
		m := cgroupMount{root: unescapeMount(fields[3]), point: unescapeMount(fields[4])}
		fstype, super := fields[sep+1], fields[sep+3]
		switch {
		case fstype == "cgroup2" && v2.point == "":
			v2 = m
		case fstype == "cgroup" && v1.point == "" && slices.Contains(strings.Split(super, ","), "memory"):
			v1 = m
		}
	}
	return v2, v1
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup returns the process's cgroup v2 path ("0::/path") and its
// v1 memory controller path ("N:...memory...:/path"), "/" for those absent.
func parseProcCgroup(data []byte) (v2, v1 string) {
	v2, v1 = "/", "/"
	for line := range bytes.Lines(data) {
		parts := strings.SplitN(strings.TrimSpace(string(line)), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case strings.Contains(","+parts[1]+",", ",memory,"):
			v1 = parts[2]
		}
	}
	return v2, v1
}

// lowestLimit reads name in the directory of cgroup path p under mount and in
// each of its parents up to the mount root, and returns the lowest limit
// found (0 if every one is unlimited), the file it came from (or the
// deepest file read, when unlimited), and whether any file existed.
func lowestLimit(mount, p, name string, parse func(string) (int64, error)) (limit int64, file string, found bool, err error) {
	p = path.Clean("/" + p)
	for {
		f := filepath.Join(mount, filepath.FromSlash(p), name)
		v, ok, err := readLimit(f, parse)
		if err != nil {
			return 0, "", false, err
		}
		// The deepest file is kept even if unlimited; above it, only a
		// lower limit replaces it.
		if ok && (!found || binds(v, limit)) {
			limit, file = v, f
		}
		found = found || ok
		if p == "/" {
			return limit, file, found, nil
		}
		p = path.Dir(p)
	}
}

// binds reports whether limit v is a limit lower than cur (0 is none for
// both).
func binds(v, cur int64) bool { return v > 0 && (cur == 0 || v < cur) }

// readLimit reads the limit in file f with parse; ok is false when there
// is no such file.
func readLimit(f string, parse func(string) (int64, error)) (v int64, ok bool, err error) {
	data, err := os.ReadFile(f)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("memwatch: %w", err)
	}
	v, err = parse(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, false, fmt.Errorf("memwatch: %s: %w", f, err)
	}
	return v, true, nil
}

func parseV2Limit(s string) (int64, error) {
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("cannot parse memory limit %q", s)
	}
	return v, nil
}

func parseV1Limit(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cannot parse memory limit %q", s)
	}
	if v < 0 || v >= v1Unlimited {
		return 0, nil
	}
	return v, nil
}
