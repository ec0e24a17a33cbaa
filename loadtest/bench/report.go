package bench

import (
	"fmt"
	"io"
	"strings"
)

// WriteSummary prints one markdown row per variant with its ratio to the case's first variant
// (CPU efficiency = first's CPU/request ÷ this one's; throughput = this QPS ÷ first's).
func WriteSummary(w io.Writer, outs []Outcome) {
	fmt.Fprintln(w, "| case | variant | CPU µs/req | CPU efficiency vs first | req/s | QPS vs first | p50 ms | p99 ms | errors/requests |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, o := range outs {
		ss := Summarize(o)
		for i, s := range ss {
			eff, qps := "—", "—"
			if i > 0 && s.CPUPerOp > 0 && ss[0].QPS > 0 {
				eff = fmt.Sprintf("%.0f%%", 100*ss[0].CPUPerOp/s.CPUPerOp)
				qps = fmt.Sprintf("%.0f%%", 100*s.QPS/ss[0].QPS)
			}
			fmt.Fprintf(w, "| %s | %s | %.1f | %s | %.0f | %s | %.3f | %.3f | %d/%d |\n", o.Case, s.Variant, s.CPUPerOp/1e3, eff,
				s.QPS, qps, ms(s.P50), ms(s.P99), s.Errors, s.Requests)
		}
	}
}

// FileName turns a case name into a file stem ("Chain/conc=50" → "chain-conc50").
func FileName(c string) string {
	r := strings.NewReplacer("/", "-", "=", "")
	return strings.ToLower(r.Replace(c))
}
