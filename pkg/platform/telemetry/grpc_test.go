package telemetry_test

import (
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// seenService records the trace context and baggage its handler's context carries.
type seenService struct {
	testpb.UnimplementedTestServiceServer
	seen chan context.Context
}

func (s seenService) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.seen <- ctx
	return &testpb.SimpleResponse{}, nil
}

// TestServerPassesCallerTraceWithTracingOff: with tracing off the server handler still sees the caller's
// trace context and baggage (so its own outgoing calls continue the trace), and a call without trace
// headers gets none.
func TestServerPassesCallerTraceWithTracingOff(t *testing.T) {
	t.Parallel()
	tel, err := telemetry.New(t.Context(), telemetry.DefaultConfig("quiet"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := seenService{seen: make(chan context.Context, 1)}
	srv := grpc.NewServer(grpc.StatsHandler(tel.ServerStatsHandler()))
	testpb.RegisterTestServiceServer(srv, svc)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := testpb.NewTestServiceClient(conn)

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "traceparent", tp, "baggage", "tenant=acme")
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	got := <-svc.seen
	sc := trace.SpanContextFromContext(got)
	if !sc.IsRemote() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !sc.IsSampled() {
		t.Errorf("handler span context = %+v, want the caller's", sc)
	}
	if v := baggage.FromContext(got).Member("tenant").Value(); v != "acme" {
		t.Errorf("baggage tenant = %q, want acme", v)
	}
	out := map[string]string{}
	tel.Inject(got, out)
	if out["traceparent"] != tp {
		t.Errorf("re-injected traceparent %q, want %q", out["traceparent"], tp)
	}

	if _, err := c.UnaryCall(callCtx(t), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if sc := trace.SpanContextFromContext(<-svc.seen); sc.IsValid() {
		t.Errorf("call without trace headers: handler span context %+v, want none", sc)
	}
}
