package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// testService answers UnaryCall (with the status the request asks for) and
// StreamingOutputCall (one message per response parameter).
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if s := req.GetResponseStatus(); s != nil && s.GetCode() != 0 {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testpb.SimpleResponse{}, nil
}

func (testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	for range req.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
	return nil
}

func newTelemetry(t *testing.T, ratio float64) (*telemetry.Telemetry, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	cfg := telemetry.DefaultConfig("telemetry-test")
	cfg.SampleRatio = ratio
	cfg.Version, cfg.InstanceID, cfg.Environment = "v0.0.1", "test-1", "test"
	tel, err := telemetry.New(t.Context(), cfg, slog.New(slog.DiscardHandler), telemetry.WithSpanExporter(exp))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel, exp
}

// startRPC serves testService on loopback with tel's server handler and
// returns a client using tel's client handler.
func startRPC(t *testing.T, tel *telemetry.Telemetry) testpb.TestServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer(grpc.StatsHandler(tel.ServerStatsHandler()))
	testpb.RegisterTestServiceServer(srv, testService{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(tel.ClientStatsHandler()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.GracefulStop()
		<-done
	})
	return testpb.NewTestServiceClient(conn)
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamAll(ctx context.Context, c testpb.TestServiceClient, n int) error {
	req := &testpb.StreamingOutputCallRequest{}
	for range n {
		req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{})
	}
	stream, err := c.StreamingOutputCall(ctx, req)
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// waitSpans flushes until want spans named name have ended, or fails.
func waitSpans(t *testing.T, tel *telemetry.Telemetry, exp *tracetest.InMemoryExporter, name string, want int) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := tel.ForceFlush(t.Context()); err != nil {
			t.Fatalf("ForceFlush: %v", err)
		}
		var got tracetest.SpanStubs
		for _, s := range exp.GetSpans() {
			if s.Name == name {
				got = append(got, s)
			}
		}
		if len(got) >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans named %q: got %d, want %d (all: %v)", name, len(got), want, exp.GetSpans())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := telemetry.DefaultConfig("order")
	tests := []struct {
		name    string
		mutate  func(*telemetry.Config)
		wantErr bool
	}{
		{"default", func(*telemetry.Config) {}, false},
		{"ratio zero", func(c *telemetry.Config) { c.SampleRatio = 0 }, false},
		{"no service name", func(c *telemetry.Config) { c.ServiceName = " " }, true},
		{"ratio above one", func(c *telemetry.Config) { c.SampleRatio = 1.5 }, true},
		{"ratio negative", func(c *telemetry.Config) { c.SampleRatio = -0.1 }, true},
		{"negative timeout", func(c *telemetry.Config) { c.ExportTimeout = -time.Second }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.mutate(&cfg)
			if err := cfg.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if _, err := telemetry.New(t.Context(), telemetry.Config{}, nil); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

func assertOneTrace(t *testing.T, spans tracetest.SpanStubs) {
	t.Helper()
	var client, server *tracetest.SpanStub
	for i := range spans {
		switch spans[i].SpanKind {
		case trace.SpanKindClient:
			client = &spans[i]
		case trace.SpanKindServer:
			server = &spans[i]
		}
	}
	if client == nil || server == nil {
		t.Fatalf("want a client and a server span, got %v", spans)
	}
	if client.SpanContext.TraceID() != server.SpanContext.TraceID() {
		t.Fatalf("client trace %s != server trace %s", client.SpanContext.TraceID(), server.SpanContext.TraceID())
	}
	if server.Parent.SpanID() != client.SpanContext.SpanID() || !server.Parent.IsRemote() {
		t.Fatalf("server parent %s (remote %v), want client span %s", server.Parent.SpanID(), server.Parent.IsRemote(), client.SpanContext.SpanID())
	}
	if got := server.Resource.Set(); got.Len() == 0 {
		t.Fatal("span has no resource")
	}
	if v, _ := server.Resource.Set().Value("service.name"); v.AsString() != "telemetry-test" {
		t.Fatalf("service.name = %q", v.AsString())
	}
}

func TestRPCSpansShareOneTrace(t *testing.T) {
	t.Parallel()
	tel, exp := newTelemetry(t, 1)
	c := startRPC(t, tel)
	ctx := callCtx(t)

	t.Run("unary", func(t *testing.T) {
		if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		assertOneTrace(t, waitSpans(t, tel, exp, "grpc.testing.TestService/UnaryCall", 2))
	})
	t.Run("server streaming", func(t *testing.T) {
		if err := streamAll(ctx, c, 3); err != nil {
			t.Fatalf("StreamingOutputCall: %v", err)
		}
		assertOneTrace(t, waitSpans(t, tel, exp, "grpc.testing.TestService/StreamingOutputCall", 2))
	})
	t.Run("joins the caller's trace", func(t *testing.T) {
		ctx, parent := tel.Tracer("test").Start(ctx, "parent")
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound)}})
		parent.End()
		if status.Code(err) != codes.NotFound {
			t.Fatalf("UnaryCall: %v, want NotFound", err)
		}
		spans := waitSpans(t, tel, exp, "grpc.testing.TestService/UnaryCall", 4)
		n := 0
		for _, s := range spans {
			if s.SpanContext.TraceID() == parent.SpanContext().TraceID() {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("%d RPC spans in the caller's trace, want 2", n)
		}
	})
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestAdminHandlerMetrics(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, 1)
	c := startRPC(t, tel)
	ctx := callCtx(t)
	for range 3 {
		if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
	}
	_, _ = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound)}})
	if err := streamAll(ctx, c, 2); err != nil {
		t.Fatalf("StreamingOutputCall: %v", err)
	}
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("EmptyCall: %v, want Unimplemented", err)
	}

	h := tel.AdminHandler(nil)
	// The server records End after the client has its answer; poll briefly.
	want := []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 3`,
		`grpc_server_handled_total{grpc_code="NotFound",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="StreamingOutputCall",grpc_service="grpc.testing.TestService",grpc_type="server_stream"} 1`,
		`grpc_server_handled_total{grpc_code="Unimplemented",grpc_method="unknown",grpc_service="unknown",grpc_type="unary"} 1`,
		`grpc_client_handled_total{grpc_code="OK",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 3`,
		`grpc_client_handled_total{grpc_code="Unimplemented",grpc_method="EmptyCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`,
		`grpc_server_handling_seconds_count{grpc_code="OK",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 3`,
		`grpc_client_handling_seconds_bucket{grpc_code="OK",grpc_method="StreamingOutputCall",grpc_service="grpc.testing.TestService",grpc_type="server_stream",le="+Inf"} 1`,
		"go_goroutines ",
		"process_start_time_seconds ",
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get(t, h, "/metrics")
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if code == http.StatusOK && len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics = %d, missing %q in:\n%s", code, missing, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAdminHandlerHealthAndPprof(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, 1)
	healthy := true
	h := tel.AdminHandler(func() bool { return healthy })
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d while healthy", code)
	}
	healthy = false
	if code, _ := get(t, h, "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz = %d while unhealthy", code)
	}
	if code, _ := get(t, h, "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ = %d without WithPprof, want 404", code)
	}
	if code, body := get(t, tel.AdminHandler(nil, telemetry.WithPprof()), "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ = %d with WithPprof", code)
	}
}

func TestServeAdminShutsDownGracefully(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- telemetry.ServeAdminListener(ctx, ln, tel.AdminHandler(nil)) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ServeAdminListener: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeAdminListener did not return after cancel")
	}
	if err := telemetry.ServeAdmin(t.Context(), "256.0.0.1:0", nil); err == nil {
		t.Fatal("ServeAdmin on a bad address returned nil")
	}
}

func TestLogHandlerAddsTraceAndSpanID(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, 1)
	var buf bytes.Buffer
	log := slog.New(telemetry.LogHandler(slog.NewTextHandler(&buf, nil))).With("svc", "order")

	log.InfoContext(t.Context(), "no span")
	ctx, span := tel.Tracer("test").Start(t.Context(), "work")
	defer span.End()
	log.InfoContext(ctx, "in span")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines: %q", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "trace_id") {
		t.Fatalf("record without span has trace_id: %s", lines[0])
	}
	sc := span.SpanContext()
	for _, w := range []string{"trace_id=" + sc.TraceID().String(), "span_id=" + sc.SpanID().String(), "svc=order"} {
		if !strings.Contains(lines[1], w) {
			t.Fatalf("line %q lacks %q", lines[1], w)
		}
	}
}

func TestInjectExtractRoundTrip(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, 1)
	ctx, span := tel.Tracer("test").Start(t.Context(), "publish")
	defer span.End()
	member, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	ctx = baggage.ContextWithBaggage(ctx, bag)

	headers := map[string]string{"content-type": "application/json"}
	tel.Inject(ctx, headers)
	if headers["traceparent"] == "" {
		t.Fatalf("no traceparent in %v", headers)
	}

	got := tel.Extract(context.Background(), headers)
	sc := trace.SpanContextFromContext(got)
	if sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsRemote() {
		t.Fatalf("extracted %v, want remote %v", sc, span.SpanContext())
	}
	if v := baggage.FromContext(got).Member("tenant").Value(); v != "acme" {
		t.Fatalf("baggage tenant = %q", v)
	}
	// A consumer span started from the extracted context joins the trace.
	_, consume := tel.Tracer("test").Start(got, "consume")
	defer consume.End()
	if consume.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Fatal("consumer span is in another trace")
	}
	tel.Inject(ctx, nil) // must not panic
}

func TestSamplingIsParentBased(t *testing.T) {
	t.Parallel()
	tel, exp := newTelemetry(t, 0)
	tr := tel.Tracer("test")

	_, root := tr.Start(t.Context(), "root")
	root.End()
	if root.SpanContext().IsSampled() || root.IsRecording() {
		t.Fatal("ratio 0 sampled a root span")
	}

	// A sampled remote parent, as an upstream service would send it.
	headers := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	_, child := tr.Start(tel.Extract(t.Context(), headers), "child")
	child.End()
	if !child.SpanContext().IsSampled() {
		t.Fatal("sampled parent not honoured")
	}
	// An unsampled remote parent stays unsampled.
	headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	_, dropped := tr.Start(tel.Extract(t.Context(), headers), "dropped")
	dropped.End()
	if dropped.SpanContext().IsSampled() {
		t.Fatal("unsampled parent was sampled")
	}

	spans := waitSpans(t, tel, exp, "child", 1)
	if got := len(exp.GetSpans()); got != 1 {
		t.Fatalf("exported %d spans, want only the child", got)
	}
	if spans[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("child trace id %s", spans[0].SpanContext.TraceID())
	}
}

func TestTracingOffWithoutEndpoint(t *testing.T) {
	t.Parallel()
	tel, err := telemetry.New(t.Context(), telemetry.DefaultConfig("quiet"), nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	_, span := tel.Tracer("test").Start(t.Context(), "work")
	if span.IsRecording() {
		t.Fatal("span recorded with tracing off")
	}
	span.End()
	// Incoming context still flows through, so traces are not cut here.
	headers := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	out := map[string]string{}
	tel.Inject(tel.Extract(t.Context(), headers), out)
	if out["traceparent"] != headers["traceparent"] {
		t.Fatalf("traceparent %q, want %q", out["traceparent"], headers["traceparent"])
	}
	if err := tel.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}
