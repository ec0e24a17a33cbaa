package dns_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/dns"
)

func TestResolvesThroughDNS(t *testing.T) {
	t.Parallel()
	echo := &testserver.Echo{}
	addr := testserver.Start(t, grpc.NewServer(), echo)
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)

	r, err := dns.New(dns.Config{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	target, b, err := r.Resolve("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if b == nil || b.Scheme() != "dns" || target != "dns:///localhost:"+p {
		t.Fatalf("target=%q builder=%v", target, b)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := testgrpc.NewTestServiceClient(conn).UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if echo.Calls.Load() != 1 {
		t.Fatalf("calls = %d", echo.Calls.Load())
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []dns.Config{{Port: 0}, {Port: 70000}, {Port: 1, Suffix: "a/b"}, {Port: 1, Refresh: -1},
		{Port: 1, MinInterval: -1}, {Port: 1, Server: "8.8.8.8"}} {
		if _, err := dns.New(c); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}
