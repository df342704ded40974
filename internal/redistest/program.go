package redistest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// Launch starts a real redis-server for a program rather than a test (the
// bench module's comparison): as ServerWith, on a free loopback port in a
// directory of its own, but it returns its errors instead of failing a test,
// and the caller stops it with Close, which also removes the directory. If
// the program dies, the kernel kills the server too.
func Launch(opts Options) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redistest: redis-server not found on PATH (Debian: apt-get install redis-server)")
	}
	dir, err := os.MkdirTemp("", "bounded-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{bin: bin, dir: dir, opts: opts}
	for range 5 { // a port found free can be taken before the server binds it
		if r.port, err = FreePort(); err != nil {
			break
		}
		if err = r.start(); err == nil {
			return r, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("redistest: starting redis-server: %w", err)
}

// Relaunch starts a stopped server again on the same port and directory, as
// Start does, returning the error Start would fail its test with. It is
// for servers from Launch, which have no test to fail.
func (r *Redis) Relaunch() error {
	if r.PID() != 0 {
		return fmt.Errorf("redistest: Relaunch: server on %s is running", r.Addr())
	}
	return r.start()
}

// Close stops the server and removes its directory. Servers from Launch
// must be closed; those of a test are stopped in its Cleanup.
func (r *Redis) Close() error {
	return errors.Join(r.Stop(), os.RemoveAll(r.dir))
}
