package platform_test

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// The two benchmarks run the same echo over loopback in one process; the difference is the cost of the
// platform: the server chain (recovery, deadline, validation, limits, authz, fault) and the client chain
// (deadline, breaker, service config with retries, health-checked round robin).

var payload = &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 64)}}

func BenchmarkUnaryBare(b *testing.B) {
	addr := testserver.Start(b, grpc.NewServer(), &testserver.Echo{})
	runBench(b, testserver.Client(b, addr))
}

// BenchmarkUnaryBareObserved is bare grpc-go plus only the observability the platform adds (the
// telemetry stats handlers, tracing off, and the retry-counting interceptor): it isolates their cost
// from the interceptor chain's.
func BenchmarkUnaryBareObserved(b *testing.B) {
	tel, err := telemetry.New(context.Background(), telemetry.DefaultConfig("bench"), nil)
	if err != nil {
		b.Fatal(err)
	}
	addr := testserver.Start(b, grpc.NewServer(grpc.StatsHandler(tel.ServerStatsHandler())), &testserver.Echo{})
	unary, stream := tel.ClientInterceptors()
	runBench(b, testserver.Client(b, addr, grpc.WithStatsHandler(tel.ClientStatsHandler()),
		grpc.WithUnaryInterceptor(unary), grpc.WithStreamInterceptor(stream)))
}

func BenchmarkUnaryPlatform(b *testing.B) {
	srv := echoServer(b, testConfig("echo"), &testserver.Echo{})
	c, _ := client(b, testConfig("caller"), []string{srv.addr})
	runBench(b, c)
}

// BenchmarkUnaryPlatformTraced is BenchmarkUnaryPlatform with tracing on in both processes at the
// given root sampling ratio (the server honours the client's decision), spans batched to an exporter
// that drops them: the cost of otelgrpc's spans and propagation on top of the chain.
func BenchmarkUnaryPlatformTraced(b *testing.B) {
	for _, ratio := range []float64{0.1, 1} {
		b.Run(fmt.Sprintf("sample=%g", ratio), func(b *testing.B) {
			cfg := testConfig("echo")
			cfg.Telemetry.SampleRatio = ratio
			srv := echoServer(b, cfg, &testserver.Echo{}, platform.WithSpanExporter(discard{}))
			ccfg := testConfig("caller")
			ccfg.Telemetry.SampleRatio = ratio
			c, _ := client(b, ccfg, []string{srv.addr}, platform.WithSpanExporter(discard{}))
			runBench(b, c)
		})
	}
}

// discard is a span exporter that drops everything, so the benchmark measures recording, not export.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

func runBench(b *testing.B, c testgrpc.TestServiceClient) {
	ctx := context.Background()
	if _, err := c.UnaryCall(ctx, payload); err != nil { // connect before timing
		b.Fatal(err)
	}
	b.Run("conc=1", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuPerOp(b)()
		for b.Loop() {
			if _, err := c.UnaryCall(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("conc=50", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
		defer cpuPerOp(b)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.UnaryCall(ctx, payload); err != nil {
					panic(fmt.Sprint("call: ", err))
				}
			}
		})
	})
}

// cpuPerOp reports the process's CPU time (user+system, client and server and GC) per call as
// cpu-ns/op: on a shared machine wall time per op mostly measures the neighbours, CPU time the cost.
func cpuPerOp(b *testing.B) func() {
	before := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/op")
		}
	}
}

func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
