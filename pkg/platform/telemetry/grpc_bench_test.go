package telemetry_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// BenchmarkStatsHandler is one unary call as grpc drives a stats handler (TagRPC, Begin, End), without
// the network, so the handler's own CPU and allocations are visible. "off" has no exporter (tracing off:
// only the trace context is propagated), "traced" samples 10% of roots like prod; "traceparent" calls
// arrive with a sampled-out W3C parent.
func BenchmarkStatsHandler(b *testing.B) {
	off, err := telemetry.New(context.Background(), telemetry.DefaultConfig("bench"), nil)
	if err != nil {
		b.Fatal(err)
	}
	traced := func(b *testing.B) *telemetry.Telemetry {
		cfg := telemetry.DefaultConfig("bench")
		cfg.SampleRatio = 0.1
		tel, err := telemetry.New(context.Background(), cfg, slog.New(slog.DiscardHandler),
			telemetry.WithSpanExporter(discardExporter{}))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
		return tel
	}
	plainMD := metadata.Pairs("user-agent", "grpc-go", "content-type", "application/grpc")
	parentMD := metadata.Pairs("user-agent", "grpc-go", "content-type", "application/grpc",
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
	plain := metadata.NewIncomingContext(context.Background(), plainMD)
	parent := metadata.NewIncomingContext(context.Background(), parentMD)
	info := &stats.RPCTagInfo{FullMethodName: "/grpc.testing.TestService/UnaryCall"}
	// run drives the events the handler acts on, as grpc does: TagRPC, InHeader (server: the request
	// headers, copied by grpc), Begin, End.
	run := func(b *testing.B, h stats.Handler, base context.Context, client bool) {
		md, _ := metadata.FromIncomingContext(base)
		b.ReportAllocs()
		for b.Loop() {
			ctx := h.TagRPC(base, info)
			if !client {
				h.HandleRPC(ctx, &stats.InHeader{Header: md})
			}
			now := time.Now()
			h.HandleRPC(ctx, &stats.Begin{Client: client, BeginTime: now})
			h.HandleRPC(ctx, &stats.End{Client: client, BeginTime: now, EndTime: now})
		}
	}
	b.Run("server/off", func(b *testing.B) { run(b, off.ServerStatsHandler(), plain, false) })
	b.Run("server/off/traceparent", func(b *testing.B) { run(b, off.ServerStatsHandler(), parent, false) })
	b.Run("client/off", func(b *testing.B) { run(b, off.ClientStatsHandler(), context.Background(), true) })
	b.Run("server/traced", func(b *testing.B) { run(b, traced(b).ServerStatsHandler(), plain, false) })
	b.Run("server/traced/traceparent", func(b *testing.B) { run(b, traced(b).ServerStatsHandler(), parent, false) })
	b.Run("client/traced", func(b *testing.B) { run(b, traced(b).ClientStatsHandler(), context.Background(), true) })
	b.Run("server/off/error", func(b *testing.B) {
		h := off.ServerStatsHandler()
		b.ReportAllocs()
		err := errors.New("boom")
		for b.Loop() {
			ctx := h.TagRPC(plain, info)
			h.HandleRPC(ctx, &stats.InHeader{Header: plainMD})
			now := time.Now()
			h.HandleRPC(ctx, &stats.Begin{BeginTime: now})
			h.HandleRPC(ctx, &stats.End{BeginTime: now, EndTime: now, Error: err})
		}
	})
}

// discardExporter drops spans, so the benchmark measures recording, not export.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }
