package composetest

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Summary collects the harness's steps: name, result, duration and figures.
type Summary struct {
	mu    sync.Mutex
	steps []Step
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
