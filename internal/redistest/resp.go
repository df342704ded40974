package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// readReply reads one RESP2 reply and renders it as text: arrays become one
// element per line. A Redis error reply is returned as an error.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("redistest: empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			s, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("redistest: unexpected reply %q", line)
}

// CommandStats returns the calls per command from INFO commandstats, e.g.
// {"blmove": 12, "evalsha": 3}. Counts include the INFO calls themselves
// ("info"); subtract them when measuring traffic.
func (r *Redis) CommandStats(ctx context.Context) (map[string]int64, error) {
	info, err := r.Do(ctx, "INFO", "commandstats")
	if err != nil {
		return nil, err
	}
	return ParseCommandStats(info), nil
}

// ParseCommandStats parses the text of INFO commandstats.
func ParseCommandStats(info string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[name] = n
			}
		}
	}
	return out
}

// TotalCalls sums the calls of a CommandStats map, leaving out the commands
// named in except (e.g. "info", "client|list").
func TotalCalls(stats map[string]int64, except ...string) int64 {
	var n int64
outer:
	for name, c := range stats {
		for _, e := range except {
			if name == e {
				continue outer
			}
		}
		n += c
	}
	return n
}

// Clients returns CLIENT LIST, one line per connection.
func (r *Redis) Clients(ctx context.Context) ([]string, error) {
	s, err := r.Do(ctx, "CLIENT", "LIST")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}
