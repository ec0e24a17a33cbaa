package platform_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// TestConfigCenterChangesRunningBreaker: a document published to the config center lowers the trip
// threshold and the open timeout of a breaker that already counted failures, through UpdateBreakers.
func TestConfigCenterChangesRunningBreaker(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	srv := echoServer(t, testConfig("payment"), &testserver.Echo{Unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		calls.Add(1)
		return nil, status.Error(codes.Internal, "db down")
	}})
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cfg := testConfig("order") // breaker: 5 consecutive failures, open 5 s
	c, p := client(t, cfg, []string{srv.addr}, platform.WithClock(clock))

	src := configcenter.NewStatic(nil)
	base := configcenter.Settings{RateLimit: cfg.RateLimit, Breaker: cfg.Client.Breaker}
	center, err := configcenter.New(base, configcenter.DataIDs("order"), src,
		// The Set below may land between the center's first read and its watch starting; the re-read
		// covers that window (as it does in production), here quickly.
		configcenter.Targets{Limiter: p.RateLimiter(), Breaker: p.UpdateBreakers}, configcenter.Options{Resync: 100 * time.Millisecond}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- center.Run(ctx) }()
	defer func() { cancel(); <-done }()

	fail := func() {
		t.Helper()
		if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); status.Code(err) != codes.Internal {
			t.Fatalf("call: %v", err)
		}
	}
	for range 3 {
		fail()
	}
	b, ok := p.Breaker("echo")
	if !ok || b.State() != breaker.StateClosed {
		t.Fatal("breaker missing or open after 3 of 5 failures")
	}

	src.Set("order.yaml", "breaker: {consecutive_failures: 4, open_timeout: 2s}")
	eventually(t, "config applied", func() bool { return center.Current().Breaker.ConsecutiveFailures == 4 })
	fail() // the 4th consecutive failure now trips
	if b.State() != breaker.StateOpen {
		t.Fatalf("after a 4th failure with the threshold lowered to 4: %v", b.State())
	}
	_, err = c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
	if rpcerr.Reason(err) != rpcerr.ReasonCircuitOpen {
		t.Fatalf("open breaker: %v", err)
	}
	if calls.Load() != 4 {
		t.Errorf("dependency saw %d calls, want 4", calls.Load())
	}

	mu.Lock()
	now = now.Add(2 * time.Second) // the published open timeout, not the configured 5 s
	mu.Unlock()
	if b.State() != breaker.StateHalfOpen {
		t.Errorf("2 s after opening with open_timeout 2s: %v", b.State())
	}

	// An invalid document changes nothing.
	if err := center.Update("order.yaml", "breaker: {consecutive_failures: 0, failure_ratio: 0}"); err == nil {
		t.Error("accepted a breaker without a trip rule")
	}
	if got := center.Current().Breaker.ConsecutiveFailures; got != 4 {
		t.Errorf("consecutive_failures = %d after a rejected document", got)
	}
}
