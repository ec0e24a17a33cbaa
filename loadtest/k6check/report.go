package k6check

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Print writes a short report of one run: scenarios, checks, requests by name and status, thresholds
// and, last, the problems that fail it.
func Print(w io.Writer, r Result) {
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s %s (%.1f s)\n", verdict, r.Script, r.Elapsed.Seconds())
	for _, s := range r.Scenarios {
		what := s.Executor
		if s.Executor == "constant-arrival-rate" {
			what = fmt.Sprintf("%s %g/%s", s.Executor, s.Rate, s.TimeUnit)
		}
		fmt.Fprintf(w, "  scenario %s: %s for %s: %d iterations, %d dropped, %d interrupted, %d VUs\n",
			s.Name, what, s.Duration.Round(time.Millisecond), s.Iterations, s.Dropped, s.Interrupted, s.VUs)
	}
	for _, c := range r.Checks {
		fmt.Fprintf(w, "  check %-28q %d/%d passed\n", c.Name, c.Passes, c.Passes+c.Fails)
	}
	for _, q := range r.Requests {
		mark := ""
		if !q.Expected {
			mark = "  UNEXPECTED"
		}
		if q.Error != "" {
			mark += " (" + q.Error + ")"
		}
		fmt.Fprintf(w, "  %-6s %-40s %3d ×%d%s\n", q.Method, q.Name, q.Status, q.Count, mark)
	}
	for _, t := range r.Thresholds {
		state := "ok"
		switch {
		case t.Note != "":
			state = t.Note
		case !t.OK && t.Timing:
			state = "CROSSED (a duration: reported, not failed on a shared machine; -timing fails it)"
		case !t.OK:
			state = "CROSSED"
		}
		fmt.Fprintf(w, "  threshold %s %s: %s over %d samples: %s\n", t.Metric, t.Expr, formatValue(t), t.Samples, state)
	}
	if r.SetupError != "" {
		fmt.Fprintf(w, "  setup aborted: %s\n", r.SetupError)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  problem: %s\n", strings.TrimSpace(p))
	}
}
