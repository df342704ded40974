package memwatch

import (
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestComputeLimit(t *testing.T) {
	for _, tc := range []struct {
		cgroup   int64
		fraction float64
		env      string
		limit    int64
		action   LimitAction
		err      string
	}{
		{cgroup: 1 << 30, fraction: 0.75, limit: 3 << 28, action: LimitSet},
		{cgroup: 1000, fraction: 1, limit: 1000, action: LimitSet},
		{cgroup: 1000, fraction: 0.0001, limit: 1, action: LimitSet},
		{cgroup: 1 << 30, fraction: 0.9, env: "512MiB", action: LimitKeptEnv},
		{cgroup: 1 << 30, fraction: 0.9, env: "off", action: LimitKeptEnv},
		{cgroup: 0, fraction: 0.9, env: "512MiB", action: LimitKeptEnv},
		{cgroup: 0, fraction: 0.9, action: LimitNoCgroupLimit},
		{cgroup: 1 << 30, fraction: 0, err: "fraction must be in (0, 1], got 0"},
		{cgroup: 1 << 30, fraction: 1.01, err: "fraction must be in (0, 1], got 1.01"},
		{cgroup: 1 << 30, fraction: -0.5, err: "fraction"},
		{cgroup: 1 << 30, fraction: math.NaN(), err: "fraction"},
		{cgroup: -1, fraction: 0.9, err: "cgroup limit must not be negative"},
	} {
		limit, action, err := ComputeLimit(tc.cgroup, tc.fraction, tc.env)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.limit, limit, "%+v", tc)
		require.Equal(t, tc.action, action, "%+v", tc)
	}
}

// tree writes files (path -> content) under a new root directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
	return root
}

// mountinfo lines for the usual layouts (proc(5)).
const (
	v2Mounts = "30 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	v1Mounts = "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n" +
		"31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n" +
		"34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
	hybridMounts = v1Mounts + "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)

func TestCgroupMemoryLimit(t *testing.T) {
	const v1Max = "9223372036854771712\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		limit int64
		file  string // relative to root; "" for none
		err   string
	}{
		{
			name: "v2 container (cgroup namespace)",
			files: map[string]string{
				"proc/self/mountinfo":      v2Mounts,
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "536870912\n",
			},
			limit: 512 << 20, file: "sys/fs/cgroup/memory.max",
		},
		{
			name: "v2 unlimited",
			files: map[string]string{
				"proc/self/mountinfo":      v2Mounts,
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "max\n",
			},
			file: "sys/fs/cgroup/memory.max",
		},
		{
			name: "v2 host: the parent's limit binds",
			files: map[string]string{
				"proc/self/mountinfo":                            v2Mounts,
				"proc/self/cgroup":                               "0::/app.slice/svc.service\n",
				"sys/fs/cgroup/app.slice/memory.max":             "1000000\n",
				"sys/fs/cgroup/app.slice/svc.service/memory.max": "max\n",
			},
			limit: 1000000, file: "sys/fs/cgroup/app.slice/memory.max",
		},
		{
			name: "v2 host: the child's lower limit",
			files: map[string]string{
				"proc/self/mountinfo":                            v2Mounts,
				"proc/self/cgroup":                               "0::/app.slice/svc.service\n",
				"sys/fs/cgroup/app.slice/memory.max":             "1000000\n",
				"sys/fs/cgroup/app.slice/svc.service/memory.max": "2000\n",
			},
			limit: 2000, file: "sys/fs/cgroup/app.slice/svc.service/memory.max",
		},
		{
			name: "v2 container without namespace: the path is not under the mount",
			files: map[string]string{
				"proc/self/mountinfo":      v2Mounts,
				"proc/self/cgroup":         "0::/system.slice/docker-abc.scope\n",
				"sys/fs/cgroup/memory.max": "4096\n",
			},
			limit: 4096, file: "sys/fs/cgroup/memory.max",
		},
		{
			name: "v1 container",
			files: map[string]string{
				"proc/self/mountinfo":                        v1Mounts,
				"proc/self/cgroup":                           "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n",
			},
			limit: 256 << 20, file: "sys/fs/cgroup/memory/memory.limit_in_bytes",
		},
		{
			name: "v1 unlimited, hybrid mount without a v2 memory controller (this CI machine)",
			files: map[string]string{
				"proc/self/mountinfo":                                         hybridMounts,
				"proc/self/cgroup":                                            "4:memory:/process_api/d31b\n0::/\n",
				"sys/fs/cgroup/unified/cgroup.controllers":                    "",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":                  v1Max,
				"sys/fs/cgroup/memory/process_api/d31b/memory.limit_in_bytes": v1Max,
			},
			file: "sys/fs/cgroup/memory/process_api/d31b/memory.limit_in_bytes",
		},
		{
			name: "v1 with joined controllers",
			files: map[string]string{
				"proc/self/mountinfo": "33 30 0:30 / /sys/fs/cgroup/cpu,memory rw - cgroup cgroup rw,cpu,memory\n",
				"proc/self/cgroup":    "3:cpu,memory:/a\n",
				"sys/fs/cgroup/cpu,memory/a/memory.limit_in_bytes": "777\n",
			},
			limit: 777, file: "sys/fs/cgroup/cpu,memory/a/memory.limit_in_bytes",
		},
		{
			name:  "no cgroups at all (not Linux)",
			files: map[string]string{"etc/hostname": "x"},
		},
		// Issue 14: the mounts are where mountinfo says, not at fixed paths.
		{
			name: "no mountinfo: the usual path is not assumed",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "4096\n",
			},
		},
		{
			name: "v2 mounted elsewhere",
			files: map[string]string{
				"proc/self/mountinfo":      "25 1 0:22 / /run/cg2 rw - cgroup2 none rw\n",
				"proc/self/cgroup":         "0::/svc\n",
				"run/cg2/svc/memory.max":   "4096\n",
				"sys/fs/cgroup/memory.max": "999\n", // a stale copy where the mount usually is
			},
			limit: 4096, file: "run/cg2/svc/memory.max",
		},
		{
			name: "v2 mount point with a space (escaped in mountinfo)",
			files: map[string]string{
				"proc/self/mountinfo":   "25 1 0:22 / /my\\040cgroups rw - cgroup2 cgroup2 rw\n",
				"proc/self/cgroup":      "0::/\n",
				"my cgroups/memory.max": "8192\n",
			},
			limit: 8192, file: "my cgroups/memory.max",
		},
		{
			name: "v1 container without namespace: the path is relative to the mount's root",
			files: map[string]string{
				"proc/self/mountinfo": "30 22 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" +
					"34 30 0:31 /docker/abc /sys/fs/cgroup/memory ro,nosuid master:15 - cgroup cgroup rw,memory\n",
				"proc/self/cgroup":                               "4:memory:/docker/abc/job\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":     "1000\n", // the container's
				"sys/fs/cgroup/memory/job/memory.limit_in_bytes": "500\n",  // the job's, lower
			},
			limit: 500, file: "sys/fs/cgroup/memory/job/memory.limit_in_bytes",
		},
		{
			name: "v2 container without namespace: the mount's root is the container's cgroup",
			files: map[string]string{
				"proc/self/mountinfo":      "30 22 0:27 /system.slice/docker-abc.scope /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n",
				"proc/self/cgroup":         "0::/system.slice/docker-abc.scope\n",
				"sys/fs/cgroup/memory.max": "4096\n",
			},
			limit: 4096, file: "sys/fs/cgroup/memory.max",
		},
		{
			name: "garbled",
			files: map[string]string{
				"proc/self/mountinfo":      v2Mounts,
				"sys/fs/cgroup/memory.max": "lots\n",
			},
			err: "cannot parse memory limit \"lots\"",
		},
		{
			name: "negative v2",
			files: map[string]string{
				"proc/self/mountinfo":      v2Mounts,
				"sys/fs/cgroup/memory.max": "-5\n",
			},
			err: "cannot parse memory limit",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tree(t, tc.files)
			limit, file, err := CgroupMemoryLimit(root)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.ErrorContains(t, err, root, "names the file")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.limit, limit)
			if tc.file == "" {
				require.Empty(t, file)
			} else {
				require.Equal(t, filepath.Join(root, filepath.FromSlash(tc.file)), file)
			}
		})
	}
}

// On this machine CgroupMemoryLimit must agree with the cgroup files found
// another way: the memory hierarchy is the mount whose controllers include
// memory, this process's cgroup is the directory under it whose cgroup.procs
// lists its pid, and the limit is the lowest along that directory's path up
// to the mount point.
func TestCgroupMemoryLimitOnThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("cgroups are Linux's")
	}
	limit, file, err := CgroupMemoryLimit("/")
	require.NoError(t, err)

	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	var mount, name string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		fstype, super := f[len(f)-3], f[len(f)-1]
		if fstype == "cgroup2" && mount == "" {
			if c, err := os.ReadFile(filepath.Join(f[4], "cgroup.controllers")); err == nil &&
				slices.Contains(strings.Fields(string(c)), "memory") {
				mount, name = f[4], "memory.max"
			}
		}
		if fstype == "cgroup" && slices.Contains(strings.Split(super, ","), "memory") && mount == "" {
			mount, name = f[4], "memory.limit_in_bytes"
		}
	}
	if mount == "" {
		require.Zero(t, limit, "no memory controller is mounted")
		require.Empty(t, file)
		return
	}
	pid := strconv.Itoa(os.Getpid())
	var ours string
	require.NoError(t, filepath.WalkDir(mount, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || ours != "" {
			return nil
		}
		procs, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err == nil && slices.Contains(strings.Fields(string(procs)), pid) {
			ours = p
			return filepath.SkipAll
		}
		return nil
	}))
	if ours == "" {
		t.Skipf("this process's cgroup is not visible under %s (another namespace)", mount)
	}

	var want int64
	var wantFile, deepest string
	for dir := ours; ; dir = filepath.Dir(dir) {
		f := filepath.Join(dir, name)
		if data, err := os.ReadFile(f); err == nil {
			if deepest == "" {
				deepest = f
			}
			v := strings.TrimSpace(string(data))
			n, err := strconv.ParseInt(v, 10, 64)
			if v != "max" && err == nil && n < 1<<62 && (want == 0 || n < want) {
				want, wantFile = n, f
			}
		}
		if dir == mount || dir == "/" {
			break
		}
	}
	t.Logf("cgroup %s: limit %d from %q; CgroupMemoryLimit says %d from %q", ours, want, wantFile, limit, file)
	require.Equal(t, want, limit)
	if want == 0 {
		wantFile = deepest // unlimited: the deepest file read
	}
	require.Equal(t, wantFile, file)
}

// fakeLimit records debug.SetMemoryLimit calls.
type fakeLimit struct {
	cur  int64
	sets []int64
}

func (f *fakeLimit) set(v int64) int64 {
	prev := f.cur
	if v >= 0 {
		f.cur = v
		f.sets = append(f.sets, v)
	}
	return prev
}

func TestSetMemoryLimit(t *testing.T) {
	container := tree(t, map[string]string{
		"proc/self/mountinfo":      v2Mounts,
		"proc/self/cgroup":         "0::/\n",
		"sys/fs/cgroup/memory.max": "1000000000\n",
	})
	noEnv := func(string) string { return "" }

	lim := &fakeLimit{cur: math.MaxInt64}
	res, err := setMemoryLimit(0.8, limitEnv{root: container, getenv: noEnv, set: lim.set})
	require.NoError(t, err)
	require.Equal(t, LimitResult{
		Action: LimitSet, Limit: 800000000, Previous: math.MaxInt64,
		CgroupLimit: 1000000000, CgroupFile: filepath.Join(container, "sys/fs/cgroup/memory.max"),
	}, res)
	require.Equal(t, []int64{800000000}, lim.sets)
	require.Contains(t, res.String(), "memory limit set to 762.9 MiB (cgroup limit 953.7 MiB from ")
	require.Contains(t, res.String(), "; was none)")

	// An explicit GOMEMLIMIT always wins: nothing is set.
	lim = &fakeLimit{cur: 256 << 20}
	env := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "256MiB"
		}
		return ""
	}
	res, err = setMemoryLimit(0.8, limitEnv{root: container, getenv: env, set: lim.set})
	require.NoError(t, err)
	require.Equal(t, LimitResult{Action: LimitKeptEnv, Limit: 256 << 20, Previous: 256 << 20}, res)
	require.Empty(t, lim.sets)
	require.Equal(t, "memory limit 256.0 MiB left alone: GOMEMLIMIT is set", res.String())

	// Outside a container nothing is set.
	lim = &fakeLimit{cur: math.MaxInt64}
	res, err = setMemoryLimit(0.8, limitEnv{root: t.TempDir(), getenv: noEnv, set: lim.set})
	require.NoError(t, err)
	require.Equal(t, LimitNoCgroupLimit, res.Action)
	require.Empty(t, lim.sets)
	require.Equal(t, "memory limit none left alone: no cgroup memory limit", res.String())

	// A file that cannot be read is an error, and nothing is set.
	broken := tree(t, map[string]string{"proc/self/mountinfo": v2Mounts, "sys/fs/cgroup/memory.max": "?"})
	_, err = setMemoryLimit(0.8, limitEnv{root: broken, getenv: noEnv, set: lim.set})
	require.Error(t, err)
	require.Empty(t, lim.sets)
}

func TestSetMemoryLimitRejectsBadFractionFirst(t *testing.T) {
	for _, f := range []float64{0, -1, 1.5, math.NaN()} {
		res, err := SetMemoryLimit(f)
		require.ErrorContains(t, err, "memwatch: memory limit fraction must be in (0, 1]")
		require.Zero(t, res)
	}
}

// Near MaxInt64 the float product rounds up to 2^63, which must not wrap
// into a tiny limit.
func TestComputeLimitDoesNotOverflowNearMaxInt64(t *testing.T) {
	for _, cg := range []int64{math.MaxInt64, math.MaxInt64 - 100} {
		got, action, err := ComputeLimit(cg, 1, "")
		if err != nil || action != LimitSet {
			t.Fatalf("ComputeLimit(%d, 1) = %v, %v", cg, action, err)
		}
		if got < cg/2 {
			t.Fatalf("ComputeLimit(%d, 1) = %d bytes, want about %d", cg, got, cg)
		}
	}
}
