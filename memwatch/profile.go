package memwatch

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

// Profile is a heap profile captured when an alert was raised, in the
// gzipped protobuf format `go tool pprof` reads.
type Profile struct {
	Time  time.Time `json:"time"`  // of the sample that raised the alert
	Alert AlertKind `json:"alert"` // the alert that caused the capture
	// Path is the file in Config.ProfileDir; empty when kept in memory.
	Path string `json:"path,omitempty"`
	// Data is the profile when kept in memory (nil when written to a file).
	// It is shared, not copied: do not modify it.
	Data []byte `json:"-"`
	Size int    `json:"size"` // bytes
}

// Names of the files a Watcher writes in Config.ProfileDir. The timestamp
// sorts in time order, so the oldest file is the first by name.
const (
	profilePrefix  = "memwatch-heap-"
	profileSuffix  = ".pb.gz"
	profileTempPat = ".memwatch-heap-*.tmp"
	profileTimeFmt = "20060102T150405.000000000Z"
)

// profiler holds the state of profile capture. Its fields are only touched
// under the Watcher's tick lock; the profiles kept are in Watcher.profiles,
// under Watcher.mu.
type profiler struct {
	dir    string
	every  time.Duration
	logger *slog.Logger
	last   time.Time // of the last capture attempt
	tried  bool
	// write writes a heap profile. debug=0 writes the binary format without
	// calling runtime.ReadMemStats, so capture does not stop the world.
	write func(io.Writer) error
}

func writeHeapProfile(w io.Writer) error { return pprof.Lookup("heap").WriteTo(w, 0) }

// captureProfile captures a heap profile for an alert of kind raised at now,
// unless capture is off or one was attempted less than ProfileInterval ago.
// It runs on the sampling goroutine after the alert was delivered, without
// Watcher.mu held except to record the result.
func (w *Watcher) captureProfile(now time.Time, kind AlertKind) {
	if w.profiles.Cap() == 0 {
		return
	}
	p := &w.prof
	if p.tried && now.Sub(p.last) < p.every {
		w.mu.Lock()
		w.stats.ProfilesRateLimited++
		w.mu.Unlock()
		p.logger.Debug("memwatch: heap profile skipped: rate limited", "kind", kind, "last", p.last)
		return
	}
	// A failed attempt counts too, so a broken disk is not retried on every
	// sample.
	p.tried, p.last = true, now

	prof, err := p.capture(now, kind)
	if err != nil {
		w.mu.Lock()
		w.stats.ProfileErrors++
		w.mu.Unlock()
		p.logger.Error("memwatch: heap profile capture failed", "kind", kind, "err", err)
		return
	}
	w.mu.Lock()
	evicted, full := Profile{}, w.profiles.Len() == w.profiles.Cap()
	if full {
		evicted = w.profiles.At(0)
	}
	w.profiles.Push(prof)
	w.stats.Profiles++
	w.mu.Unlock()
	p.logger.Info("memwatch: heap profile captured", "kind", kind, "path", prof.Path, "bytes", prof.Size)
	if full {
		p.remove(evicted)
	}
}

// capture writes one heap profile to memory or to a new file in dir.
func (p *profiler) capture(now time.Time, kind AlertKind) (Profile, error) {
	write := p.write
	if write == nil {
		write = writeHeapProfile
	}
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return Profile{}, fmt.Errorf("memwatch: heap profile: %w", err)
	}
	prof := Profile{Time: now, Alert: kind, Size: buf.Len()}
	if p.dir == "" {
		prof.Data = buf.Bytes()
		return prof, nil
	}
	path, err := writeFileAtomic(p.dir, profileName(now, kind), buf.Bytes())
	if err != nil {
		return Profile{}, err
	}
	prof.Path = path
	return prof, nil
}

func (p *profiler) remove(old Profile) {
	if old.Path == "" {
		return
	}
	if err := os.Remove(old.Path); err != nil && !os.IsNotExist(err) {
		p.logger.Error("memwatch: cannot remove old heap profile", "path", old.Path, "err", err)
	}
}

func profileName(t time.Time, kind AlertKind) string {
	return profilePrefix + t.UTC().Format(profileTimeFmt) + "-" + string(kind) + profileSuffix
}

// parseProfileName is the inverse of profileName.
func parseProfileName(name string) (time.Time, AlertKind, bool) {
	rest, ok := strings.CutPrefix(name, profilePrefix)
	if !ok {
		return time.Time{}, "", false
	}
	if rest, ok = strings.CutSuffix(rest, profileSuffix); !ok {
		return time.Time{}, "", false
	}
	ts, kind, ok := strings.Cut(rest, "-")
	if !ok || kind == "" {
		return time.Time{}, "", false
	}
	t, err := time.Parse(profileTimeFmt, ts)
	if err != nil {
		return time.Time{}, "", false
	}
	return t, AlertKind(kind), true
}

// writeFileAtomic writes data to dir/name through a temporary file, so a
// crash never leaves a truncated profile under the final name.
func writeFileAtomic(dir, name string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, profileTempPat)
	if err != nil {
		return "", fmt.Errorf("memwatch: heap profile: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	path := filepath.Join(dir, name)
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("memwatch: heap profile: %w", err)
	}
	return path, nil
}

// adoptProfiles prepares Config.ProfileDir: it creates it, removes temporary
// files a crash left behind, and takes the profiles an earlier process wrote
// into the bound, removing the oldest beyond MaxProfiles.
func (w *Watcher) adoptProfiles() error {
	dir := w.prof.dir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%w: Config.ProfileDir: %w", ErrInvalidConfig, err)
	}
	found, err := w.prof.leftBehind()
	if err != nil {
		return fmt.Errorf("%w: Config.ProfileDir: %w", ErrInvalidConfig, err)
	}
	for _, p := range found {
		if w.profiles.Len() == w.profiles.Cap() {
			w.prof.remove(w.profiles.At(0))
		}
		w.profiles.Push(p)
	}
	return nil
}

// leftBehind returns the profiles an earlier process wrote in the profile
// directory, oldest first, and removes the temporary files a crash left
// there. Files that are not ours are left alone.
func (p *profiler) leftBehind() ([]Profile, error) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	var found []Profile
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if ok, _ := filepath.Match(profileTempPat, e.Name()); ok {
			p.remove(Profile{Path: filepath.Join(p.dir, e.Name())})
			continue
		}
		if prof, ok := profileFile(p.dir, e); ok {
			found = append(found, prof)
		}
	}
	slices.SortFunc(found, func(a, b Profile) int { return a.Time.Compare(b.Time) })
	return found, nil
}

// profileFile returns the Profile that entry e of dir holds, if its name is
// one a Watcher writes.
func profileFile(dir string, e os.DirEntry) (Profile, bool) {
	t, kind, ok := parseProfileName(e.Name())
	if !ok {
		return Profile{}, false
	}
	info, err := e.Info()
	if err != nil {
		return Profile{}, false
	}
	return Profile{Time: t, Alert: kind, Path: filepath.Join(dir, e.Name()), Size: int(info.Size())}, true
}

// Profiles returns the heap profiles kept, oldest first: at most
// Config.MaxProfiles, including those adopted from Config.ProfileDir.
func (w *Watcher) Profiles() []Profile {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.profiles.Slice()
}
