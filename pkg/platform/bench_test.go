package platform_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

// The two benchmarks run the same echo over loopback in one process; the difference is the cost of the
// platform: the server chain (recovery, deadline, validation, limits, authz, fault) and the client chain
// (deadline, breaker, service config with retries, health-checked round robin).

var payload = &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 64)}}

func BenchmarkUnaryBare(b *testing.B) {
	addr := testserver.Start(b, grpc.NewServer(), &testserver.Echo{})
	runBench(b, testserver.Client(b, addr))
}

func BenchmarkUnaryPlatform(b *testing.B) {
	srv := echoServer(b, testConfig("echo"), &testserver.Echo{})
	c, _ := client(b, testConfig("caller"), []string{srv.addr})
	runBench(b, c)
}

func runBench(b *testing.B, c testgrpc.TestServiceClient) {
	ctx := context.Background()
	if _, err := c.UnaryCall(ctx, payload); err != nil { // connect before timing
		b.Fatal(err)
	}
	b.Run("conc=1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.UnaryCall(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("conc=50", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.UnaryCall(ctx, payload); err != nil {
					panic(fmt.Sprint("call: ", err))
				}
			}
		})
	})
}
