package memwatch

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// raiseEvery raises (and clears) the goroutine alert once per step.
func raiseEvery(f *fake, w *Watcher, n int, step time.Duration) {
	for range n {
		f.clk.Advance(step)
		f.s.Goroutines = 100
		w.Tick()
		f.s.Goroutines = 10
		w.Tick()
	}
}

func TestProfilesInMemoryAreBoundedAndRateLimited(t *testing.T) {
	f := newFake()
	w := newWatcher(t, f.config(Config{Goroutines: 100, MaxProfiles: 2, ProfileInterval: time.Minute}))

	raiseEvery(f, w, 1, time.Second)
	got := w.Profiles()
	require.Len(t, got, 1)
	require.Equal(t, AlertGoroutines, got[0].Alert)
	require.Equal(t, f.clk.Now(), got[0].Time)
	require.Empty(t, got[0].Path)
	require.Equal(t, []byte{0x1f, 0x8b}, got[0].Data[:2], "gzipped pprof")
	require.Equal(t, len(got[0].Data), got[0].Size)

	raiseEvery(f, w, 3, 10*time.Second) // within the minute: skipped
	require.Len(t, w.Profiles(), 1)
	require.Equal(t, uint64(3), w.Stats().ProfilesRateLimited)

	raiseEvery(f, w, 3, time.Minute)
	got = w.Profiles()
	require.Len(t, got, 2, "at most MaxProfiles, oldest dropped")
	require.Equal(t, f.clk.Now(), got[1].Time)
	require.Equal(t, f.clk.Now().Add(-time.Minute), got[0].Time)
	require.Equal(t, uint64(4), w.Stats().Profiles)
}

func TestProfilesInADirectoryAreBoundedAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "profiles") // created by New
	f := newFake()
	cfg := f.config(Config{Goroutines: 100, MaxProfiles: 2, ProfileDir: dir, ProfileInterval: time.Minute})
	w := newWatcher(t, cfg)
	raiseEvery(f, w, 3, time.Minute)
	got := w.Profiles()
	require.Len(t, got, 2)
	for _, p := range got {
		require.Nil(t, p.Data)
		data, err := os.ReadFile(p.Path)
		require.NoError(t, err)
		require.Equal(t, p.Size, len(data))
		require.Equal(t, dir, filepath.Dir(p.Path))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	require.ElementsMatch(t, []string{got[0].Path, got[1].Path}, files, "the oldest file was removed")

	// A restart with a smaller bound: the new Watcher adopts what is there,
	// removes the oldest beyond its bound and leftovers of a crash, and
	// leaves files that are not its own alone.
	foreign := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(foreign, []byte("mine"), 0o644))
	tmp := filepath.Join(dir, ".memwatch-heap-123.tmp")
	require.NoError(t, os.WriteFile(tmp, []byte("half"), 0o644))
	cfg.MaxProfiles = 1
	w2 := newWatcher(t, cfg)
	adopted := w2.Profiles()
	require.Len(t, adopted, 1)
	require.Equal(t, got[1].Path, adopted[0].Path)
	require.Equal(t, got[1].Time, adopted[0].Time)
	require.Equal(t, AlertGoroutines, adopted[0].Alert)
	files, _ = filepath.Glob(filepath.Join(dir, "*"))
	require.ElementsMatch(t, []string{got[1].Path, foreign}, files)
	_, err := os.Stat(tmp)
	require.ErrorIs(t, err, os.ErrNotExist)

	// The next capture evicts the adopted file.
	raiseEvery(f, w2, 1, time.Hour)
	files, _ = filepath.Glob(filepath.Join(dir, "memwatch-*"))
	require.Len(t, files, 1)
	require.NotEqual(t, got[1].Path, files[0])
}

func TestProfileDirThatCannotBeCreatedFailsNew(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err := New(Config{MaxProfiles: 1, ProfileDir: filepath.Join(file, "sub")})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "ProfileDir")
}

func TestFailedCaptureIsCountedAndRateLimited(t *testing.T) {
	f := newFake()
	w := newWatcher(t, f.config(Config{Goroutines: 100, MaxProfiles: 2}))
	w.prof.write = func(io.Writer) error { return errors.New("disk full") }
	raiseEvery(f, w, 3, time.Second)
	st := w.Stats()
	require.Equal(t, uint64(1), st.ProfileErrors)
	require.Equal(t, uint64(2), st.ProfilesRateLimited, "a broken disk is not retried every sample")
	require.Empty(t, w.Profiles())
}

func TestProfileNames(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("x", 3600))
	name := profileName(at, AlertHeapGrowth)
	require.Equal(t, "memwatch-heap-20260304T040607.000000890Z-heap_growth.pb.gz", name)
	got, kind, ok := parseProfileName(name)
	require.True(t, ok)
	require.True(t, at.Equal(got))
	require.Equal(t, AlertHeapGrowth, kind)
	for _, bad := range []string{"notes.txt", "memwatch-heap-x-y.pb.gz", "memwatch-heap-20260304T040607.000000890Z.pb.gz",
		"memwatch-heap-20260304T040607.000000890Z-.pb.gz"} {
		_, _, ok := parseProfileName(bad)
		require.False(t, ok, bad)
	}
}
