package dialer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/dialer"
	"github.com/shopmesh/shopmesh/pkg/platform/dialer/outlier"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

func retryPolicy(attempts int) dialer.RetryPolicy {
	return dialer.RetryPolicy{
		MaxAttempts: attempts, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		BackoffMultiplier: 2, Codes: []string{"UNAVAILABLE"},
	}
}

// unaryCall is the echo method, declared safe to repeat by the tests that exercise retries: its proto
// has no idempotency_level, so without the declaration it is never retried.
var unaryCall = []string{"/grpc.testing.TestService/UnaryCall"}

func dial(t *testing.T, target string, o dialer.Options) testpb.TestServiceClient {
	t.Helper()
	conn, err := dialer.Dial(target, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return testpb.NewTestServiceClient(conn)
}

// failing returns a handler failing the first n attempts with code.
func failing(n int64, code codes.Code) (*testserver.Echo, *atomic.Int64) {
	var attempts atomic.Int64
	echo := &testserver.Echo{}
	echo.Unary = func(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		if attempts.Add(1) <= n {
			return nil, status.Error(code, "try again")
		}
		return &testpb.SimpleResponse{}, nil
	}
	return echo, &attempts
}

func TestRetriesUnavailable(t *testing.T) {
	t.Parallel()
	echo, attempts := failing(2, codes.Unavailable)
	addr := testserver.Start(t, grpc.NewServer(), echo)
	client := dial(t, "passthrough:///"+addr, dialer.Options{Target: dialer.Target{Retry: retryPolicy(4), Idempotent: unaryCall}})
	if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("call should succeed on the 3rd attempt: %v", err)
	}
	if got := attempts.Load(); got != 3 {
		t.Errorf("server saw %d attempts, want 3", got)
	}
}

func TestRetriesStopAtMaxAttempts(t *testing.T) {
	t.Parallel()
	echo, attempts := failing(100, codes.Unavailable)
	addr := testserver.Start(t, grpc.NewServer(), echo)
	client := dial(t, "passthrough:///"+addr, dialer.Options{Target: dialer.Target{Retry: retryPolicy(3), Idempotent: unaryCall}})
	if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("code = %v", status.Code(err))
	}
	if got := attempts.Load(); got != 3 {
		t.Errorf("server saw %d attempts, want 3", got)
	}
}

func TestNoRetryOnCallerError(t *testing.T) {
	t.Parallel()
	for _, code := range []codes.Code{codes.InvalidArgument, codes.DeadlineExceeded, codes.Internal, codes.ResourceExhausted} {
		t.Run(code.String(), func(t *testing.T) {
			t.Parallel()
			echo, attempts := failing(100, code)
			addr := testserver.Start(t, grpc.NewServer(), echo)
			client := dial(t, "passthrough:///"+addr, dialer.Options{Target: dialer.Target{Retry: retryPolicy(5), Idempotent: unaryCall}})
			if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{}); status.Code(err) != code {
				t.Fatalf("code = %v", status.Code(err))
			}
			if got := attempts.Load(); got != 1 {
				t.Errorf("server saw %d attempts for %v, want 1", got, code)
			}
		})
	}
}

func TestIdempotentMethodsRetryMore(t *testing.T) {
	t.Parallel()
	echo, attempts := failing(1, codes.DeadlineExceeded)
	addr := testserver.Start(t, grpc.NewServer(), echo)
	target := dialer.Target{
		Retry:           retryPolicy(3),
		Idempotent:      []string{"/grpc.testing.TestService/UnaryCall"},
		IdempotentCodes: []string{"DEADLINE_EXCEEDED"},
	}
	client := dial(t, "passthrough:///"+addr, dialer.Options{Target: target})
	if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("idempotent method should retry DEADLINE_EXCEEDED: %v", err)
	}
	if got := attempts.Load(); got != 2 {
		t.Errorf("attempts = %d, want 2", got)
	}
}

func TestRetryThrottlingStopsRetriesWhenFailuresDominate(t *testing.T) {
	t.Parallel()
	echo, attempts := failing(1_000_000, codes.Unavailable)
	addr := testserver.Start(t, grpc.NewServer(), echo)
	rp := retryPolicy(5)
	rp.ThrottleMaxTokens, rp.ThrottleTokenRatio = 10, 0.1
	client := dial(t, "passthrough:///"+addr, dialer.Options{Target: dialer.Target{Retry: rp, Idempotent: unaryCall}})

	// Each failed attempt costs a token; retries stop once tokens <= 5. The first call uses 5 attempts
	// (10→5 tokens); from then on every call gets exactly one attempt.
	var perCall []int64
	for range 10 {
		before := attempts.Load()
		if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{}); status.Code(err) != codes.Unavailable {
			t.Fatalf("code = %v", status.Code(err))
		}
		perCall = append(perCall, attempts.Load()-before)
	}
	want := []int64{5, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	if fmt.Sprint(perCall) != fmt.Sprint(want) {
		t.Errorf("attempts per call = %v, want %v", perCall, want)
	}
}

func TestServerPushbackStopsRetry(t *testing.T) {
	t.Parallel()
	var attempts atomic.Int64
	echo := &testserver.Echo{Unary: func(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		attempts.Add(1)
		// A negative pushback tells the client not to retry (gRFC A6).
		_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", "-1"))
		return nil, status.Error(codes.Unavailable, "overloaded, do not retry")
	}}
	addr := testserver.Start(t, grpc.NewServer(), echo)
	client := dial(t, "passthrough:///"+addr, dialer.Options{Target: dialer.Target{Retry: retryPolicy(5), Idempotent: unaryCall}})
	_, _ = client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
	if got := attempts.Load(); got != 1 {
		t.Errorf("attempts = %d, want 1: pushback must stop retries", got)
	}
}

type backend struct {
	echo   *testserver.Echo
	health *health.Server
	addr   string
}

func startBackends(t *testing.T, n int) []*backend {
	t.Helper()
	return startBackendsWith(t, make([]func(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error), n))
}

// startBackendsWith starts one backend per handler (nil: the echo).
func startBackendsWith(t *testing.T, handlers []func(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error)) []*backend {
	t.Helper()
	var out []*backend
	for _, h := range handlers {
		srv := grpc.NewServer()
		b := &backend{echo: &testserver.Echo{Unary: h}, health: health.NewServer()}
		healthgrpc.RegisterHealthServer(srv, b.health)
		b.addr = testserver.Start(t, srv, b.echo)
		out = append(out, b)
	}
	return out
}

// counts makes n calls and returns how many each backend received.
func counts(t *testing.T, client testpb.TestServiceClient, bs []*backend, n int) []int64 {
	t.Helper()
	before := make([]int64, len(bs))
	for i, b := range bs {
		before[i] = b.echo.Calls.Load()
	}
	for range n {
		if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("call: %v", err)
		}
	}
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.echo.Calls.Load() - before[i]
	}
	return out
}

// eventually repeats cond (which makes calls) until it holds, failing after a bounded wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRoundRobinSkipsNotServingInstances(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 3)
	static := discovery.NewStatic(map[string][]string{"echo": {bs[0].addr, bs[1].addr, bs[2].addr}})
	target, builder, err := static.Resolve("echo")
	if err != nil {
		t.Fatal(err)
	}
	client := dial(t, target, dialer.Options{
		Target:   dialer.Target{LB: dialer.RoundRobin, HealthCheck: true, Retry: retryPolicy(1)},
		Resolver: builder,
	})

	all := func(c []int64) bool { return c[0] > 0 && c[1] > 0 && c[2] > 0 }
	eventually(t, "all three instances receive calls", func() bool { return all(counts(t, client, bs, 30)) })
	if c := counts(t, client, bs, 30); c[0] != 10 || c[1] != 10 || c[2] != 10 {
		t.Errorf("round robin spread = %v, want 10 each", c)
	}

	bs[1].health.SetServingStatus("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	eventually(t, "the NOT_SERVING instance stops receiving", func() bool { return counts(t, client, bs, 30)[1] == 0 })
	if c := counts(t, client, bs, 60); c[1] != 0 || c[0] == 0 || c[2] == 0 {
		t.Errorf("with instance 1 NOT_SERVING: %v, want none for it", c)
	}

	bs[1].health.SetServingStatus("", healthgrpc.HealthCheckResponse_SERVING)
	eventually(t, "the instance receives again", func() bool { return all(counts(t, client, bs, 30)) })
}

func TestPickFirstAndLeastRequest(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	static := discovery.NewStatic(map[string][]string{"echo": {bs[0].addr, bs[1].addr}})
	target, builder, _ := static.Resolve("echo")

	pf := dial(t, target, dialer.Options{Target: dialer.Target{LB: dialer.PickFirst, Retry: retryPolicy(1)}, Resolver: builder})
	if c := counts(t, pf, bs, 20); c[0] != 20 || c[1] != 0 {
		t.Errorf("pick_first spread = %v, want all on the first", c)
	}
	// With outlier ejection wrapping it, as the platform dials.
	lr := dial(t, target, dialer.Options{Target: dialer.Target{LB: dialer.LeastRequest, HealthCheck: true, Retry: retryPolicy(1), Outlier: testOutlier()}, Resolver: builder})
	eventually(t, "least_request uses both", func() bool {
		c := counts(t, lr, bs, 20)
		return c[0] > 0 && c[1] > 0
	})
}

func TestServiceConfigJSON(t *testing.T) {
	t.Parallel()
	rp := retryPolicy(4)
	rp.ThrottleMaxTokens, rp.ThrottleTokenRatio = 10, 0.1
	rp.InitialBackoff, rp.MaxBackoff = 50*time.Millisecond, time.Second
	sc, err := dialer.ServiceConfig(dialer.Target{
		HealthCheck: true, HealthService: "shopmesh.inventory.v1.InventoryService", Retry: rp,
		Idempotent: []string{"/shopmesh.inventory.v1.InventoryService/GetStock"}, IdempotentCodes: []string{"deadline_exceeded"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(sc), &m); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"loadBalancingConfig":[{"round_robin":{}}]`,
		`"healthCheckConfig":{"serviceName":"shopmesh.inventory.v1.InventoryService"}`,
		`"retryThrottling":{"maxTokens":10,"tokenRatio":0.1}`,
		`"initialBackoff":"0.05s"`,
		`"name":[{"service":"shopmesh.inventory.v1.InventoryService","method":"GetStock"}]`,
		`"retryableStatusCodes":["UNAVAILABLE","DEADLINE_EXCEEDED"]`,
	} {
		if !strings.Contains(sc, want) {
			t.Errorf("service config lacks %s:\n%s", want, sc)
		}
	}
	if strings.Contains(sc, `"name":[{}]`) {
		t.Errorf("service config has a default retry policy for every method:\n%s", sc)
	}
	// grpc itself must accept it.
	conn, err := grpc.NewClient("passthrough:///x", grpc.WithDefaultServiceConfig(sc), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc rejects the service config: %v", err)
	}
	_ = conn.Close()
}

func TestTargetValidation(t *testing.T) {
	t.Parallel()
	cases := map[string]dialer.Target{
		"lb":                   {LB: "random", Retry: retryPolicy(1)},
		"max_attempts":         {Retry: retryPolicy(6)},
		"codes":                {Retry: dialer.RetryPolicy{MaxAttempts: 2, InitialBackoff: 1, MaxBackoff: 1, BackoffMultiplier: 1, Codes: []string{"SOMETIMES"}}},
		"idempotent":           {Retry: retryPolicy(1), Idempotent: []string{"GetStock"}},
		"initial_backoff":      {Retry: dialer.RetryPolicy{MaxAttempts: 2, BackoffMultiplier: 1, Codes: []string{"UNAVAILABLE"}}},
		"throttle_token_ratio": {Retry: dialer.RetryPolicy{MaxAttempts: 1, ThrottleMaxTokens: 10}},
		"max_ejection_percent": {Retry: retryPolicy(1), Outlier: func() outlier.Config { c := outlier.Default(); c.MaxEjectionPercent = 0; return c }()},
		"failure_ratio, consecutive_failures or latency_factor": {Retry: retryPolicy(1), Outlier: outlier.Config{Enabled: true, Interval: 1, MinRequests: 1, BaseEjection: 1, MaxEjection: 1, MaxEjectionPercent: 50}},
	}
	for field, target := range cases {
		err := target.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v should name the field", field, err)
		}
	}
}
