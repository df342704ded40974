package memwatch

import (
	"math"
	"os"
	"path/filepath"
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
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "536870912\n",
			},
			limit: 512 << 20, file: "sys/fs/cgroup/memory.max",
		},
		{
			name: "v2 unlimited",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "max\n",
			},
			file: "sys/fs/cgroup/memory.max",
		},
		{
			name: "v2 host: the parent's limit binds",
			files: map[string]string{
				"proc/self/cgroup":                               "0::/app.slice/svc.service\n",
				"sys/fs/cgroup/app.slice/memory.max":             "1000000\n",
				"sys/fs/cgroup/app.slice/svc.service/memory.max": "max\n",
			},
			limit: 1000000, file: "sys/fs/cgroup/app.slice/memory.max",
		},
		{
			name: "v2 host: the child's lower limit",
			files: map[string]string{
				"proc/self/cgroup":                               "0::/app.slice/svc.service\n",
				"sys/fs/cgroup/app.slice/memory.max":             "1000000\n",
				"sys/fs/cgroup/app.slice/svc.service/memory.max": "2000\n",
			},
			limit: 2000, file: "sys/fs/cgroup/app.slice/svc.service/memory.max",
		},
		{
			name: "v2 container without namespace: the path is not under the mount",
			files: map[string]string{
				"proc/self/cgroup":         "0::/system.slice/docker-abc.scope\n",
				"sys/fs/cgroup/memory.max": "4096\n",
			},
			limit: 4096, file: "sys/fs/cgroup/memory.max",
		},
		{
			name: "v1 container",
			files: map[string]string{
				"proc/self/cgroup":                           "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n",
			},
			limit: 256 << 20, file: "sys/fs/cgroup/memory/memory.limit_in_bytes",
		},
		{
			name: "v1 unlimited, hybrid mount without a v2 memory controller (this CI machine)",
			files: map[string]string{
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
				"proc/self/cgroup": "3:cpu,memory:/a\n",
				"sys/fs/cgroup/memory/a/memory.limit_in_bytes": "777\n",
			},
			limit: 777, file: "sys/fs/cgroup/memory/a/memory.limit_in_bytes",
		},
		{
			name:  "no cgroups at all (not Linux)",
			files: map[string]string{"etc/hostname": "x"},
		},
		{
			name: "garbled",
			files: map[string]string{
				"sys/fs/cgroup/memory.max": "lots\n",
			},
			err: "cannot parse memory limit \"lots\"",
		},
		{
			name: "negative v2",
			files: map[string]string{
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

func TestCgroupMemoryLimitOnThisMachine(t *testing.T) {
	limit, _, err := CgroupMemoryLimit("/")
	require.NoError(t, err)
	require.GreaterOrEqual(t, limit, int64(0))
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
	broken := tree(t, map[string]string{"sys/fs/cgroup/memory.max": "?"})
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
