package nacos

import (
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"google.golang.org/grpc/resolver"
)

// fakeTimers records the timers the watch schedules, so the test fires them instead of waiting.
type fakeTimers struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool { was := !t.stopped; t.stopped = true; return was }

func (ft *fakeTimers) afterFunc(d time.Duration, f func()) timer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{d: d, f: f}
	ft.timers = append(ft.timers, t)
	return t
}

func (ft *fakeTimers) all() []*fakeTimer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return slices.Clone(ft.timers)
}

// recordingConn is the gRPC side of a resolver: it keeps the address lists it was given.
type recordingConn struct {
	resolver.ClientConn
	states [][]string
}

func (c *recordingConn) UpdateState(s resolver.State) error {
	var addrs []string
	for _, ep := range s.Endpoints {
		addrs = append(addrs, ep.Addresses[0].Addr)
	}
	c.states = append(c.states, addrs)
	return nil
}

func (c *recordingConn) last() []string { return c.states[len(c.states)-1] }

func host(port uint64) model.Instance {
	return model.Instance{Ip: "10.0.0.1", Port: port, Healthy: true, Enable: true, Weight: 1}
}

// TestEmptyGrace drives the subscription callback directly: an empty set is held back for EmptyGrace
// (the last set stays), applied when the grace timer fires, and cancelled by a non-empty set that arrives
// first, including when the cancelled timer fires anyway.
func TestEmptyGrace(t *testing.T) {
	t.Parallel()
	timers := &fakeTimers{}
	cfg := Config{EmptyGrace: 10 * time.Second}
	c := &Client{cfg: cfg, logger: slog.New(slog.DiscardHandler), afterFunc: timers.afterFunc}
	w := &watch{c: c, service: "inventory", subs: map[*nacosResolver]struct{}{}, stop: make(chan struct{})}
	conn := &recordingConn{}
	w.add(&nacosResolver{cc: conn, w: w})

	w.set([]model.Instance{host(1), host(2)}, "push")
	if got := conn.last(); !slices.Equal(got, []string{"10.0.0.1:1", "10.0.0.1:2"}) {
		t.Fatalf("first set = %v", got)
	}

	// Drop to zero: nothing pushed, one timer for the grace period.
	w.set(nil, "push")
	ts := timers.all()
	if len(conn.states) != 1 || len(ts) != 1 || ts[0].d != cfg.EmptyGrace {
		t.Fatalf("empty set: states %v, timers %d; want the last set kept and one %v timer", conn.states, len(ts), cfg.EmptyGrace)
	}
	// A cached read meanwhile does not replace what is known.
	w.set([]model.Instance{host(9)}, "cache")
	if len(conn.states) != 1 {
		t.Fatalf("cache read applied over a known set: %v", conn.states)
	}
	ts[0].f() // the grace period passes with no instance back
	if got := conn.last(); len(conn.states) != 2 || len(got) != 0 {
		t.Fatalf("after the grace period: states %v, want an empty set applied", conn.states)
	}

	// Back to one instance: applied at once (only shrinking to zero is doubted).
	w.set([]model.Instance{host(3)}, "push")
	if got := conn.last(); !slices.Equal(got, []string{"10.0.0.1:3"}) {
		t.Fatalf("after recovery = %v", got)
	}

	// Zero again, then an instance re-registers within the grace period: the timer is cancelled, and a
	// late firing of it changes nothing.
	w.set(nil, "push")
	ts = timers.all()
	pending := ts[len(ts)-1]
	w.set([]model.Instance{host(3), host(4)}, "push")
	if !pending.stopped {
		t.Error("grace timer not stopped by a non-empty set")
	}
	pending.f()
	if got := conn.last(); !slices.Equal(got, []string{"10.0.0.1:3", "10.0.0.1:4"}) || len(conn.states) != 4 {
		t.Fatalf("after a cancelled drop: states %v, want [3 4] last and no empty set", conn.states)
	}

	// Already empty: a further empty set needs no grace.
	w.set(nil, "push")
	timers.all()[len(timers.all())-1].f()
	before := len(timers.all())
	w.set(nil, "push")
	if len(timers.all()) != before {
		t.Error("a grace timer was started while the set was already empty")
	}
}
