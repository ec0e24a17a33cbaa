package ratelimit_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

const unary = "/grpc.testing.TestService/UnaryCall"

func start(t *testing.T, l ratelimit.Limits, echo *testserver.Echo) (testpb.TestServiceClient, *ratelimit.Limiter) {
	t.Helper()
	lim, err := ratelimit.New(l)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(lim.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(lim.StreamServerInterceptor()),
	)
	return testserver.Client(t, testserver.Start(t, srv, echo)), lim
}

func count(t *testing.T, client testpb.TestServiceClient, n int) (ok, limited int) {
	t.Helper()
	for range n {
		_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
		switch {
		case err == nil:
			ok++
		case status.Code(err) == codes.ResourceExhausted:
			if _, has := rpcerr.RetryDelay(err); !has {
				t.Errorf("RESOURCE_EXHAUSTED without RetryInfo: %v", err)
			}
			limited++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	return ok, limited
}

func TestRateLimitRejectsExcessWithRetryInfo(t *testing.T) {
	t.Parallel()
	// 0.001 rps: the bucket never refills during the test, so exactly Burst calls pass.
	client, lim := start(t, ratelimit.Limits{Methods: map[string]ratelimit.Rule{unary: {RPS: 0.001, Burst: 3}}}, &testserver.Echo{})
	ok, limited := count(t, client, 10)
	if ok != 3 || limited != 7 {
		t.Fatalf("ok=%d limited=%d, want 3 and 7", ok, limited)
	}
	_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
	if rpcerr.Reason(err) != rpcerr.ReasonRateLimited {
		t.Errorf("reason = %q", rpcerr.Reason(err))
	}
	if d, _ := rpcerr.RetryDelay(err); d <= 0 {
		t.Errorf("retry delay = %v, want > 0", d)
	}
	// Other methods are not affected.
	if _, err := client.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Errorf("EmptyCall: %v", err)
	}

	// Update raises the limit live.
	if err := lim.Update(ratelimit.Limits{Methods: map[string]ratelimit.Rule{unary: {RPS: 0.001, Burst: 8}}}); err != nil {
		t.Fatal(err)
	}
	ok, limited = count(t, client, 10)
	if ok != 8 || limited != 2 {
		t.Fatalf("after Update: ok=%d limited=%d, want 8 and 2", ok, limited)
	}
	// Removing the rule lifts the limit.
	if err := lim.Update(ratelimit.Limits{}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := count(t, client, 20); ok != 20 {
		t.Errorf("unlimited: ok=%d, want 20", ok)
	}
}

func TestServiceWideRuleAndDefault(t *testing.T) {
	t.Parallel()
	client, _ := start(t, ratelimit.Limits{
		Default: ratelimit.Rule{RPS: 0.001, Burst: 100},
		Methods: map[string]ratelimit.Rule{"/grpc.testing.TestService/*": {RPS: 0.001, Burst: 2}},
	}, &testserver.Echo{})
	// The service rule is one bucket shared by UnaryCall and EmptyCall.
	if _, err := client.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	ok, limited := count(t, client, 3)
	if ok != 1 || limited != 2 {
		t.Errorf("ok=%d limited=%d, want 1 and 2", ok, limited)
	}
}

func TestConcurrencyLimitShedsLoad(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	echo := &testserver.Echo{Unary: func(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		entered <- struct{}{}
		<-release
		return &testpb.SimpleResponse{}, nil
	}}
	client, lim := start(t, ratelimit.Limits{MaxInFlight: 3, RetryAfter: 50 * time.Millisecond}, echo)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			_, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{})
			errs <- err
		})
	}
	for range 3 {
		<-entered
	}
	if got := lim.InFlight(); got != 3 {
		t.Errorf("InFlight = %d, want 3", got)
	}
	_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
	if status.Code(err) != codes.ResourceExhausted || rpcerr.Reason(err) != rpcerr.ReasonOverloaded {
		t.Fatalf("4th concurrent call: %v, want RESOURCE_EXHAUSTED/OVERLOADED", err)
	}
	if d, ok := rpcerr.RetryDelay(err); !ok || d != 50*time.Millisecond {
		t.Errorf("RetryInfo = %v, %v", d, ok)
	}

	// Raising the limit live admits one more while the first three still run.
	if err := lim.Update(ratelimit.Limits{MaxInFlight: 4}); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		_, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{})
		errs <- err
	})
	<-entered
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("admitted call failed: %v", err)
		}
	}
	if got := lim.InFlight(); got != 0 {
		t.Errorf("InFlight after all finished = %d", got)
	}
}

func TestPerMethodInFlight(t *testing.T) {
	t.Parallel()
	lim, err := ratelimit.New(ratelimit.Limits{Methods: map[string]ratelimit.Rule{unary: {MaxInFlight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	release, err := lim.Acquire(unary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Acquire(unary); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second concurrent call: %v", err)
	}
	other, err := lim.Acquire("/grpc.testing.TestService/EmptyCall")
	if err != nil {
		t.Errorf("another method is not limited: %v", err)
	}
	other()
	release()
	release() // idempotent
	if r, err := lim.Acquire(unary); err != nil {
		t.Errorf("after release: %v", err)
	} else {
		r()
	}
	if lim.InFlight() != 0 {
		t.Errorf("InFlight = %d", lim.InFlight())
	}
}

func TestValidateNamesField(t *testing.T) {
	t.Parallel()
	err := ratelimit.Limits{MaxInFlight: -1, Methods: map[string]ratelimit.Rule{"CreateOrder": {RPS: -1}}}.Validate()
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"max_in_flight", `methods["CreateOrder"]`, "rps"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if _, err := ratelimit.New(ratelimit.Limits{MaxInFlight: -1}); err == nil {
		t.Error("New accepts invalid limits")
	}
	lim, _ := ratelimit.New(ratelimit.Limits{})
	if err := lim.Update(ratelimit.Limits{MaxInFlight: -1}); err == nil {
		t.Error("Update accepts invalid limits")
	}
}
