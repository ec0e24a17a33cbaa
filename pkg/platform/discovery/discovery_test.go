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

	static.Update("echo", []string{addrB})
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

func TestStaticUnknownTarget(t *testing.T) {
	t.Parallel()
	_, _, err := discovery.NewStatic(nil).Resolve("payment")
	if err == nil || !strings.Contains(err.Error(), "payment") {
		t.Errorf("err = %v", err)
	}
}
