// Package authz is the authorization stage of the server chain: an Authorizer decides whether the caller
// in ctx may call a method. Each service declares who may call its methods as Rules next to its RPC code;
// NewPolicy turns them into a deny-by-default Policy over the callers' mTLS identities, naming the
// customer-facing edge through configuration (Edge). A policy file (ParsePolicy) can replace the rules.
package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

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

// deniedMessage is the whole message of every PERMISSION_DENIED the authorization stage returns.
const deniedMessage = "permission denied"

// Deny is the status a refusal maps to: the status the authorizer chose, except that a PERMISSION_DENIED
// says only "permission denied" (its details kept): the authorizer's text names the caller, the method
// or the policy, which the caller is not told. Any other error becomes PERMISSION_DENIED too.
func Deny(err error) error {
	if !rpcerr.IsStatus(err) {
		return status.Error(codes.PermissionDenied, deniedMessage)
	}
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied || st.Message() == deniedMessage {
		return err
	}
	p := st.Proto()
	p.Message = deniedMessage
	return status.ErrorProto(p)
}

// RequestIDKey is the ErrorInfo metadata key of a refusal's request id (see Refuse).
const RequestIDKey = "request_id"

// Refuse is Deny for a call being refused: the detail of err (who may not call what, and why) goes to
// log under a request id, the call's trace id or else a fresh random one, and the caller gets Deny's
// status with that id in its ErrorInfo metadata (RequestIDKey; an ErrorInfo with reason FORBIDDEN or
// UNAUTHENTICATED is added when the status has none), so an operator can find the detail the caller
// is not told. log nil logs nothing.
func Refuse(ctx context.Context, log *slog.Logger, fullMethod string, err error) error {
	id := requestID(ctx)
	if log != nil {
		log.InfoContext(ctx, "call refused", "method", fullMethod, RequestIDKey, id, "err", err)
	}
	return withRequestID(Deny(err), id)
}

func requestID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// withRequestID puts id into the ErrorInfo metadata of the status err.
func withRequestID(err error, id string) error {
	p := status.Convert(err).Proto()
	found := false
	for i, d := range p.Details {
		info := &errdetails.ErrorInfo{}
		if !d.MessageIs(info) || d.UnmarshalTo(info) != nil {
			continue
		}
		if info.Metadata == nil {
			info.Metadata = map[string]string{}
		}
		info.Metadata[RequestIDKey] = id
		if a, aerr := anypb.New(info); aerr == nil {
			p.Details[i], found = a, true
		}
		break
	}
	if !found {
		reason := "FORBIDDEN"
		if codes.Code(p.Code) == codes.Unauthenticated {
			reason = "UNAUTHENTICATED"
		}
		if codes.Code(p.Code) == codes.PermissionDenied || codes.Code(p.Code) == codes.Unauthenticated {
			info := &errdetails.ErrorInfo{Reason: reason, Domain: rpcerr.Domain, Metadata: map[string]string{RequestIDKey: id}}
			if a, aerr := anypb.New(info); aerr == nil {
				p.Details = append(p.Details, a)
			}
		}
	}
	return status.ErrorProto(p)
}

// UnaryServerInterceptor asks a before every unary call; a refusal is logged to log (see Refuse).
func UnaryServerInterceptor(a Authorizer, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := a.Authorize(ctx, info.FullMethod); err != nil {
			return nil, Refuse(ctx, log, info.FullMethod, err)
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor asks a before every stream starts; a refusal is logged to log (see Refuse).
func StreamServerInterceptor(a Authorizer, log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := a.Authorize(ss.Context(), info.FullMethod); err != nil {
			return Refuse(ss.Context(), log, info.FullMethod, err)
		}
		return handler(srv, ss)
	}
}
