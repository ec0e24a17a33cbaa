package fault_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

const unary = "/grpc.testing.TestService/UnaryCall"

// sweep returns 0.00, 0.01, ..., 0.99, 0.00, ...: over 100 draws, exactly p% fall below p/100.
func sweep() func() float64 {
	var mu sync.Mutex
	i := 0
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		v := float64(i%100) / 100
		i++
		return v
	}
}

func TestAbortHitsTheConfiguredFraction(t *testing.T) {
	t.Parallel()
	inj, err := fault.New(fault.Config{Enabled: true, Rules: map[string]fault.Rule{
		unary: {AbortCode: "UNAVAILABLE", AbortPercent: 30},
	}}, fault.WithRand(sweep()))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(inj.UnaryServerInterceptor()))
	echo := &testserver.Echo{}
	client := testserver.Client(t, testserver.Start(t, srv, echo))

	aborted := 0
	for range 200 {
		_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
		switch {
		case err == nil:
		case status.Code(err) == codes.Unavailable && rpcerr.Reason(err) == rpcerr.ReasonFault:
			aborted++
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if aborted != 60 {
		t.Errorf("aborted %d of 200, want 60 (30%%)", aborted)
	}
	if got := echo.Calls.Load(); got != 140 {
		t.Errorf("handler ran %d times, want 140", got)
	}
	// Methods without a rule are untouched.
	for range 20 {
		if _, err := client.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
			t.Fatalf("EmptyCall: %v", err)
		}
	}
}

func TestDelayAndDisabled(t *testing.T) {
	t.Parallel()
	var slept atomic.Int64
	sleep := func(_ context.Context, d time.Duration) error {
		if d != 300*time.Millisecond {
			t.Errorf("delay = %v", d)
		}
		slept.Add(1)
		return nil
	}
	cfg := fault.Config{Enabled: true, Rules: map[string]fault.Rule{
		"/grpc.testing.TestService/*": {Delay: 300 * time.Millisecond, DelayPercent: 50},
	}}
	inj, err := fault.New(cfg, fault.WithRand(sweep()), fault.WithSleep(sleep))
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if err := inj.Inject(t.Context(), unary); err != nil {
			t.Fatal(err)
		}
	}
	if got := slept.Load(); got != 50 {
		t.Errorf("delayed %d of 100 calls, want 50", got)
	}

	cfg.Enabled = false
	if err := inj.Update(cfg); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		_ = inj.Inject(t.Context(), unary)
	}
	if got := slept.Load(); got != 50 {
		t.Errorf("disabled injector still delayed: %d", got)
	}
}

func TestDelayRespectsDeadline(t *testing.T) {
	t.Parallel()
	inj, err := fault.New(fault.Config{Enabled: true, Rules: map[string]fault.Rule{"*": {Delay: time.Hour, DelayPercent: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := inj.Inject(ctx, unary); status.Code(err) != codes.Canceled {
		t.Errorf("delay under a cancelled context: %v, want CANCELED", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	bad := fault.Config{Enabled: true, Rules: map[string]fault.Rule{
		"UnaryCall": {AbortCode: "NOPE", AbortPercent: 120},
	}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`rules["UnaryCall"]`, "abort_percent", "abort_code"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
	if _, err := fault.New(bad); err == nil {
		t.Error("New accepted an invalid config")
	}
	if c, ok := fault.ParseCode("deadline_exceeded"); !ok || c != codes.DeadlineExceeded {
		t.Errorf("ParseCode = %v, %v", c, ok)
	}
}
