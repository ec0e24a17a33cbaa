package authz

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// CustomerHeader is the metadata key the edge (the gateway) puts the authenticated customer id in.
const CustomerHeader = "x-customer-id"

type edgeKey struct{}

// WithEdge returns ctx naming the edge service: the only identity CustomerFrom believes customer
// metadata from. The platform's TLS servers put the configured edge (Config.AuthzEdge) into every call's
// context (EdgeUnaryServerInterceptor, EdgeStreamServerInterceptor).
func WithEdge(ctx context.Context, edge string) context.Context {
	return context.WithValue(ctx, edgeKey{}, edge)
}

// EdgeFrom returns the edge service named in ctx by WithEdge.
func EdgeFrom(ctx context.Context) (string, bool) {
	edge, ok := ctx.Value(edgeKey{}).(string)
	return edge, ok && edge != ""
}

// EdgeUnaryServerInterceptor names edge in the context of every unary call (WithEdge).
func EdgeUnaryServerInterceptor(edge string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(WithEdge(ctx, edge), req)
	}
}

// EdgeStreamServerInterceptor names edge in the context of every stream (WithEdge).
func EdgeStreamServerInterceptor(edge string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &edgeStream{ServerStream: ss, ctx: WithEdge(ss.Context(), edge)})
	}
}

type edgeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *edgeStream) Context() context.Context { return s.ctx }

// CustomerFrom returns the end customer a call acts for, from the x-customer-id metadata. It returns ""
// when the call carries none (a service acting for itself). Over TLS the metadata is believed only from
// the certificate of the edge service named in ctx (WithEdge; the platform's servers name the configured
// Config.AuthzEdge); over a plaintext connection, which only a server with TLS off accepts (dev and
// test), it is believed from anyone. Metadata from another identity, over TLS without an edge named, or
// several values, is PERMISSION_DENIED.
func CustomerFrom(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(CustomerHeader)
	if len(vals) == 0 {
		return "", nil
	}
	if len(vals) > 1 || vals[0] == "" {
		return "", status.Error(codes.PermissionDenied, "permission denied: malformed customer metadata")
	}
	if tlsPeer(ctx) {
		edge, ok := EdgeFrom(ctx)
		if !ok {
			return "", status.Error(codes.PermissionDenied, "permission denied: customer metadata, but no edge identity is configured")
		}
		if svc, ok := mtls.PeerIdentity(ctx); !ok || svc != edge {
			return "", status.Error(codes.PermissionDenied, "permission denied: customer metadata from an untrusted caller")
		}
	}
	return vals[0], nil
}

func tlsPeer(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return false
	}
	_, isTLS := p.AuthInfo.(credentials.TLSInfo)
	return isTLS
}
