package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// runner runs the selected scenarios' cases on one server: every case
// repetition by repetition, each repetition running every implementation
// once in a rotated order, each run on a freshly reset server.
type runner struct {
	srv   *Server
	sizes Sizes
	reps  int
	res   *Results
	prog  *progress
}

// steps counts the progress steps of scenarios: one per run, one per
// isolated repetition.
func steps(scens []Scenario, reps int) int {
	n := 0
	for _, s := range scens {
		for _, c := range s.Cases {
			if c.Isolated {
				n += reps
			} else {
				n += reps * len(c.impls())
			}
		}
	}
	return n
}

func (rn *runner) scenario(ctx context.Context, s *Scenario) error {
	for _, c := range s.Cases {
		for rep := range rn.reps {
			if c.Isolated {
				rn.prog.step("%s: %s, rep %d/%d, all implementations at once", s.Name, c.Name, rep+1, rn.reps)
				rn.isolated(ctx, s, c, rep)
			} else {
				for _, impl := range rotate(c.impls(), rep) {
					rn.prog.step("%s: %s, rep %d/%d, %s", s.Name, c.Name, rep+1, rn.reps, s.column(impl))
					if err := rn.srv.Reset(ctx); err != nil {
						return fmt.Errorf("resetting the server: %w", err)
					}
					rn.one(ctx, s, c, impl, rep, rn.srv)
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// one runs a case once; an error is recorded as a failed check, so a peer
// that breaks does not stop the other measurements.
func (rn *runner) one(ctx context.Context, s *Scenario, c Case, impl Impl, rep int, srv *Server) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = defaultRunTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := &Run{Impl: impl, Redis: srv, Sizes: rn.sizes, Rep: rep, res: rn.res, scen: s, cname: c.Name}
	if err := c.run(impl)(ctx, r); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("did not finish within %s: %w", timeout, err)
		}
		r.Check(false, "run failed: %v", err)
	}
}

// isolated runs every implementation of c at the same time, each on a
// fresh server of its own.
func (rn *runner) isolated(ctx context.Context, s *Scenario, c Case, rep int) {
	var wg sync.WaitGroup
	for _, impl := range c.impls() {
		srv, err := startServer(ctx)
		if err != nil {
			rn.res.check(s, false, fmt.Sprintf("%s, %s, %s: %v", s.Name, c.Name, s.column(impl), err))
			continue
		}
		wg.Go(func() { // ends with the run; waited for below
			defer srv.Close()
			rn.one(ctx, s, c, impl, rep, srv)
		})
	}
	wg.Wait()
}

// progress prints one line per step to stderr: rewritten in place on a
// terminal, one line each otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	total int
	done  int
	width int
}

func newProgress(w io.Writer, total int) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, start: time.Now(), total: total}
}

func (p *progress) step(format string, args ...any) {
	p.done++
	line := fmt.Sprintf("[%*d/%d %s] %s", len(fmt.Sprint(p.total)), p.done, p.total, fmtElapsed(time.Since(p.start)), fmt.Sprintf(format, args...))
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	pad := max(p.width-len(line), 0)
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// finish ends the progress line.
func (p *progress) finish() {
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintf(p.w, "done in %s\n", fmtElapsed(time.Since(p.start)))
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
