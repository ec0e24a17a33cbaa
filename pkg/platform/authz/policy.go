package authz

import (
	"bytes"
	"context"
	_ "embed" // the built-in policy
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

//go:embed default_policy.yaml
var defaultPolicy []byte

// Policy is a deny-by-default table from gRPC methods to the SPIFFE identities allowed to call them.
// Keys are full method names ("/shopmesh.order.v1.OrderService/GetOrder") or a whole service
// ("/shopmesh.order.v1.OrderService/*"); a call is allowed when any matching key lists the caller.
// Health checks are always allowed, reflection only when AllowReflection is set (the dev profile).
type Policy struct {
	methods map[string][]string // key → sorted SPIFFE ids
	// AllowReflection lets any authenticated caller use server reflection.
	AllowReflection bool
}

type policyFile struct {
	Methods map[string][]string `yaml:"methods"`
}

// ParsePolicy parses a YAML policy document (strict: unknown fields and bad keys or ids are errors).
func ParsePolicy(doc []byte) (*Policy, error) {
	var f policyFile
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("authz policy: %w", err)
	}
	p := &Policy{methods: map[string][]string{}}
	var errs []error
	for key, ids := range f.Methods {
		if err := validKey(key); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, id := range ids {
			if err := validID(id); err != nil {
				errs = append(errs, fmt.Errorf("authz policy: %s: %w", key, err))
			}
		}
		sorted := slices.Clone(ids)
		slices.Sort(sorted)
		p.methods[key] = slices.Compact(sorted)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func validKey(key string) error {
	parts := strings.Split(key, "/")
	if len(parts) != 3 || parts[0] != "" || parts[1] == "" || parts[2] == "" ||
		strings.Contains(parts[1], "*") || (strings.Contains(parts[2], "*") && parts[2] != "*") {
		return fmt.Errorf("authz policy: bad method %q (want /pkg.Service/Method or /pkg.Service/*)", key)
	}
	return nil
}

func validID(id string) error {
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "spiffe" || u.Host != mtls.TrustDomain || !mtls.ValidService(strings.TrimPrefix(u.Path, "/")) ||
		u.String() != mtls.SPIFFEID(strings.TrimPrefix(u.Path, "/")).String() {
		return fmt.Errorf("bad identity %q (want spiffe://%s/<service>)", id, mtls.TrustDomain)
	}
	return nil
}

// DefaultPolicy returns the built-in shopmesh policy (default_policy.yaml).
func DefaultPolicy() *Policy {
	p, err := ParsePolicy(defaultPolicy)
	if err != nil {
		panic("authz: built-in policy: " + err.Error()) // covered by tests; cannot happen at run time
	}
	return p
}

// LoadPolicy reads the policy file at path, or returns DefaultPolicy when path is "".
func LoadPolicy(path string) (*Policy, error) {
	if path == "" {
		return DefaultPolicy(), nil
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authz policy: %w", err)
	}
	return ParsePolicy(doc)
}

// Allowed reports whether the identity (a SPIFFE id) may call fullMethod.
func (p *Policy) Allowed(identity, fullMethod string) bool {
	if alwaysAllowed(fullMethod) || (p.AllowReflection && isReflection(fullMethod)) {
		return true
	}
	if _, ok := p.methods[fullMethod]; ok && slices.Contains(p.methods[fullMethod], identity) {
		return true
	}
	if i := strings.LastIndexByte(fullMethod, '/'); i > 0 {
		return slices.Contains(p.methods[fullMethod[:i]+"/*"], identity)
	}
	return false
}

// Rules returns the policy's keys and allowed identities (sorted), for documentation and tests.
func (p *Policy) Rules() map[string][]string {
	out := make(map[string][]string, len(p.methods))
	for k, v := range p.methods {
		out[k] = slices.Clone(v)
	}
	return out
}

// Keys returns the policy's method keys, sorted.
func (p *Policy) Keys() []string {
	keys := make([]string, 0, len(p.methods))
	for k := range p.methods {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func alwaysAllowed(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}

func isReflection(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// Authorize implements Authorizer: the caller's identity is the SPIFFE id of its verified TLS
// certificate (mtls verifies it on every handshake, resumed ones included). A call without one is
// refused, except health checks.
func (p *Policy) Authorize(ctx context.Context, fullMethod string) error {
	if alwaysAllowed(fullMethod) {
		return nil
	}
	svc, ok := mtls.PeerIdentity(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "permission denied: no verified peer identity")
	}
	if !p.Allowed(mtls.SPIFFEID(svc).String(), fullMethod) {
		return status.Errorf(codes.PermissionDenied, "permission denied: %s may not call %s", svc, fullMethod)
	}
	return nil
}

// Unenforced allows every call and logs once that the policy is not enforced: the platform uses it when
// TLS is off (dev and test only), since without certificates there is no identity to check.
func Unenforced(logger *slog.Logger) Authorizer {
	var once sync.Once
	return Func(func(context.Context, string) error {
		once.Do(func() {
			logger.Warn("authorization policy NOT enforced: TLS is off, callers have no identity")
		})
		return nil
	})
}
