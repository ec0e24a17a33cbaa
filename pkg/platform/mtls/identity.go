// Package mtls serves hot-reloadable mutual-TLS configuration for shopmesh
// services and checks SPIFFE-style peer identities (spiffe://shopmesh.local/<service>).
package mtls

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// TrustDomain is the SPIFFE trust domain every shopmesh identity lives in.
const TrustDomain = "shopmesh.local"

// ErrIdentity reports a certificate that does not carry exactly one valid
// shopmesh SPIFFE URI SAN.
var ErrIdentity = errors.New("mtls: invalid shopmesh identity")

var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// SPIFFEID returns the URI identity of service.
func SPIFFEID(service string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/" + service}
}

// ServiceFromCert returns the service named by cert's single shopmesh SPIFFE
// URI SAN. Certificates with zero or several URI SANs are refused so that one
// certificate can never speak for two services.
func ServiceFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrIdentity)
	}
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("%w: %d URI SANs, want 1", ErrIdentity, len(cert.URIs))
	}
	return serviceFromURI(cert.URIs[0])
}

func serviceFromURI(u *url.URL) (string, error) {
	if u.Scheme != "spiffe" || u.Host != TrustDomain || u.User != nil || u.Port() != "" ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.RawPath != "" {
		return "", fmt.Errorf("%w: %q", ErrIdentity, u.String())
	}
	if len(u.Path) < 2 || u.Path[0] != '/' || !serviceName.MatchString(u.Path[1:]) {
		return "", fmt.Errorf("%w: %q", ErrIdentity, u.String())
	}
	return u.Path[1:], nil
}

// PeerIdentity returns the shopmesh service of the TLS peer of an RPC, as
// seen by a server handler or interceptor.
func PeerIdentity(ctx context.Context) (service string, ok bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "", false
	}
	svc, err := ServiceFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return "", false
	}
	return svc, true
}

// ValidService reports whether name can be a shopmesh service identity:
// lowercase letters, digits and inner dashes, at most 63 characters.
func ValidService(name string) bool { return serviceName.MatchString(name) }
