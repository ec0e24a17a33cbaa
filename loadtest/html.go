package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes a self-contained page (inline SVG, no scripts, no CDN): per scenario a latency-over-
// time scatter (errors in red) with p50/p99 lines, and a percentile table.
func WriteHTML(w io.Writer, rep Report) error {
	type chart struct {
		Result
		SVG template.HTML
	}
	var charts []chart
	for _, r := range rep.Results {
		// svg builds the markup from numbers only; nothing user-controlled reaches it unescaped.
		charts = append(charts, chart{Result: r, SVG: template.HTML(svg(r))})
	}
	return page.Execute(w, map[string]any{"Rep": rep, "Charts": charts})
}

var page = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>shopmesh load test {{.Rep.Started.Format "2006-01-02 15:04"}}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}svg{background:#fafafa;border:1px solid #ddd}h2{margin-top:1.5em}</style></head><body>
<h1>shopmesh load test</h1>
<p>{{.Rep.Started.Format "2006-01-02 15:04:05 UTC"}} · {{.Rep.Machine}} · gateway {{.Rep.Target.GatewayURL}} · order {{.Rep.Target.Order}} · TLS {{.Rep.Target.TLS}}</p>
<table><tr><th>scenario</th><th>kind</th><th>rate/s</th><th>requests</th><th>errors</th><th>ok/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>codes</th></tr>
{{range .Rep.Results}}<tr><td>{{.Scenario}}</td><td>{{.Kind}}</td><td>{{printf "%.0f" .Rate}}</td><td>{{.Requests}}</td><td>{{.Errors}}</td><td>{{printf "%.1f" .Throughput}}</td>
<td>{{printf "%.2f" .Latency.P50}}</td><td>{{printf "%.2f" .Latency.P90}}</td><td>{{printf "%.2f" .Latency.P99}}</td><td>{{printf "%.2f" .Latency.Max}}</td><td>{{range $k, $v := .Codes}}{{$k}}:{{$v}} {{end}}{{.Note}}</td></tr>
{{end}}</table>
{{range .Charts}}<h2>{{.Scenario}}</h2>{{.SVG}}{{end}}
</body></html>
`))

// svg draws latency (ms, log scale) against time (s).
func svg(r Result) string {
	const W, H, L, B = 720.0, 240.0, 50.0, 25.0
	if len(r.Series) == 0 {
		return "<p>no samples</p>"
	}
	tmax, lmax := 0.0, r.Latency.Max
	for _, p := range r.Series {
		tmax = math.Max(tmax, p.T)
	}
	tmax = math.Max(tmax, 0.001)
	lo, hi := math.Log10(0.05), math.Log10(math.Max(lmax, 1)*1.2)
	x := func(t float64) float64 { return L + (W-L-10)*t/tmax }
	y := func(ms float64) float64 {
		v := (math.Log10(math.Max(ms, 0.05)) - lo) / (hi - lo)
		return H - B - (H-B-10)*v
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-size="10">`, W, H)
	for e := math.Ceil(lo); e <= hi; e++ {
		v := math.Pow(10, e)
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="2" y="%.1f">%g ms</text>`, L, W-10, y(v), y(v), y(v)+3, v)
	}
	for i := 0; i <= 4; i++ {
		t := tmax * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%.1fs</text>`, x(t)-8, H-8, t)
	}
	for _, p := range r.Series {
		c := "#1f77b4"
		if !p.OK {
			c = "#d62728"
		}
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.5" fill="%s" fill-opacity="0.6"/>`, x(p.T), y(p.Ms), c)
	}
	for _, q := range []struct {
		name string
		v    float64
		c    string
	}{{"p50", r.Latency.P50, "#2ca02c"}, {"p99", r.Latency.P99, "#ff7f0e"}} {
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="4"/><text x="%.0f" y="%.1f" fill="%s">%s %.2f ms</text>`,
			L, W-10, y(q.v), y(q.v), q.c, W-110, y(q.v)-3, q.c, q.name, q.v)
	}
	b.WriteString(`</svg>`)
	return b.String()
}
