package composetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Summary collects the harness's steps: name, result, duration and figures.
type Summary struct {
	mu      sync.Mutex
	steps   []Step
	stopped bool // a required step failed: the steps after it are skipped until Resume
}

// Run runs fn as the step name and records it with its duration and fn's detail. A failure is a test
// error; a required step's failure skips the steps after it (recorded as skipped) until Resume.
func (s *Summary) Run(t testing.TB, name string, required bool, fn func() (string, error)) bool {
	t.Helper()
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		s.Add(Step{Name: name, Skipped: true, Detail: "an earlier step failed"})
		return false
	}
	t.Logf("=== step %s", name)
	t0 := time.Now()
	detail, err := fn()
	st := Step{Name: name, OK: err == nil, Took: time.Since(t0), Detail: detail}
	if err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		st.Detail = strings.TrimSpace(detail + " " + first)
		t.Errorf("step %s: %v", name, err)
		if required {
			s.mu.Lock()
			s.stopped = true
			s.mu.Unlock()
		}
	} else {
		t.Logf("step %s: ok in %v: %s", name, st.Took.Round(100*time.Millisecond), detail)
	}
	s.Add(st)
	return err == nil
}

// Resume lets the steps after a failed required step run again (a teardown runs whatever happened).
func (s *Summary) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = false
}

// Step is one line of the summary.
type Step struct {
	Name    string
	OK      bool
	Skipped bool
	Took    time.Duration
	Detail  string
}

// Add records a step.
func (s *Summary) Add(st Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps = append(s.steps, st)
}

// Steps returns the steps recorded so far.
func (s *Summary) Steps() []Step {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Step(nil), s.steps...)
}

// String renders the summary as an aligned table.
func (s *Summary) String() string {
	var b strings.Builder
	var total time.Duration
	for _, st := range s.Steps() {
		res := "ok"
		switch {
		case st.Skipped:
			res = "skipped"
		case !st.OK:
			res = "FAILED"
		}
		total += st.Took
		fmt.Fprintf(&b, "%-22s %-7s %7.1fs  %s\n", st.Name, res, st.Took.Seconds(), st.Detail)
	}
	fmt.Fprintf(&b, "%-22s %-7s %7.1fs\n", "total", "", total.Seconds())
	return b.String()
}
