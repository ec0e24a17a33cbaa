// Package sagatest drives the saga-disorder test of RELIABILITY.md R13 for a service that takes one
// saga step: it scripts, per order, an action (reserve, authorize), its confirmation (commit, capture)
// and its compensation (release, void), duplicates and shuffles their deliveries as retries, timeouts
// and redeliveries do, and delivers them. The service's test says what each call is and checks its own
// invariants. It is imported only by tests.
package sagatest

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// Plan is what the order saga wanted for one order.
type Plan int

// The plans.
const (
	PlanConfirm    Plan = iota // action (retried), confirmation (retried)
	PlanCompensate             // action (retried, maybe landing after the compensation), compensation (retried)
	PlanConflict               // a confirmation and a compensation both sent (confirm raced cancel)
)

// Call is one delivery to the service.
type Call int

// The calls.
const (
	CallAction Call = iota
	CallConfirm
	CallCompensate
)

// Script is one order: its plan, the action's request and the shuffled deliveries.
type Script[R any] struct {
	ID   string
	Plan Plan
	// Req is the action's request; every delivery of the action sends the same one.
	Req   R
	Calls []Call
	// Concurrent orders get all their calls at once; the others one after another.
	Concurrent bool
}

// Scripts makes n scripts from rng: order i gets the id id(i), a random plan, its request from
// req(i, id) (which may draw from the same rng), 1–3 actions, and 1–2 confirmations (confirm plan),
// 1–2 compensations (compensate plan) or one of each (conflict), shuffled. Every second order is
// concurrent.
func Scripts[R any](rng *rand.Rand, n int, id func(i int) string, req func(i int, id string) R) []Script[R] {
	scripts := make([]Script[R], n)
	for i := range scripts {
		s := Script[R]{ID: id(i), Plan: Plan(rng.IntN(3)), Concurrent: i%2 == 1}
		s.Req = req(i, s.ID)
		for range 1 + rng.IntN(3) {
			s.Calls = append(s.Calls, CallAction)
		}
		switch s.Plan {
		case PlanConfirm:
			for range 1 + rng.IntN(2) {
				s.Calls = append(s.Calls, CallConfirm)
			}
		case PlanCompensate:
			for range 1 + rng.IntN(2) {
				s.Calls = append(s.Calls, CallCompensate)
			}
		case PlanConflict:
			s.Calls = append(s.Calls, CallConfirm, CallCompensate)
		}
		rng.Shuffle(len(s.Calls), func(a, b int) { s.Calls[a], s.Calls[b] = s.Calls[b], s.Calls[a] })
		scripts[i] = s
	}
	return scripts
}

// Drive delivers every script's calls, at most 32 orders at a time, and returns how many calls it
// made. deliver is called from many goroutines.
func Drive[R any](scripts []Script[R], deliver func(s Script[R], c Call)) int64 {
	var calls atomic.Int64
	do := func(s Script[R], c Call) { calls.Add(1); deliver(s, c) }
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, s := range scripts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if !s.Concurrent {
				for _, c := range s.Calls {
					do(s, c)
				}
				return
			}
			var inner sync.WaitGroup
			for _, c := range s.Calls {
				inner.Go(func() { do(s, c) })
			}
			inner.Wait()
		})
	}
	wg.Wait()
	return calls.Load()
}

// Recorder collects, from many goroutines, unexpected answers and the orders whose confirmation was
// acknowledged (each must end confirmed).
type Recorder struct {
	mu        sync.Mutex
	confirmed map[string]bool
	failures  []string
}

// Fail records an unexpected answer.
func (r *Recorder) Fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// Confirmed records that the service acknowledged the confirmation of order id.
func (r *Recorder) Confirmed(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.confirmed == nil {
		r.confirmed = map[string]bool{}
	}
	r.confirmed[id] = true
}

// WasConfirmed reports whether a confirmation of order id was acknowledged.
func (r *Recorder) WasConfirmed(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.confirmed[id]
}

// Report fails t once per recorded failure.
func (r *Recorder) Report(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.failures {
		t.Error(f)
	}
}

// Tally counts final states per plan, for the log: plan name → state → orders.
type Tally map[string]map[string]int

// Add counts one order of plan that ended in state.
func (t Tally) Add(plan, state string) {
	if t[plan] == nil {
		t[plan] = map[string]int{}
	}
	t[plan][state]++
}
