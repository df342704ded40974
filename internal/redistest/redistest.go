// Package redistest gives tests a Redis: miniredis for logic (nothing to
// install), a real redis-server, started on a free loopback port and
// stopped by its own process handle, where Redis semantics matter (blocking
// commands, timeouts, CLIENT commands, Lua edge cases, restarts), and a real
// Redis Cluster of such servers (Cluster; Redis 7.0 or later).
//
// A machine may run its own Redis on 6379; nothing here ever connects to it.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// RequireEnv names the environment variable that turns a missing redis-server
// into a test failure instead of a skip. CI sets it to 1.
const RequireEnv = "BOUNDED_REQUIRE_REDIS"

// Mini starts a miniredis server for the test and closes it in t.Cleanup.
func Mini(t testing.TB) *miniredis.Miniredis {
	t.Helper()
	return miniredis.RunT(t)
}

// Options tune a real server.
type Options struct {
	// AppendOnly keeps data across Restart (--appendonly yes).
	AppendOnly bool
	// Args are extra redis-server arguments, e.g. "--maxmemory", "10mb".
	Args []string
	// Password sets --requirepass; Do authenticates with it.
	Password string
}

// Redis is a redis-server process started for one test.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	opts Options

	// busPort is the cluster bus port of a cluster node (0: not a node).
	busPort     int
	nodeTimeout time.Duration
	// sentinelConf is the config file of a Sentinel ("": a server).
	sentinelConf string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives the process's exit, once
	log    *limitedWriter
}

// Server starts a real redis-server on a free loopback port with persistence
// off, waits until it answers PING, and stops it in t.Cleanup. Without the
// binary the test is skipped, or fails when BOUNDED_REQUIRE_REDIS=1.
func Server(t testing.TB) *Redis {
	t.Helper()
	return ServerWith(t, Options{})
}

// ServerWith is Server with options.
func ServerWith(t testing.TB, opts Options) *Redis {
	t.Helper()
	bin := Binary(t, "redis-server")
	return launch(t, &Redis{t: t, bin: bin, dir: t.TempDir(), opts: opts})
}

// launch starts r on free ports (a few attempts: a port found free can be
// taken before the server binds it) and stops it in t.Cleanup.
func launch(t testing.TB, r *Redis) *Redis {
	t.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if r.port, err = FreePort(); err != nil {
			break
		}
		if r.nodeTimeout > 0 {
			// The cluster bus gets a port of its own (--cluster-port)
			// rather than port+10000, which may be out of range or taken.
			if r.busPort, err = FreePort(); err != nil {
				break
			}
			if r.busPort == r.port {
				continue
			}
		}
		if err = r.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("redistest: starting redis-server: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	return r
}

// Binary returns the path of a Redis binary (redis-server, redis-cli), or
// skips the test (fails it when BOUNDED_REQUIRE_REDIS=1) when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("redistest: %s not found on PATH and %s=1: install it (Debian: apt-get install redis-server)", name, RequireEnv)
	}
	t.Skipf("redistest: %s not found on PATH; skipping a test that needs a real Redis (set %s=1 to fail instead)", name, RequireEnv)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (r *Redis) args() []string {
	if r.sentinelConf != "" {
		// Sentinel rewrites its config file (it records what it learns
		// there), so the file is the first argument and lives in dir.
		return []string{r.sentinelConf, "--sentinel",
			"--port", strconv.Itoa(r.port),
			"--bind", "127.0.0.1",
			"--dir", r.dir,
			"--daemonize", "no",
			"--logfile", "",
		}
	}
	aof := "no"
	if r.opts.AppendOnly {
		aof = "yes"
	}
	a := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "yes",
		"--save", "",
		"--appendonly", aof,
		"--dir", r.dir,
		"--daemonize", "no",
		"--logfile", "",
	}
	if r.nodeTimeout > 0 {
		a = append(a,
			"--cluster-enabled", "yes",
			"--cluster-port", strconv.Itoa(r.busPort),
			// In the node's own directory, so Stop and Start keep its
			// identity and its place in the cluster.
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(r.nodeTimeout.Milliseconds(), 10),
			// A replica's full sync starts at once instead of after
			// Redis's default 5s wait for more replicas.
			"--repl-diskless-sync-delay", "0",
		)
	}
	if r.opts.Password != "" {
		a = append(a, "--requirepass", r.opts.Password)
	}
	return append(a, r.opts.Args...)
}

// start launches the process and waits for PING; the caller holds no lock.
func (r *Redis) start() error {
	cmd := exec.Command(r.bin, r.args()...)
	log := &limitedWriter{max: 64 << 10}
	cmd.Stdout = log
	cmd.Stderr = log
	// If the test binary dies, the kernel kills the server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := waitPing(r.Addr(), exited, 10*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w\n%s", err, log.String())
	}
	// The waiter goroutine above runs until the process exits; Stop and
	// Kill collect it.
	r.mu.Lock()
	r.cmd, r.exited, r.log = cmd, exited, log
	r.mu.Unlock()
	return nil
}

// waitPing waits until the server answers PING, the process exits, or the
// deadline passes.
func waitPing(addr string, exited <-chan error, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited before answering PING: %v", err)
		default:
		}
		if err := ping(addr); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING within %s: %v", addr, within, err)
		}
		time.Sleep(5 * time.Millisecond) // polling a process we just started, with a deadline
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// A server with a password answers NOAUTH: it is up.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	return nil
}

// Addr returns host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL returns redis://host:port.
func (r *Redis) URL() string { return "redis://" + r.Addr() }

// Dir returns the server's working directory (where an AOF lives).
func (r *Redis) Dir() string { return filepath.Clean(r.dir) }

// PID returns the server's process id, or 0 when it is stopped.
func (r *Redis) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Stop stops the server by its process handle (SIGTERM, then SIGKILL after
// 5s) and waits for it to exit. Stopping a stopped server does nothing.
func (r *Redis) Stop() error {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server pid %d ignored SIGTERM for 5s and was killed", cmd.Process.Pid)
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (r *Redis) Kill() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Start starts a stopped server again on the same port and directory (with
// AppendOnly, with the same data).
func (r *Redis) Start() {
	r.t.Helper()
	if r.PID() != 0 {
		r.t.Fatalf("redistest: Start: server on %s is running", r.Addr())
	}
	if err := r.start(); err != nil {
		r.t.Fatalf("redistest: restarting redis-server on %s: %v", r.Addr(), err)
	}
}

// Restart stops the server and starts it again on the same port.
func (r *Redis) Restart() {
	r.t.Helper()
	if err := r.Stop(); err != nil {
		r.t.Fatalf("redistest: %v", err)
	}
	r.Start()
}

// Log returns what the server printed (its last 64 KiB at most).
func (r *Redis) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.log == nil {
		return ""
	}
	return r.log.String()
}

// Do sends one command on a fresh connection (authenticated first when the
// server has a password) and returns the raw RESP reply (for assertions that
// need no client library, like INFO or CLIENT LIST).
func (r *Redis) Do(ctx context.Context, args ...string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.Addr())
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	var b strings.Builder
	writeCmd := func(args ...string) {
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	r.mu.Lock()
	password := r.opts.Password
	r.mu.Unlock()
	if password != "" {
		writeCmd("AUTH", password)
	}
	writeCmd(args...)
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	if password != "" {
		if _, err := readReply(rd); err != nil {
			return "", fmt.Errorf("redistest: AUTH: %w", err)
		}
	}
	return readReply(rd)
}

// SetPassword changes the server's password (CONFIG SET requirepass) and the
// one Do authenticates with. Connections already authenticated stay so.
func (r *Redis) SetPassword(ctx context.Context, password string) error {
	if _, err := r.Do(ctx, "CONFIG", "SET", "requirepass", password); err != nil {
		return err
	}
	r.mu.Lock()
	r.opts.Password = password
	r.mu.Unlock()
	return nil
}

// limitedWriter keeps the last max bytes a process printed.
type limitedWriter struct {
	mu  sync.Mutex
	b   bytes.Buffer
	max int
}

func (w *limitedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len()+len(p) > w.max {
		// Keep the tail: the last lines say why a server died.
		keep := w.b.Bytes()[min(w.b.Len(), len(p)):]
		nb := append([]byte(nil), keep...)
		w.b.Reset()
		w.b.Write(nb)
	}
	return w.b.Write(p)
}
