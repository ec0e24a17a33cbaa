package chaos

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/audit"
)

// Report is a campaign's outcome (report.json).
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  string    `json:"machine"`
	Command  string    `json:"command"`
	Rate     float64   `json:"rate"`
	Warmup   string    `json:"warmup"`
	Fault    string    `json:"fault,omitempty"` // "" = each scenario's own
	Recovery string    `json:"recovery"`
	Results  []Result  `json:"results"`
}

// Result is one scenario's outcome.
type Result struct {
	ID      string    `json:"id"`
	Title   string    `json:"title"`
	Started time.Time `json:"started"`
	// FaultS is the fault's planned length; FaultStartS, FaultEndS and EndS are seconds since the load
	// started (the fault ends when it is healed: a restart that takes longer makes it longer).
	FaultS      float64        `json:"fault_s"`
	FaultStartS float64        `json:"fault_start_s"`
	FaultEndS   float64        `json:"fault_end_s"`
	EndS        float64        `json:"end_s"`
	Sent        int            `json:"sent"`
	Accepted    int            `json:"accepted"`
	Errors      map[string]int `json:"errors"`
	WarmupP99Ms float64        `json:"warmup_p99_ms"`
	FaultP50Ms  float64        `json:"fault_p50_ms"`
	FaultP99Ms  float64        `json:"fault_p99_ms"`
	MaxMs       float64        `json:"max_ms"`
	// RecoverS is the time from the end of the fault to the first second from which every second had
	// no error and a p99 under 2× the warm-up's; -1 when that never happened before the load stopped.
	RecoverS   float64       `json:"recover_s"`
	Settled    bool          `json:"settled"`
	SettleS    float64       `json:"settle_s"`
	Lost       int           `json:"lost"`
	Duplicated int           `json:"duplicated"`
	Stuck      int           `json:"stuck"`
	Audit      *audit.Report `json:"audit,omitempty"`
	Failures   []string      `json:"failures,omitempty"`
	Notes      []string      `json:"notes,omitempty"`
	Seconds    []Second      `json:"seconds"`
}

// Failed reports whether the scenario fails the campaign: a lost, duplicated or stuck order, a 500,
// an audit violation, or a harness failure (the fault or the stack did not run as planned).
func (r Result) Failed() bool {
	return len(r.Failures) > 0 || r.Lost > 0 || r.Duplicated > 0 || r.Stuck > 0 || r.Errors["500"] > 0 ||
		r.Audit == nil || !r.Audit.OK()
}

// Failed reports whether any scenario failed.
func (r Report) Failed() bool {
	return slices.ContainsFunc(r.Results, Result.Failed)
}

// Summary is the scenario's one-line outcome.
func (r Result) Summary() string {
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	auditLine := "audit: not run"
	if r.Audit != nil {
		auditLine = r.Audit.Line()
	}
	return fmt.Sprintf("%s %s: sent %d, accepted %d, errors %s; fault p50 %.0f ms p99 %.0f ms; recover %s; %s%s",
		r.ID, verdict, r.Sent, r.Accepted, errorsText(r.Errors), r.FaultP50Ms, r.FaultP99Ms, recoverText(r.RecoverS), auditLine,
		strings.Join(append([]string{""}, r.Failures...), "\n   FAIL: "))
}

func errorsText(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func recoverText(s float64) string {
	if s < 0 {
		return "not within the recovery phase"
	}
	return fmt.Sprintf("%.0f s", s)
}

// Write writes report.json, report.md and report.html into dir.
func (r Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.Markdown()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return err
	}
	if err := r.HTML(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// Markdown is the table of report.md (and docs/RELIABILITY.md).
func (r Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s · %s · `%s` · %.0f orders/s, warm-up %s, fault %s, recovery %s\n\n",
		r.Started.Format("2006-01-02 15:04 UTC"), r.Machine, r.Command, r.Rate, r.Warmup, orDefault(r.Fault, "per scenario"), r.Recovery)
	b.WriteString("| scenario | verdict | sent | accepted | errors by status | p50 / p99 in fault (ms) | time to recover | lost | duplicated | stuck | audit |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		verdict := "pass"
		if x.Failed() {
			verdict = "**FAIL**"
		}
		auditLine := "not run"
		if x.Audit != nil {
			auditLine = x.Audit.Line()
		}
		fmt.Fprintf(&b, "| %s %s | %s | %d | %d | %s | %.0f / %.0f | %s | %d | %d | %d | %s |\n",
			x.ID, x.Title, verdict, x.Sent, x.Accepted, errorsText(x.Errors), x.FaultP50Ms, x.FaultP99Ms,
			recoverText(x.RecoverS), x.Lost, x.Duplicated, x.Stuck, strings.ReplaceAll(auditLine, "|", "/"))
	}
	for _, x := range r.Results {
		if len(x.Failures)+len(x.Notes) == 0 && (x.Audit == nil || len(x.Audit.Violations) == 0) {
			continue
		}
		fmt.Fprintf(&b, "\n**%s**\n", x.ID)
		for _, f := range x.Failures {
			fmt.Fprintf(&b, "- FAIL: %s\n", f)
		}
		if x.Audit != nil {
			for _, v := range x.Audit.Violations {
				fmt.Fprintf(&b, "- audit: %s\n", v)
			}
		}
		for _, n := range x.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// HTML writes a self-contained page in the style of the load test report: the table, then per
// scenario orders/s, errors/s by status and p99 over time with the fault window shaded.
func (r Report) HTML(w io.Writer) error {
	type chart struct {
		Result
		Verdict string
		SVG     template.HTML
	}
	var charts []chart
	for _, x := range r.Results {
		v := "pass"
		if x.Failed() {
			v = "FAIL"
		}
		// chartSVG builds the markup from numbers and fixed labels only.
		charts = append(charts, chart{Result: x, Verdict: v, SVG: template.HTML(chartSVG(x))})
	}
	return page.Execute(w, map[string]any{"Rep": r, "Charts": charts})
}

var page = template.Must(template.New("chaos").Funcs(template.FuncMap{"errs": errorsText, "recov": recoverText}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>shopmesh chaos campaign {{.Rep.Started.Format "2006-01-02 15:04"}}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}svg{background:#fafafa;border:1px solid #ddd}h2{margin-top:1.5em}.FAIL{color:#d62728;font-weight:bold}</style></head><body>
<h1>shopmesh chaos campaign</h1>
<p>{{.Rep.Started.Format "2006-01-02 15:04:05 UTC"}} · {{.Rep.Machine}} · <code>{{.Rep.Command}}</code> · {{printf "%.0f" .Rep.Rate}} orders/s · warm-up {{.Rep.Warmup}} · recovery {{.Rep.Recovery}}</p>
<table><tr><th>scenario</th><th>verdict</th><th>sent</th><th>accepted</th><th>errors</th><th>p50 fault ms</th><th>p99 fault ms</th><th>recover</th><th>lost</th><th>dup</th><th>stuck</th><th>audit</th></tr>
{{range .Charts}}<tr><td>{{.ID}} {{.Title}}</td><td class="{{.Verdict}}">{{.Verdict}}</td><td>{{.Sent}}</td><td>{{.Accepted}}</td><td>{{errs .Errors}}</td>
<td>{{printf "%.0f" .FaultP50Ms}}</td><td>{{printf "%.0f" .FaultP99Ms}}</td><td>{{recov .RecoverS}}</td><td>{{.Lost}}</td><td>{{.Duplicated}}</td><td>{{.Stuck}}</td><td>{{if .Audit}}{{.Audit.Line}}{{else}}not run{{end}}</td></tr>
{{end}}</table>
{{range .Charts}}<h2>{{.ID}} — {{.Title}}</h2>{{.SVG}}
{{range .Failures}}<p class="FAIL">{{.}}</p>{{end}}{{if .Audit}}{{range .Audit.Violations}}<p class="FAIL">audit: {{.}}</p>{{end}}{{end}}{{range .Notes}}<p>{{.}}</p>{{end}}{{end}}
</body></html>
`))

// statusColors is a fixed palette for the error series.
var statusColors = []string{"#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// chartSVG draws orders/s (accepted, blue), errors/s by status (stacked colours) and p99 (orange, right
// axis, log scale) per second, the fault window shaded.
func chartSVG(r Result) string {
	const W, H, L, R, B, T = 760.0, 260.0, 45.0, 60.0, 40.0, 10.0
	if len(r.Seconds) == 0 {
		return "<p>no samples</p>"
	}
	n := float64(len(r.Seconds))
	ymax, pmax := 1.0, 1.0
	var statuses []string
	for _, s := range r.Seconds {
		ymax = math.Max(ymax, float64(s.Sent))
		pmax = math.Max(pmax, s.P99Ms)
		for k := range s.Errors {
			if !slices.Contains(statuses, k) {
				statuses = append(statuses, k)
			}
		}
	}
	slices.Sort(statuses)
	ymax *= 1.1
	x := func(t float64) float64 { return L + (W-L-R)*t/n }
	y := func(v float64) float64 { return H - B - (H-B-T)*v/ymax }
	lo, hi := 0.0, math.Log10(pmax*1.5)
	yp := func(ms float64) float64 {
		v := (math.Log10(math.Max(ms, 1)) - lo) / math.Max(hi-lo, 0.1)
		return H - B - (H-B-T)*v
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-size="10">`, W, H)
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="2" y="%.1f">%.0f/s</text>`, L, W-R, y(v), y(v), y(v)+3, v)
	}
	for e := 0.0; e <= hi; e++ {
		v := math.Pow(10, e)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="#ff7f0e">%g ms</text>`, W-R+4, yp(v)+3, v)
	}
	step := math.Max(1, math.Ceil(n/10))
	for t := 0.0; t < n; t += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%.0fs</text>`, x(t)-6, H-B+12, t)
	}
	bw := math.Max(1, (W-L-R)/n-0.5)
	var p99 []string
	for _, s := range r.Seconds {
		t := float64(s.T)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#1f77b4" fill-opacity="0.7"/>`, x(t), y(float64(s.OK)), bw, y(0)-y(float64(s.OK)))
		base := float64(s.OK)
		for i, k := range statuses {
			if c := s.Errors[k]; c > 0 {
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x(t), y(base+float64(c)), bw, y(base)-y(base+float64(c)), statusColors[i%len(statusColors)])
				base += float64(c)
			}
		}
		if s.P99Ms > 0 {
			p99 = append(p99, fmt.Sprintf("%.1f,%.1f", x(t)+bw/2, yp(s.P99Ms)))
		}
	}
	// The fault window over the bars, translucent, so it shows whatever the bars' height.
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="#d62728" fill-opacity="0.15" stroke="#d62728" stroke-dasharray="4 3"/>`,
		x(r.FaultStartS), T, math.Max(1, x(r.FaultEndS)-x(r.FaultStartS)), H-B-T)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" fill="#a00">fault</text>`, x(r.FaultStartS)+2, T+10)
	if len(p99) > 0 {
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>`, strings.Join(p99, " "))
	}
	// Legend.
	lx := L
	legend := func(color, label string) {
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="8" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`, lx, H-12, color, lx+13, H-4, template.HTMLEscapeString(label))
		lx += 20 + 6*float64(len(label))
	}
	legend("#1f77b4", "accepted/s")
	for i, k := range statuses {
		legend(statusColors[i%len(statusColors)], k+"/s")
	}
	legend("#ff7f0e", "p99 (right axis)")
	b.WriteString(`</svg>`)
	return b.String()
}

// machine describes the host: cores and memory.
func machine() string {
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s: %d cores%s, %s/%s, %s", host, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
