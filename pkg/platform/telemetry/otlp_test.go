package telemetry_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// fakeCollector is an OTLP/gRPC trace receiver that keeps what it is sent.
type fakeCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu   sync.Mutex
	reqs []*collectortrace.ExportTraceServiceRequest
}

func (f *fakeCollector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (f *fakeCollector) received() []*collectortrace.ExportTraceServiceRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*collectortrace.ExportTraceServiceRequest(nil), f.reqs...)
}

// TestOTLPExportCarriesResource checks the real OTLP exporter path (no
// in-memory exporter): Shutdown flushes the span with the service's resource.
func TestOTLPExportCarriesResource(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	collector := &fakeCollector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, collector)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	cfg := telemetry.DefaultConfig("otlp-test")
	cfg.Version, cfg.InstanceID, cfg.Environment = "v1.2.3", "pod-7", "staging"
	cfg.OTLPEndpoint, cfg.Insecure = ln.Addr().String(), true
	cfg.ExportTimeout = 5 * time.Second
	tel, err := telemetry.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	_, span := tel.Tracer("test").Start(t.Context(), "exported")
	span.End()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	reqs := collector.received()
	if len(reqs) == 0 {
		t.Fatal("collector received nothing after Shutdown")
	}
	rs := reqs[0].GetResourceSpans()[0]
	attrs := map[string]string{}
	for _, kv := range rs.GetResource().GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	want := map[string]string{
		"service.name":                "otlp-test",
		"service.version":             "v1.2.3",
		"service.instance.id":         "pod-7",
		"deployment.environment":      "staging",
		"deployment.environment.name": "staging",
	}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("resource %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
	if got := rs.GetScopeSpans()[0].GetSpans()[0].GetName(); got != "exported" {
		t.Fatalf("span name %q", got)
	}
}

// TestOTLPFirstExportReachesLateCollector is the compose start-up race: the service exports its first
// batch while the collector is not listening yet, and the collector comes up well within the export
// timeout. The batch must arrive, not be dropped after one refused connection.
func TestOTLPFirstExportReachesLateCollector(t *testing.T) {
	t.Parallel()
	// Take a free port and free it again: nothing listens there at the first export.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	cfg := telemetry.DefaultConfig("otlp-late-collector")
	cfg.OTLPEndpoint, cfg.Insecure = addr, true
	// Shorter than the exporter's first retry (2.5 s at the earliest): the batch only gets through if
	// the export waits for the connection rather than failing at the refused one.
	cfg.ExportTimeout = 2 * time.Second
	tel, err := telemetry.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(ctx)
	})
	_, span := tel.Tracer("test").Start(t.Context(), "first-after-start")
	span.End()

	flushed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		flushed <- tel.ForceFlush(ctx)
	}()

	// The first connection attempt is refused; then the collector starts on that address.
	time.Sleep(300 * time.Millisecond)
	late, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	collector := &fakeCollector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, collector)
	go func() { _ = srv.Serve(late) }()
	t.Cleanup(srv.Stop)

	if err := <-flushed; err != nil {
		t.Fatalf("ForceFlush: %v", err)
	}
	var names []string
	for _, req := range collector.received() {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
	}
	if len(names) != 1 || names[0] != "first-after-start" {
		t.Fatalf("collector received spans %q, want the first span [first-after-start]", names)
	}
}
