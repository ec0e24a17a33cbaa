package bench_test

import (
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/bench"
)

// TestValidationCase builds the validation case over real loopback platform servers (building it checks
// that the stage rejects the invalid order when on and passes it when off) and runs two short rounds:
// every variant answers with its expected outcome (OK, or INVALID_ARGUMENT for `invalid`) on every
// call, and the summary has one row per variant. Figures are logged, not asserted.
func TestValidationCase(t *testing.T) {
	t.Parallel()
	var cl bench.Cleanup
	t.Cleanup(cl.Run)
	c, err := bench.ValidationCase(t.Context(), &cl)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range c.Variants {
		names = append(names, v.Name)
	}
	if got := strings.Join(names, ","); got != "off,valid,invalid" {
		t.Fatalf("variants %s, want off,valid,invalid", got)
	}
	r := bench.Rounds{N: 2, Each: 100 * time.Millisecond, Warmup: 50 * time.Millisecond}
	o := bench.RunCase(t.Context(), c, r, nil)
	for _, v := range o.Order {
		sts := o.Stats[v]
		if len(sts) != r.N {
			t.Fatalf("%s: %d rounds, want %d", v, len(sts), r.N)
		}
		for _, st := range sts {
			if st.Ops == 0 || st.Errors != 0 || st.CPU <= 0 || st.P50 > st.P99 {
				t.Errorf("%s: %+v", v, st)
			}
		}
	}
	var sum strings.Builder
	bench.WriteSummary(&sum, []bench.Outcome{o})
	if rows := strings.Count(sum.String(), "| "+c.Name+" |"); rows != 3 {
		t.Errorf("summary has %d rows for %s, want 3:\n%s", rows, c.Name, sum.String())
	}
	t.Log("\n" + sum.String())
}
