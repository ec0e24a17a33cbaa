package authz

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// CustomerHeader is the metadata key the gateway puts the authenticated customer id in.
const CustomerHeader = "x-customer-id"

// EdgeService is the only identity trusted to say which customer a call acts for: the gateway, which
// authenticated the customer's token.
const EdgeService = "gateway"

// CustomerFrom returns the end customer a call acts for, from the x-customer-id metadata. It returns ""
// when the call carries none (a service acting for itself). The metadata is believed only from the
// gateway's certificate; over a plaintext connection, which only a server with TLS off accepts (dev and
// test), it is believed from anyone. Metadata from another identity, or several values, is
// PERMISSION_DENIED.
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
		if svc, ok := mtls.PeerIdentity(ctx); !ok || svc != EdgeService {
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
