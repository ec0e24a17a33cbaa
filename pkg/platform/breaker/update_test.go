package breaker_test

import (
	"slices"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
)

func TestUpdateChangesThresholdsLive(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var tr transitions
	cfg := breaker.Config{Enabled: true, ConsecutiveFailures: 5, OpenTimeout: 10 * time.Second, HalfOpenProbes: 1}
	s := cfg.Settings("payment")
	s.Now, s.OnStateChange = clk.Now, tr.record
	b := breaker.New(s)

	for range 3 {
		_ = call(t, b, errDown)
	}
	// Lowering the threshold keeps the three failures: the next one trips.
	lower := cfg
	lower.ConsecutiveFailures = 4
	if err := b.Update(lower); err != nil {
		t.Fatal(err)
	}
	if got := b.Counts().ConsecutiveFailures; got != 3 || b.State() != breaker.StateClosed {
		t.Fatalf("after Update: state %v, consecutive failures %d; want closed, 3 kept", b.State(), got)
	}
	_ = call(t, b, errDown)
	if b.State() != breaker.StateOpen {
		t.Fatalf("4th failure with threshold 4: state %v", b.State())
	}

	// A shorter open timeout counts from the opening: 3 s in, a 2 s timeout has passed.
	clk.Advance(3 * time.Second)
	shorter := lower
	shorter.OpenTimeout = 2 * time.Second
	shorter.HalfOpenProbes = 2
	if err := b.Update(shorter); err != nil {
		t.Fatal(err)
	}
	if b.State() != breaker.StateHalfOpen {
		t.Fatalf("open timeout shortened below the time open: state %v", b.State())
	}
	// Two probes are now admitted and two successes close it.
	d1, err1 := b.Allow()
	d2, err2 := b.Allow()
	if err1 != nil || err2 != nil {
		t.Fatalf("half-open with 2 probes: %v %v", err1, err2)
	}
	if _, err := b.Allow(); err == nil {
		t.Fatal("third probe admitted")
	}
	d1(nil)
	d2(nil)
	if b.State() != breaker.StateClosed {
		t.Fatalf("after 2 successful probes: %v", b.State())
	}

	// Invalid configs change nothing.
	bad := shorter
	bad.ConsecutiveFailures, bad.FailureRatio = 0, 0
	if err := b.Update(bad); err == nil {
		t.Fatal("accepted a config without a trip rule")
	}
	for range 3 {
		_ = call(t, b, errDown)
	}
	if b.State() != breaker.StateClosed {
		t.Fatal("tripped below the kept threshold of 4")
	}

	// Disabled: a pass-through that counts nothing; enabled again it starts clean.
	if err := b.Update(breaker.Config{}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := call(t, b, errDown); err != nil {
			t.Fatalf("disabled breaker refused a call: %v", err)
		}
	}
	if err := b.Update(shorter); err != nil {
		t.Fatal(err)
	}
	if c := b.Counts(); b.State() != breaker.StateClosed || c.Requests != 0 {
		t.Fatalf("re-enabled: state %v counts %+v", b.State(), c)
	}
	if got, want := tr.get(), []string{"closed>open", "open>half-open", "half-open>closed"}; !slices.Equal(got, want) {
		t.Errorf("transitions = %v, want %v", got, want)
	}
}
