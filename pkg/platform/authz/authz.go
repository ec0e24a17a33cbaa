// Package authz is the authorization stage of the server chain: an Authorizer decides whether the caller
// in ctx may call a method. Each service declares who may call its methods as Rules next to its RPC code;
// NewPolicy turns them into a deny-by-default Policy over the callers' mTLS identities, naming the
// customer-facing edge through configuration (Edge). A policy file (ParsePolicy) can replace the rules.
package authz

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// Authorizer decides whether the caller identified by ctx (peer, TLS state, metadata) may call fullMethod.
// A nil error allows the call; a gRPC status error is returned as is; any other error becomes
// PERMISSION_DENIED without its text.
type Authorizer interface {
	Authorize(ctx context.Context, fullMethod string) error
}

// Func adapts a function to Authorizer.
type Func func(ctx context.Context, fullMethod string) error

// Authorize calls f.
func (f Func) Authorize(ctx context.Context, fullMethod string) error { return f(ctx, fullMethod) }

// AllowAll allows every call. It is the default in development only.
type AllowAll struct{}

// Authorize allows the call.
func (AllowAll) Authorize(context.Context, string) error { return nil }

// Deny is the status a refusal maps to: the status the authorizer chose, or PERMISSION_DENIED without
// details (the policy is not described to the caller).
func Deny(err error) error {
	if rpcerr.IsStatus(err) {
		return err
	}
	return status.Error(codes.PermissionDenied, "permission denied")
}

// UnaryServerInterceptor asks a before every unary call.
func UnaryServerInterceptor(a Authorizer) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := a.Authorize(ctx, info.FullMethod); err != nil {
			return nil, Deny(err)
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor asks a before every stream starts.
func StreamServerInterceptor(a Authorizer) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := a.Authorize(ss.Context(), info.FullMethod); err != nil {
			return Deny(err)
		}
		return handler(srv, ss)
	}
}
