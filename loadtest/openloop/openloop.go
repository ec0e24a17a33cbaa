// Package openloop paces an open-loop load: arrivals at a constant rate whatever how long each call
// takes, so a slow server faces a growing queue (as under real traffic) instead of a client that slows
// down with it. The harness, the benchmarks and the chaos campaign all send their load through it.
package openloop

import (
	"context"
	"iter"
	"sync"
	"time"
)

// Schedule says when arrivals are due and when they stop.
type Schedule struct {
	// Rate is arrivals per second; none at all when it is <= 0.
	Rate float64
	// Duration ends the schedule at the first arrival due at or after it; 0 means no end.
	Duration time.Duration
	// Stop ends the schedule when closed; nil means never.
	Stop <-chan struct{}
	// MaxInFlight bounds the calls Run has outstanding; 0 means no bound.
	MaxInFlight int
}

// Arrival is one due call.
type Arrival struct {
	// N counts arrivals from 0.
	N int
	// Due is when the call was due; At is Due minus the schedule's start.
	Due time.Time
	At  time.Duration
}

// Arrivals yields the schedule's arrivals in order, each once it is due: arrival N is due N/Rate after
// the first, which is due at once. A consumer that falls behind gets the late arrivals at once (the
// schedule is never stretched). It ends early when ctx ends or Stop is closed, also while waiting.
func (s Schedule) Arrivals(ctx context.Context) iter.Seq[Arrival] {
	return func(yield func(Arrival) bool) {
		if s.Rate <= 0 {
			return
		}
		interval := time.Duration(float64(time.Second) / s.Rate)
		start := time.Now()
		for n := 0; ; n++ {
			at := time.Duration(n) * interval
			if s.Duration > 0 && at >= s.Duration {
				return
			}
			due := start.Add(at)
			if !s.wait(ctx, due) {
				return
			}
			if !yield(Arrival{N: n, Due: due, At: at}) {
				return
			}
		}
	}
}

// wait sleeps until due; false when ctx ended or Stop was closed first (or meanwhile).
func (s Schedule) wait(ctx context.Context, due time.Time) bool {
	if w := time.Until(due); w > 0 {
		t := time.NewTimer(w)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-s.Stop:
		}
	}
	select {
	case <-ctx.Done():
		return false
	case <-s.Stop:
		return false
	default:
		return true
	}
}

// Run calls call(a) in a goroutine of its own for each arrival — or, when MaxInFlight calls are
// outstanding, refused(a) in the pacing loop instead (refused may be nil) — then waits for every call
// to return. It returns how many arrivals there were, refused ones included.
func (s Schedule) Run(ctx context.Context, call, refused func(Arrival)) int {
	var sem chan struct{}
	if s.MaxInFlight > 0 {
		sem = make(chan struct{}, s.MaxInFlight)
	}
	var wg sync.WaitGroup
	n := 0
	for a := range s.Arrivals(ctx) {
		n++
		if sem != nil {
			select {
			case sem <- struct{}{}:
			default:
				if refused != nil {
					refused(a)
				}
				continue
			}
		}
		wg.Go(func() {
			if sem != nil {
				defer func() { <-sem }()
			}
			call(a)
		})
	}
	wg.Wait()
	return n
}
