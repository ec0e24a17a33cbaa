package openloop_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/openloop"
)

func TestArrivalsFollowTheScheduleNotTheConsumer(t *testing.T) {
	t.Parallel()
	s := openloop.Schedule{Rate: 1000, Duration: 50 * time.Millisecond}
	var got []openloop.Arrival
	for a := range s.Arrivals(context.Background()) {
		if a.N == 0 {
			time.Sleep(5 * time.Millisecond) // a slow consumer does not move the later arrivals
		}
		got = append(got, a)
	}
	if len(got) != 50 {
		t.Fatalf("%d arrivals in 50 ms at 1000/s, want 50", len(got))
	}
	for i, a := range got {
		if a.N != i || a.At != time.Duration(i)*time.Millisecond || !a.Due.Equal(got[0].Due.Add(a.At)) {
			t.Fatalf("arrival %d: N %d At %v Due %v (first due %v)", i, a.N, a.At, a.Due, got[0].Due)
		}
	}
}

func TestNoRateNoArrivals(t *testing.T) {
	t.Parallel()
	for _, rate := range []float64{0, -1} {
		s := openloop.Schedule{Rate: rate, Duration: time.Second}
		if n := s.Run(context.Background(), func(openloop.Arrival) { t.Error("called") }, nil); n != 0 {
			t.Fatalf("rate %v: %d arrivals", rate, n)
		}
	}
}

// TestRunDoesNotWaitForCalls: every call blocks until all of them have started, which only an open
// loop gets through.
func TestRunDoesNotWaitForCalls(t *testing.T) {
	t.Parallel()
	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var started atomic.Int32
	all := make(chan struct{})
	var calls sync.Map
	got := openloop.Schedule{Rate: 1000, Duration: n * time.Millisecond}.Run(ctx, func(a openloop.Arrival) {
		calls.Store(a.N, true)
		if started.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-ctx.Done():
		}
	}, nil)
	if ctx.Err() != nil {
		t.Fatal("the calls never all ran at once: the load waited for them")
	}
	if got != n || started.Load() != n {
		t.Fatalf("%d arrivals, %d calls, want %d", got, started.Load(), n)
	}
	for i := range n {
		if _, ok := calls.Load(i); !ok {
			t.Fatalf("arrival %d was not called", i)
		}
	}
}

// TestRunRefusesBeyondMaxInFlight: with 3 calls held open, the other 7 arrivals are refused, in order.
func TestRunRefusesBeyondMaxInFlight(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	var called atomic.Int32
	var refused []int
	n := openloop.Schedule{Rate: 1000, Duration: 10 * time.Millisecond, MaxInFlight: 3}.Run(ctx,
		func(openloop.Arrival) {
			called.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
			}
		},
		func(a openloop.Arrival) {
			refused = append(refused, a.N)
			if a.N == 9 {
				close(release)
			}
		})
	if n != 10 || called.Load() != 3 || len(refused) != 7 {
		t.Fatalf("%d arrivals, %d called, refused %v; want 10, 3, 7", n, called.Load(), refused)
	}
	for i, r := range refused {
		if r != 3+i {
			t.Fatalf("refused %v, want 3..9", refused)
		}
	}
}

func TestStopEndsTheArrivals(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	n := 0
	for a := range (openloop.Schedule{Rate: 1000, Stop: stop}).Arrivals(context.Background()) {
		n++
		if a.N == 4 {
			close(stop)
		}
	}
	if n != 5 {
		t.Fatalf("%d arrivals, want 5: none after Stop", n)
	}
}

// TestStopAndContextEndTheWait: the second arrival is due in 1000 s; closing Stop or cancelling ctx
// ends the schedule without it.
func TestStopAndContextEndTheWait(t *testing.T) {
	t.Parallel()
	for _, by := range []string{"stop", "ctx"} {
		stop := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		s := openloop.Schedule{Rate: 0.001, Stop: stop}
		done := make(chan int)
		go func() {
			done <- s.Run(ctx, func(openloop.Arrival) {
				if by == "stop" {
					close(stop)
				} else {
					cancel()
				}
			}, nil)
		}()
		select {
		case n := <-done:
			if n != 1 {
				t.Fatalf("%s: %d arrivals, want 1", by, n)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: still waiting for the arrival due in 1000 s", by)
		}
		cancel()
	}
}
