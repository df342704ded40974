package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// machine describes where the numbers were measured.
type machine struct {
	Date  time.Time
	CPU   string
	Cores int
	OS    string
	Go    string
	Redis string
}

func describeMachine() machine {
	m := machine{
		Date:  time.Now().UTC(),
		CPU:   "unknown CPU",
		Cores: runtime.NumCPU(),
		OS:    runtime.GOOS + "/" + runtime.GOARCH,
		Go:    runtime.Version(),
		Redis: "unknown",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if v, ok := cpuModel(string(b)); ok {
			m.CPU = v
		}
	}
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		m.Redis = strings.TrimSpace(string(out))
	}
	return m
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo string) (string, bool) {
	for line := range strings.SplitSeq(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// report is the whole document: what ran where, then the tables.
func report(m machine, command string, reps int, took time.Duration, tables string) string {
	var b strings.Builder
	b.WriteString("# bounded and its peers, side by side\n\n")
	fmt.Fprintf(&b, "Measured on %s (UTC) with `%s`.\n\n", m.Date.Format("2006-01-02 15:04"), command)
	b.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s, %d cores, %s |\n", m.CPU, m.Cores, m.OS)
	fmt.Fprintf(&b, "| Go | %s |\n", m.Go)
	fmt.Fprintf(&b, "| Redis | %s |\n", m.Redis)
	fmt.Fprintf(&b, "| repetitions | %d per case; cells are median (min-max) |\n", reps)
	fmt.Fprintf(&b, "| run time | %s |\n\n", took.Round(time.Second))
	b.WriteString("Every run starts on an emptied server with zeroed statistics; implementations take turns " +
		"going first. The ratio column is bounded's median over the peer's: above 1 is better for " +
		"\"higher\" metrics, below 1 for \"lower\" ones. Redis commands are counted with INFO commandstats, " +
		"which includes the commands Lua scripts run.\n\n")
	b.WriteString(tables)
	return b.String()
}
