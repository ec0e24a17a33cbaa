package authz_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

func TestAuthorizerDecides(t *testing.T) {
	t.Parallel()
	policy := authz.Func(func(_ context.Context, method string) error {
		switch method {
		case "/grpc.testing.TestService/EmptyCall":
			return nil
		case "/grpc.testing.TestService/UnaryCall":
			return errors.New("caller order may not call this: internal detail")
		}
		return status.Error(codes.Unauthenticated, "no identity")
	})
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(authz.UnaryServerInterceptor(policy)),
		grpc.ChainStreamInterceptor(authz.StreamServerInterceptor(policy)),
	)
	echo := &testserver.Echo{}
	client := testserver.Client(t, testserver.Start(t, srv, echo))

	if _, err := client.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Errorf("allowed call: %v", err)
	}
	_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "permission denied" {
		t.Errorf("denied call: %v, want PERMISSION_DENIED without details", err)
	}
	if echo.Calls.Load() != 0 {
		t.Error("handler ran for a denied call")
	}
	stream, err := client.FullDuplexCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("stream: %v, want the authorizer's own UNAUTHENTICATED", err)
	}
}

func TestAllowAll(t *testing.T) {
	t.Parallel()
	if err := (authz.AllowAll{}).Authorize(t.Context(), "/x.Y/Z"); err != nil {
		t.Error(err)
	}
}
