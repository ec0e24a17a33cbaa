package deadline_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/deadline"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

// recorder is a server whose handler records the deadline it sees.
func recorder(t *testing.T, p deadline.Policy) (testpb.TestServiceClient, <-chan time.Time) {
	t.Helper()
	seen := make(chan time.Time, 10)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(deadline.UnaryServerInterceptor(p)))
	echo := &testserver.Echo{Unary: func(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			dl = time.Time{}
		}
		seen <- dl
		return &testpb.SimpleResponse{}, nil
	}}
	return testserver.Client(t, testserver.Start(t, srv, echo)), seen
}

func TestServerDefaultWhenCallerSentNone(t *testing.T) {
	t.Parallel()
	client, seen := recorder(t, deadline.Policy{Default: 3 * time.Second, Max: time.Minute})
	before := time.Now()
	if _, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	dl := <-seen
	if dl.IsZero() {
		t.Fatal("handler saw no deadline")
	}
	if dl.After(time.Now().Add(3*time.Second)) || dl.Before(before) {
		t.Errorf("deadline %v is not the 3s default", time.Until(dl))
	}
}

func TestServerClampsLongDeadline(t *testing.T) {
	t.Parallel()
	client, seen := recorder(t, deadline.Policy{Default: time.Second, Max: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if dl := <-seen; dl.After(time.Now().Add(5 * time.Second)) {
		t.Errorf("deadline %v should be clamped to 5s", time.Until(dl))
	}
}

func TestServerKeepsShorterCallerDeadline(t *testing.T) {
	t.Parallel()
	client, seen := recorder(t, deadline.Policy{Default: time.Minute, Max: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	callerDL, _ := ctx.Deadline()
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	// The wire carries a timeout, so the server's deadline may trail the caller's by the transit time.
	if dl := <-seen; dl.After(callerDL.Add(time.Second)) {
		t.Errorf("server deadline is %v after the caller's; the caller's 2s must win over the 1m default", dl.Sub(callerDL))
	}
}

// TestDownstreamSeesRemainingDeadline chains caller → front → back. front has a long default and its
// outgoing client a long default too; back must still see the caller's deadline, not a fresh budget.
func TestDownstreamSeesRemainingDeadline(t *testing.T) {
	t.Parallel()
	backSrv := grpc.NewServer(grpc.ChainUnaryInterceptor(deadline.UnaryServerInterceptor(deadline.Policy{Default: time.Hour, Max: time.Hour})))
	seen := make(chan time.Time, 1)
	backAddr := testserver.Start(t, backSrv, &testserver.Echo{Unary: func(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		dl, _ := ctx.Deadline()
		seen <- dl
		return &testpb.SimpleResponse{}, nil
	}})
	toBack := testserver.Client(t, backAddr, grpc.WithChainUnaryInterceptor(deadline.UnaryClientInterceptor(time.Hour)))

	frontSrv := grpc.NewServer(grpc.ChainUnaryInterceptor(deadline.UnaryServerInterceptor(deadline.Policy{Default: time.Hour, Max: time.Hour})))
	front := testserver.Client(t, testserver.Start(t, frontSrv, &testserver.Echo{
		Unary: func(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
			return toBack.UnaryCall(ctx, req)
		},
	}))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	callerDL, _ := ctx.Deadline()
	if _, err := front.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	dl := <-seen
	if dl.IsZero() || dl.After(callerDL.Add(time.Second)) {
		t.Errorf("back's deadline is %v after the caller's (want about 0): it got a fresh budget", dl.Sub(callerDL))
	}
}

func TestClientDefaultOnlyWhenNone(t *testing.T) {
	t.Parallel()
	srv := grpc.NewServer()
	got := make(chan time.Time, 2)
	addr := testserver.Start(t, srv, &testserver.Echo{Unary: func(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		dl, _ := ctx.Deadline()
		got <- dl
		return &testpb.SimpleResponse{}, nil
	}})
	c := testserver.Client(t, addr, grpc.WithChainUnaryInterceptor(deadline.UnaryClientInterceptor(2*time.Second)))

	if _, err := c.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if dl := <-got; dl.IsZero() || dl.After(time.Now().Add(2*time.Second)) {
		t.Errorf("call without deadline: server saw %v, want the 2s default", dl)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if dl := <-got; dl.Before(time.Now().Add(time.Minute)) {
		t.Errorf("caller's own 1h deadline was replaced: %v left", time.Until(dl))
	}
}

func TestPolicyApply(t *testing.T) {
	t.Parallel()
	ctx, cancel := deadline.Policy{}.Apply(context.Background())
	defer cancel()
	if _, ok := ctx.Deadline(); ok {
		t.Error("an empty policy adds no deadline")
	}
	ctx, cancel = deadline.Policy{Max: time.Second}.Apply(context.Background())
	defer cancel()
	if _, ok := ctx.Deadline(); !ok {
		t.Error("Max alone still bounds calls without a deadline")
	}
}
