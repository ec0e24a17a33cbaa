package platform_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// One call through two platforms: one trace (client span parent of the server span), the RPC metrics
// on the admin port, readiness on /readyz and health on the plaintext health port, a log line inside
// the handler carrying the trace id.
func TestObservabilityWiring(t *testing.T) {
	t.Parallel()
	srvSpans, cliSpans := tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter()
	cfg := testConfig("echo")
	cfg.AdminAddr, cfg.HealthAddr = freeAddr(t), freeAddr(t)
	cfg.Telemetry.SampleRatio = 1
	var logsMu lockedBuffer
	p, err := platform.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logsMu, nil)), platform.WithSpanExporter(srvSpans))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	echo := &testserver.Echo{Unary: func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		p.Logger().InfoContext(ctx, "inside handler")
		return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
	}}
	srv := serve(t, p, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, echo) })

	c, cp := client(t, testConfig("caller"), []string{srv.addr}, platform.WithSpanExporter(cliSpans))
	if _, err := c.UnaryCall(t.Context(), payload); err != nil {
		t.Fatal(err)
	}
	// Spans are batched: Close of the client flushes them; the server's are flushed with ForceFlush.
	if err := cp.Telemetry().ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := p.Telemetry().ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var cs, ss tracetest.SpanStub
	for _, s := range cliSpans.GetSpans() {
		if s.SpanKind == trace.SpanKindClient && strings.HasSuffix(s.Name, "/UnaryCall") {
			cs = s
		}
	}
	for _, s := range srvSpans.GetSpans() {
		if s.SpanKind == trace.SpanKindServer && strings.HasSuffix(s.Name, "/UnaryCall") {
			ss = s
		}
	}
	if !cs.SpanContext.IsValid() || !ss.SpanContext.IsValid() {
		t.Fatalf("missing spans: client %d, server %d", len(cliSpans.GetSpans()), len(srvSpans.GetSpans()))
	}
	if ss.SpanContext.TraceID() != cs.SpanContext.TraceID() || ss.Parent.SpanID() != cs.SpanContext.SpanID() {
		t.Fatalf("server span %v is not the child of client span %v", ss.Parent, cs.SpanContext)
	}

	// The log line written inside the handler carries the server span's ids.
	var found bool
	for _, line := range strings.Split(logsMu.String(), "\n") {
		if !strings.Contains(line, "inside handler") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		found = rec["trace_id"] == ss.SpanContext.TraceID().String() && rec["span_id"] == ss.SpanContext.SpanID().String()
	}
	if !found {
		t.Fatalf("no handler log line with the span's ids in:\n%s", logsMu.String())
	}

	code, body := httpGet(t, "http://"+cfg.AdminAddr+"/metrics")
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`,
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics (%d) lacks %q", code, want)
		}
	}
	if code, _ := httpGet(t, "http://"+cfg.AdminAddr+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d", code)
	}
	if code, _ := httpGet(t, "http://"+cfg.AdminAddr+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	cmetrics := gather(t, cp)
	if !strings.Contains(cmetrics, `grpc_client_handled_total{grpc_code="OK",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`) ||
		!strings.Contains(cmetrics, `shopmesh_breaker_state{target="echo"} 0`) {
		t.Fatalf("client metrics:\n%s", cmetrics)
	}

	// The plaintext health port answers with the shared state.
	hc, err := grpc.NewClient(cfg.HealthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	resp, err := healthgrpc.NewHealthClient(hc).Check(t.Context(), &healthgrpc.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("health port: %v %v", resp, err)
	}
	p.Health().SetServing("", false)
	resp, err = healthgrpc.NewHealthClient(hc).Check(t.Context(), &healthgrpc.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health port after NOT_SERVING: %v %v", resp, err)
	}
	if code, _ := httpGet(t, "http://"+cfg.AdminAddr+"/readyz"); code != 503 {
		t.Fatalf("/readyz while NOT_SERVING = %d", code)
	}
	// Only health is served there.
	if _, err := testgrpc.NewTestServiceClient(hc).UnaryCall(t.Context(), payload); status.Code(err) != codes.Unimplemented {
		t.Fatalf("echo on the health port: %v", err)
	}

	srv.stop()
	if err := srv.wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", cfg.AdminAddr, time.Second); err == nil {
		t.Fatal("admin port still open after Serve returned")
	}
}

// Rate-limited and shed calls, and retries, are counted on the process registry.
func TestRejectAndRetryMetrics(t *testing.T) {
	t.Parallel()
	cfg := testConfig("echo")
	cfg.RateLimit = ratelimit.Limits{Methods: map[string]ratelimit.Rule{
		"/grpc.testing.TestService/EmptyCall": {RPS: 0.001, Burst: 1},
	}}
	var fails atomic.Int64
	fails.Store(2)
	echo := &testserver.Echo{Unary: func(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if fails.Add(-1) >= 0 {
			return nil, status.Error(codes.Unavailable, "try again")
		}
		return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
	}}
	srv := echoServer(t, cfg, echo)
	c, cp := client(t, testConfig("caller"), []string{srv.addr})
	if _, err := c.UnaryCall(t.Context(), payload); err != nil {
		t.Fatalf("call retried twice: %v", err)
	}
	if _, err := c.EmptyCall(t.Context(), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EmptyCall(t.Context(), &testgrpc.Empty{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second EmptyCall: %v", err)
	}
	if m := gather(t, cp); !strings.Contains(m, `shopmesh_client_retries_total{grpc_method="UnaryCall",grpc_service="grpc.testing.TestService"} 2`) {
		t.Fatalf("client metrics lack 2 retries:\n%s", grep(m, "retries"))
	}
	if m := gather(t, srv.p); !strings.Contains(m, `shopmesh_server_rejected_total{grpc_method="grpc.testing.TestService/EmptyCall",reason="RATE_LIMITED"} 1`) {
		t.Fatalf("server metrics lack the rejection:\n%s", grep(m, "rejected"))
	}
}

func gather(t *testing.T, p *platform.Platform) string {
	t.Helper()
	srv := &http.Server{Handler: p.Telemetry().AdminHandler(nil), ReadHeaderTimeout: time.Second}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	_, body := httpGet(t, "http://"+l.Addr().String()+"/metrics")
	return body
}

func grep(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Breaker state and transitions are on the process registry: 5 failures open the breaker.
func TestBreakerMetrics(t *testing.T) {
	t.Parallel()
	srv := echoServer(t, testConfig("payment"), &testserver.Echo{Unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return nil, status.Error(codes.Internal, "db down")
	}})
	c, p := client(t, testConfig("order"), []string{srv.addr})
	for range 5 {
		if _, err := c.UnaryCall(t.Context(), payload); status.Code(err) != codes.Internal {
			t.Fatal(err)
		}
	}
	m := gather(t, p)
	for _, want := range []string{
		`shopmesh_breaker_state{target="echo"} 2`,
		`shopmesh_breaker_transitions_total{from="closed",target="echo",to="open"} 1`,
		`grpc_client_handled_total{grpc_code="Internal",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 5`,
	} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %q:\n%s", want, grep(m, "breaker"))
		}
	}
}

// keyCount counts the top-level keys named key in one JSON object (a map would keep only one of them).
func keyCount(t *testing.T, line, key string) int {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %q", line)
	}
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if tok == key {
			n++
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
	}
	return n
}

// TestPlatformLinesCarryServiceOnce: the service's logger already says which service it is; the
// platform's own lines (start, telemetry, serving, shutdown) must not say it a second time.
func TestPlatformLinesCarryServiceOnce(t *testing.T) {
	t.Parallel()
	var buf lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil)).With("service", "echo")
	cfg := testConfig("echo")
	cfg.AdminAddr = freeAddr(t)
	p, err := platform.New(t.Context(), cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	srv := serve(t, p, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, &testserver.Echo{}) })
	eventually(t, "serving", func() bool { return strings.Contains(buf.String(), `"msg":"serving"`) })
	srv.stop()
	if err := srv.wait(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for _, want := range []string{`"msg":"tracing off`, `"msg":"serving"`, `"msg":"shutting down"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no %s line in:\n%s", want, buf.String())
		}
	}
	for _, l := range lines {
		if n := keyCount(t, l, "service"); n != 1 {
			t.Errorf("%d service keys in %s", n, l)
		}
	}
}
