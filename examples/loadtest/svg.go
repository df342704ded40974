package main

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bounded-go/bounded/examples/internal/chatapi"
)

// chart is a stack of line-chart panels sharing one time axis, rendered as a
// self-contained SVG: no scripts, no external fonts or stylesheets, so a
// browser opens the file as it is.
type chart struct {
	title    string
	subtitle string
	xs       []float64 // seconds, ascending
	panels   []panel
	markers  []marker // vertical lines across every panel
}

type panel struct {
	title  string
	series []series
}

type series struct {
	name string
	ys   []float64 // one per chart.xs
}

type marker struct {
	x     float64
	label string
}

// Layout, in pixels.
const (
	svgWidth    = 1000
	marginLeft  = 70
	marginRight = 190 // the legend
	marginTop   = 64
	panelHeight = 130
	panelGap    = 56
	maxPoints   = 1500 // per series; longer series keep each bucket's maximum
)

// color returns the i-th series' colour.
func color(i int) string {
	palette := [...]string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}
	return palette[i%len(palette)]
}

// writeSVG renders c.
func (c chart) writeSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	height := marginTop + len(c.panels)*(panelHeight+panelGap)
	plotW := float64(svgWidth - marginLeft - marginRight)
	xmax := 1.0
	if n := len(c.xs); n > 0 {
		xmax = max(c.xs[n-1], 1)
	}
	xpos := func(x float64) float64 { return marginLeft + x/xmax*plotW }

	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(bw, "<title>%s</title>\n", esc(c.title))
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(bw, `<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", marginLeft, esc(c.title))
	fmt.Fprintf(bw, `<text x="%d" y="42" fill="#555">%s</text>`+"\n", marginLeft, esc(c.subtitle))

	step := niceStep(xmax, 8)
	for i, p := range c.panels {
		top := float64(marginTop + i*(panelHeight+panelGap) + 16)
		bottom := top + panelHeight
		ymax := 0.0
		for _, s := range p.series {
			for _, y := range s.ys {
				if !math.IsNaN(y) {
					ymax = max(ymax, y)
				}
			}
		}
		ymax = niceCeil(ymax)
		ypos := func(y float64) float64 { return bottom - y/ymax*panelHeight }

		fmt.Fprintf(bw, `<g class="panel"><text x="%d" y="%.1f" font-size="13" font-weight="bold">%s</text>`+"\n", marginLeft, top-6, esc(p.title))
		// Horizontal grid and y labels: 0, 1/4 ... ymax.
		for k := 0; k <= 4; k++ {
			y := ymax * float64(k) / 4
			fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`, marginLeft, ypos(y), marginLeft+plotW, ypos(y))
			fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", marginLeft-6, ypos(y)+4, esc(fmtNum(y)))
		}
		// Vertical grid and time labels.
		for x := 0.0; x <= xmax+1e-9; x += step {
			fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#f0f0f0"/>`, xpos(x), top, xpos(x), bottom)
			fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%s</text>`+"\n", xpos(x), bottom+14, esc(fmtSeconds(x)))
		}
		fmt.Fprintf(bw, `<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="none" stroke="#999"/>`+"\n", marginLeft, top, plotW, panelHeight)
		for _, m := range c.markers {
			fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333" stroke-dasharray="4 3"/>`, xpos(m.x), top, xpos(m.x), bottom)
			if i == 0 { // label it once, on the side with room
				x, anchor := xpos(m.x)+4, "start"
				if m.x > 0.8*xmax {
					x, anchor = xpos(m.x)-4, "end"
				}
				fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" text-anchor="%s" fill="#333">%s</text>`, x, top+12, anchor, esc(m.label))
			}
			fmt.Fprintln(bw)
		}
		for j, s := range p.series {
			color := color(j)
			xs, ys := downsample(c.xs, s.ys, maxPoints)
			var pts strings.Builder
			for k := range xs {
				if math.IsNaN(ys[k]) {
					continue
				}
				fmt.Fprintf(&pts, "%.1f,%.1f ", xpos(xs[k]), ypos(ys[k]))
			}
			fmt.Fprintf(bw, `<polyline data-series="%s" fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n",
				esc(s.name), color, strings.TrimSpace(pts.String()))
			ly := top + 14 + float64(j)*16
			last := ""
			if n := len(s.ys); n > 0 {
				last = " (" + fmtNum(s.ys[n-1]) + ")"
			}
			fmt.Fprintf(bw, `<rect x="%.1f" y="%.1f" width="12" height="3" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
				marginLeft+plotW+12, ly-4, color, marginLeft+plotW+28, ly, esc(s.name+last))
		}
		fmt.Fprintln(bw, "</g>")
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// downsample returns at most n points: when there are more, each bucket of
// consecutive points becomes its first x and its largest y, so a spike stays
// visible.
func downsample(xs, ys []float64, n int) ([]float64, []float64) {
	if len(xs) <= n {
		return xs, ys
	}
	b := (len(xs) + n - 1) / n
	ox, oy := make([]float64, 0, n), make([]float64, 0, n)
	for i := 0; i < len(xs); i += b {
		j := min(i+b, len(xs))
		m := math.NaN()
		for _, y := range ys[i:j] {
			if math.IsNaN(m) || y > m {
				m = y
			}
		}
		ox, oy = append(ox, xs[i]), append(oy, m)
	}
	return ox, oy
}

// niceCeil returns the smallest of 1, 2, 2.5, 5 times a power of ten that is
// at least v (1 for v <= 0), so axis ticks at quarters are round numbers.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v*(1-1e-12) {
			return m * p
		}
	}
	return 10 * p
}

// niceStep returns a round time step (seconds) giving at most n ticks over
// [0, span].
func niceStep(span float64, n int) float64 {
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400} {
		if span/s <= float64(n) {
			return s
		}
	}
	return math.Ceil(span/float64(n)/86400) * 86400
}

func fmtSeconds(s float64) string {
	return (time.Duration(math.Round(s)) * time.Second).String()
}

// fmtNum formats an axis value briefly: 950, 1.5k, 2.25M.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e9:
		return strconv.FormatFloat(v/1e9, 'g', 4, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// soakChart builds the chart of a soak: memory, goroutines, pool waiting,
// queue depth and the request rate over time, with the end of the load
// marked.
func soakChart(r *soakResult) chart {
	n := len(r.samples)
	xs := make([]float64, n)
	col := func(f func(sample) float64) []float64 {
		out := make([]float64, n)
		for i, s := range r.samples {
			out[i] = f(s)
		}
		return out
	}
	for i, s := range r.samples {
		xs[i] = s.T
	}
	// Rates between consecutive samples; the first has none.
	rate := func(f func(sample) float64) []float64 {
		out := make([]float64, n)
		for i := range r.samples {
			out[i] = math.NaN()
			if i > 0 {
				if dt := r.samples[i].T - r.samples[i-1].T; dt > 0 {
					out[i] = (f(r.samples[i]) - f(r.samples[i-1])) / dt
				}
			}
		}
		return out
	}
	mib := func(f func(sample) float64) []float64 {
		v := col(f)
		for i := range v {
			v[i] /= 1 << 20
		}
		return v
	}
	var queued []series
	for i, name := range chatapi.Queues() {
		queued = append(queued, series{name, col(func(s sample) float64 { return s.Queued[i] })})
	}
	return chart{
		title: "chatservice soak",
		subtitle: fmt.Sprintf("%d chats/s for %s against %s; %d sent, %d accepted, %d limited (429), %d failed",
			r.cfg.rate, r.cfg.duration, r.url, r.sent, r.accepted, r.limited, r.failed),
		xs: xs,
		panels: []panel{
			{"Live heap (MiB)", []series{{"heap live", mib(func(s sample) float64 { return s.HeapLive })}}},
			{"RSS (MiB)", []series{{"rss", mib(func(s sample) float64 { return s.RSS })}}},
			{"Goroutines", []series{
				{"goroutines", col(func(s sample) float64 { return s.Goroutines })},
				{"HTTP connections", col(func(s sample) float64 { return s.Conns })},
				{"own (not conns)", col(sample.own)},
			}},
			{"Callers waiting for a Redis connection", []series{{"pool waiting", col(func(s sample) float64 { return s.Waiting })}}},
			{"Queue depth (ready + delayed)", queued},
			{"Requests per second", []series{
				{"202 accepted", rate(func(s sample) float64 { return s.Accepted })},
				{"429 limited", rate(func(s sample) float64 { return s.Limited })},
				{"failed", rate(func(s sample) float64 { return s.Failed })},
			}},
		},
		markers: []marker{{r.loadEnd, "load stops"}},
	}
}

func writeChart(path string, r *soakResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := soakChart(r).writeSVG(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
