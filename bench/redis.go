package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process the program started: on a free loopback
// port (never 6379, where the machine may run its own Redis), with
// persistence off, stopped by its own process handle. If the program dies,
// the kernel kills it too (Pdeathsig).
//
// The bounded module's internal/redistest does the same for tests; an
// internal package of another module cannot be imported, and this one needs
// no testing.TB, so the bench has its own.
//
// Start it with startServer; Close stops it and removes its directory. Its
// methods are safe for concurrent use.
type Server struct {
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error

	// admin is the harness's own connection (one, never retried): resets,
	// INFO. Connection counts leave it out.
	admin *redis.Client
}

// startServer starts a redis-server and waits until it answers PING.
func startServer(ctx context.Context) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found on PATH (Debian: apt-get install redis-server)")
	}
	dir, err := os.MkdirTemp("", "bounded-bench-redis-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	for range 5 { // the free port may be taken before redis-server binds it
		if s.port, err = freePort(); err != nil {
			break
		}
		if err = s.start(ctx); err == nil {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	s.admin = newAdmin(s.Addr())
	return s, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if port == 6379 {
		return 0, errors.New("the kernel offered port 6379; refusing to go near the machine's own Redis")
	}
	return port, nil
}

// Addr returns host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *Server) start(ctx context.Context) error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "yes",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
		"--loglevel", "warning",
	)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // ends when the process exits; Stop collects it
	if err := waitPing(ctx, s.Addr(), exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w\n%s", err, out.String())
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

// waitPing waits until addr answers PING, the process exits, or 10s pass.
func waitPing(ctx context.Context, addr string, exited <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited before answering PING: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		err := ping(addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING within 10s: %v", addr, err)
		}
		time.Sleep(5 * time.Millisecond) // a process we just started, with a deadline
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
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	return nil
}

// Stop stops the process (SIGTERM, SIGKILL after 5s) and waits for it.
// Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
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

// Restart starts a stopped server again on the same port, empty, with a
// new harness connection: go-redis keeps answering with the last dial error
// for a while after dials failed.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	running := s.cmd != nil
	s.mu.Unlock()
	if running {
		return fmt.Errorf("redis-server on %s is running", s.Addr())
	}
	if err := s.start(ctx); err != nil {
		return err
	}
	_ = s.admin.Close()
	s.admin = newAdmin(s.Addr())
	return nil
}

func newAdmin(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, ClientName: "bench-harness"})
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	err := s.Stop()
	_ = s.admin.Close()
	return errors.Join(err, os.RemoveAll(s.dir))
}

// Reset empties the server and its statistics so that every run starts
// from the same state: no data, no cached scripts, zeroed commandstats.
func (s *Server) Reset(ctx context.Context) error {
	if err := s.admin.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("FLUSHALL: %w", err)
	}
	if err := s.admin.ScriptFlush(ctx).Err(); err != nil {
		return fmt.Errorf("SCRIPT FLUSH: %w", err)
	}
	if err := s.admin.ConfigResetStat(ctx).Err(); err != nil {
		return fmt.Errorf("CONFIG RESETSTAT: %w", err)
	}
	return nil
}

// cmdStat is one line of INFO commandstats.
type cmdStat struct {
	Calls int64
	Usec  int64
}

// harnessCommands are the commands the harness itself sends; they are left
// out of every count of what an implementation sent.
var harnessCommands = []string{"info", "flushall", "script|flush", "config|resetstat"}

// CommandStats returns INFO commandstats by command name ("get",
// "client|setinfo"). Commands run inside Lua scripts are counted too.
func (s *Server) CommandStats(ctx context.Context) (map[string]cmdStat, error) {
	info, err := s.admin.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats: %w", err)
	}
	return parseCommandStats(info), nil
}

// Calls returns the commands the server processed since the last Reset,
// the harness's own left out.
func (s *Server) Calls(ctx context.Context) (int64, error) {
	st, err := s.CommandStats(ctx)
	if err != nil {
		return 0, err
	}
	return totalCalls(st, harnessCommands...), nil
}

// Clients returns the connections open now, the harness's own left out.
func (s *Server) Clients(ctx context.Context) (int, error) {
	info, err := s.admin.Info(ctx, "clients").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO clients: %w", err)
	}
	n, ok := infoField(info, "connected_clients")
	if !ok {
		return 0, errors.New("INFO clients has no connected_clients")
	}
	v, err := strconv.Atoi(n)
	if err != nil {
		return 0, fmt.Errorf("connected_clients %q: %w", n, err)
	}
	return v - 1, nil
}

// parseCommandStats parses the text of INFO commandstats.
func parseCommandStats(info string) map[string]cmdStat {
	out := map[string]cmdStat{}
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		var st cmdStat
		for f := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "calls":
				st.Calls, _ = strconv.ParseInt(v, 10, 64)
			case "usec":
				st.Usec, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		out[name] = st
	}
	return out
}

// totalCalls sums the calls of a commandstats map, leaving out the commands
// named in except.
func totalCalls(st map[string]cmdStat, except ...string) int64 {
	var n int64
	for name, s := range st {
		if !slices.Contains(except, name) {
			n += s.Calls
		}
	}
	return n
}

// infoField returns the value of "name:value" in INFO text.
func infoField(info, name string) (string, bool) {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v, true
		}
	}
	return "", false
}
