package discovery_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

func TestStaticResolvesAndUpdates(t *testing.T) {
	t.Parallel()
	a, b := &testserver.Echo{}, &testserver.Echo{}
	addrA := testserver.Start(t, grpc.NewServer(), a)
	addrB := testserver.Start(t, grpc.NewServer(), b)

	static := discovery.NewStatic(map[string][]string{"echo": {addrA}})
	target, builder, err := static.Resolve("echo")
	if err != nil {
		t.Fatal(err)
	}
	if target != "static:///echo" {
		t.Errorf("target = %q", target)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := testgrpc.NewTestServiceClient(conn)
	for range 5 {
		if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if a.Calls.Load() != 5 || b.Calls.Load() != 0 {
		t.Fatalf("calls a=%d b=%d", a.Calls.Load(), b.Calls.Load())
	}

	if err := static.Update("echo", []string{addrB}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("connection never moved to the updated address")
		}
		if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
}

// An update with an address that is not host:port is refused and changes nothing: connections dialed
// afterwards still reach the addresses the name had.
func TestStaticUpdateRejectsBadAddress(t *testing.T) {
	t.Parallel()
	a := &testserver.Echo{}
	addrA := testserver.Start(t, grpc.NewServer(), a)
	static := discovery.NewStatic(map[string][]string{"echo": {addrA}})
	if err := static.Update("echo", []string{"no-port"}); err == nil || !strings.Contains(err.Error(), "no-port") {
		t.Fatalf("Update with a bad address: err = %v, want it named", err)
	}
	target, builder, err := static.Resolve("echo")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := testgrpc.NewTestServiceClient(conn).UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("call after a refused update: %v", err)
	}
	if a.Calls.Load() != 1 {
		t.Fatalf("calls at the old address = %d, want 1", a.Calls.Load())
	}
}

func TestStaticUnknownTarget(t *testing.T) {
	t.Parallel()
	_, _, err := discovery.NewStatic(nil).Resolve("payment")
	if err == nil || !strings.Contains(err.Error(), "payment") {
		t.Errorf("err = %v", err)
	}
}
