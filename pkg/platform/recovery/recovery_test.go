package recovery_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/recovery"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPanicBecomesInternalAndServerKeepsServing(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(logger)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(logger)),
	)
	echo := &testserver.Echo{}
	echo.Unary = func(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		if req.GetFillUsername() {
			panic("secret: db password is hunter2")
		}
		return &testpb.SimpleResponse{}, nil
	}
	echo.BeforeStreamSend = func(context.Context, int) error { panic("stream boom") }
	client := testserver.Client(t, testserver.Start(t, srv, echo))
	ctx := t.Context()

	_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{FillUsername: true})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panic: code = %v, want INTERNAL", status.Code(err))
	}
	if msg := status.Convert(err).Message(); msg != recovery.Message {
		t.Errorf("message = %q, want the generic %q", msg, recovery.Message)
	}
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("next call after a panic: %v", err)
	}

	stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Internal {
		t.Fatalf("stream panic: code = %v, want INTERNAL", status.Code(err))
	}
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("next call after a stream panic: %v", err)
	}

	out := logs.String()
	if !strings.Contains(out, "handler panic") || !strings.Contains(out, "goroutine") {
		t.Errorf("panic and stack should be logged, got:\n%s", out)
	}
}
