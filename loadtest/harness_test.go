package loadtest_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest"
)

// TestHarnessAgainstStack starts the `make run` stack on free ports, runs every scenario for one second
// at a fifth of its rate and checks the report is sane: each scenario completed requests, errors are
// rare, percentiles are ordered and the files are written. Figures are printed, not asserted.
func TestHarnessAgainstStack(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	s, target, dir, err := loadtest.StartStack(t.Context(), loadtest.StackOptions{Root: root, Env: os.Environ()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(); _ = os.RemoveAll(dir) })

	var progress bytes.Buffer
	rep, err := loadtest.Run(t.Context(), target, loadtest.Options{
		Scenarios: loadtest.Scenarios(), Duration: time.Second, RateScale: 0.2, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	loadtest.PrintTable(&table, rep.Results)
	t.Logf("TLS %v\n%s", target.TLS, table.String())
	if len(rep.Results) != len(loadtest.Scenarios()) {
		t.Fatalf("%d results, want %d", len(rep.Results), len(loadtest.Scenarios()))
	}
	for _, r := range rep.Results {
		l := r.Latency
		switch {
		case r.Note != "":
			t.Errorf("%s: %s", r.Scenario, r.Note)
		case r.Requests == 0:
			t.Errorf("%s: no requests", r.Scenario)
		case r.ErrorRate > 0.05:
			t.Errorf("%s: %d of %d failed: %v", r.Scenario, r.Errors, r.Requests, r.Codes)
		case !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max):
			t.Errorf("%s: percentiles out of order: %+v", r.Scenario, l)
		case r.Throughput <= 0 || len(r.Series) == 0:
			t.Errorf("%s: throughput %v, %d chart points", r.Scenario, r.Throughput, len(r.Series))
		}
	}
	jp, hp, err := loadtest.WriteFiles(t.TempDir(), rep)
	if err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(html, []byte("<svg")) || bytes.Contains(html, []byte("<script")) || bytes.Contains(html, []byte("http://cdn")) {
		t.Errorf("%s: want inline SVG and no scripts", hp)
	}
	if fi, err := os.Stat(jp); err != nil || fi.Size() == 0 {
		t.Errorf("%s: %v", jp, err)
	}
}
