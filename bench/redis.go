package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/bounded-go/bounded/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process the program started, through the
// bounded module's internal/redistest (importable here: Go's internal rule
// goes by import path, and this module's path lies under bounded's): on a
// free loopback port (never the machine's own Redis on 6379), with
// persistence off, stopped by its own process handle, killed by the kernel
// if the program dies. On top of it the bench keeps one admin connection of
// its own for resets and INFO, which its counts leave out.
//
// Start it with startServer; Close stops it and removes its directory. Its
// methods are safe for concurrent use, except Restart, which the caller
// runs alone.
type Server struct {
	redis *redistest.Redis

	// admin is the harness's own connection (one, never retried): resets,
	// INFO. Connection counts leave it out.
	admin *redis.Client
}

// startServer starts a redis-server and waits until it answers PING.
func startServer(context.Context) (*Server, error) {
	r, err := redistest.Launch(redistest.Options{Args: []string{"--loglevel", "warning"}})
	if err != nil {
		return nil, err
	}
	return &Server{redis: r, admin: newAdmin(r.Addr())}, nil
}

// Addr returns host:port.
func (s *Server) Addr() string { return s.redis.Addr() }

// Stop stops the process (SIGTERM, SIGKILL after 5s) and waits for it.
// Stopping a stopped server does nothing.
func (s *Server) Stop() error { return s.redis.Stop() }

// Restart starts a stopped server again on the same port, empty, with a
// new harness connection: go-redis keeps answering with the last dial error
// for a while after dials failed.
func (s *Server) Restart(context.Context) error {
	if err := s.redis.Relaunch(); err != nil {
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
	err := s.redis.Close()
	_ = s.admin.Close()
	return err
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
