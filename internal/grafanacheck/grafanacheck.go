// Package grafanacheck checks a Grafana dashboard's Prometheus queries
// against the series an exposition has, so that a renamed metric or label
// cannot leave a panel silently empty. contrib/prometheus checks
// docs/grafana-dashboard.json against its collectors' exposition and
// examples/chatservice against what its /metrics serves; only tests import
// it. It reads JSON and matches text, and depends on nothing of
// Prometheus's.
package grafanacheck

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Series maps each series name of an exposition (a histogram's _bucket,
// _sum and _count each) to the names of its labels (a _bucket's include
// le).
type Series map[string]map[string]bool

// In a query: a quoted string, a selector's matchers, a grouping's labels,
// an identifier with an underscore (a metric name unless a function call),
// a label name in a matcher, a selector with its matchers, label_values.
var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers   = regexp.MustCompile(`\{[^}]*\}`)
	grouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	identifier = regexp.MustCompile(`\$?\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(\s*\()?`)
	labelName  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	selector   = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	labelVals  = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// Query returns the metric names the PromQL expression e uses and what is
// wrong with them against series: a name not exported (a typo in the
// prefix included: every identifier with an underscore that is not a
// function call must be an exported series) and a label the metric does
// not have.
func Query(e string, series Series) (names, problems []string) {
	for _, m := range selector.FindAllStringSubmatch(e, -1) {
		labels := series[m[1]]
		if labels == nil {
			continue // reported below
		}
		for _, l := range labelName.FindAllStringSubmatch(quoted.ReplaceAllString(m[2], `""`), -1) {
			if !labels[l[1]] {
				problems = append(problems, fmt.Sprintf("%s has no label %s (in %s)", m[1], l[1], e))
			}
		}
	}
	for _, m := range labelVals.FindAllStringSubmatch(e, -1) {
		if labels := series[m[1]]; labels != nil && !labels[m[2]] {
			problems = append(problems, fmt.Sprintf("%s has no label %s (in %s)", m[1], m[2], e))
		}
	}
	bare := grouping.ReplaceAllString(matchers.ReplaceAllString(quoted.ReplaceAllString(e, `""`), ""), "")
	for _, m := range identifier.FindAllStringSubmatch(bare, -1) {
		id := m[0]
		if m[1] != "" || strings.HasPrefix(id, "$") || !strings.Contains(id, "_") {
			continue // a function, a dashboard variable, a keyword or a label
		}
		names = append(names, id)
		if series[id] == nil {
			problems = append(problems, fmt.Sprintf("the dashboard queries %s, which the exposition does not have (in %s)", id, e))
		}
	}
	return names, problems
}

// Dashboard returns the metrics the dashboard JSON raw queries (sorted,
// each once), in its panels (those of collapsed rows included) and its
// variables' definitions, and what is wrong with it against series: a
// query of Query's problems, a panel without a query, an empty query, a
// panel id used twice, a dashboard without title, uid or panels, JSON that
// does not parse.
func Dashboard(raw []byte, series Series) (queried, problems []string) {
	var dash struct {
		Title      string            `json:"title"`
		UID        string            `json:"uid"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		return nil, []string{fmt.Sprintf("not valid JSON: %v", err)}
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		return nil, []string{fmt.Sprintf("no title, uid or panels: %q %q %d", dash.Title, dash.UID, len(dash.Panels))}
	}
	type panel struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"` // a collapsed row's
	}
	ids := map[int]bool{}
	seen := map[string]bool{}
	var exprs []string
	for todo := dash.Panels; len(todo) > 0; {
		r := todo[0]
		todo = todo[1:]
		var p panel
		if err := json.Unmarshal(r, &p); err != nil {
			return nil, []string{err.Error()}
		}
		todo = append(todo, p.Panels...)
		if ids[p.ID] {
			problems = append(problems, fmt.Sprintf("panel id %d used twice", p.ID))
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			problems = append(problems, fmt.Sprintf("panel %q queries nothing", p.Title))
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				problems = append(problems, fmt.Sprintf("panel %q has an empty query %s", p.Title, tg.RefID))
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	for _, e := range exprs {
		names, ps := Query(e, series)
		for _, n := range names {
			seen[n] = true
		}
		problems = append(problems, ps...)
	}
	for n := range seen {
		queried = append(queried, n)
	}
	sort.Strings(queried)
	return queried, problems
}
