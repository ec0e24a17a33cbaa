package authz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// Rules is the authorization policy a service declares next to its RPC code: a full method
// ("/pkg.Service/Method") or a whole service ("/pkg.Service/*") → the callers allowed, by service name
// ("order") or Edge. Every method of the service should have a key (a method without one is denied to
// everyone; an empty list says so on purpose). NewPolicy turns Rules into a Policy.
type Rules map[string][]string

// Edge stands in Rules for the customer-facing entry point (the gateway): NewPolicy replaces it by the
// edge identity the configuration names (Config.AuthzEdge), so no service hard-codes which service that
// is. A service actually named "edge" cannot be named in Rules other than as the configured edge.
const Edge = "edge"

// Policy is a deny-by-default table from gRPC methods to the SPIFFE identities allowed to call them.
// Keys are full method names ("/pkg.Service/Method") or a whole service ("/pkg.Service/*"); a call is
// allowed when any matching key lists the caller. Health checks are always allowed, reflection only when
// AllowReflection is set (the dev profile).
type Policy struct {
	methods map[string][]string // key → sorted SPIFFE ids
	// AllowReflection lets any authenticated caller use server reflection.
	AllowReflection bool
}

// NewPolicy validates rules (keys, caller names) and resolves each caller to its SPIFFE id
// (spiffe://<trust domain>/<name>), Edge to the id of the service named edge. Every problem is reported,
// each naming its key. Empty rules are refused: a service that takes no calls states it with a key and
// an empty list.
func NewPolicy(rules Rules, edge string) (*Policy, error) {
	if !mtls.ValidService(edge) {
		return nil, fmt.Errorf("authz policy: edge %q is not a service name (lowercase letters, digits, inner dashes)", edge)
	}
	if len(rules) == 0 {
		return nil, errors.New("authz policy: no rules (every call would be denied)")
	}
	p := &Policy{methods: make(map[string][]string, len(rules))}
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(rules)) {
		if err := validKey(key); err != nil {
			errs = append(errs, err)
			continue
		}
		ids := make([]string, 0, len(rules[key]))
		for _, name := range rules[key] {
			switch {
			case name == Edge:
				name = edge
			case !mtls.ValidService(name):
				errs = append(errs, fmt.Errorf("authz policy: %s: bad caller %q (want a service name or authz.Edge)", key, name))
				continue
			}
			ids = append(ids, mtls.SPIFFEID(name).String())
		}
		slices.Sort(ids)
		p.methods[key] = slices.Compact(ids)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

type policyFile struct {
	Methods map[string][]string `yaml:"methods"`
}

// ParsePolicy parses a YAML policy document (strict: unknown fields and bad keys or ids are errors):
//
//	methods:
//	  /pkg.Service/Method: [spiffe://shopmesh.local/caller]
//	  /pkg.Service/*:      [spiffe://shopmesh.local/other]
//
// It is the file override of a service's Rules (Config.AuthzPolicyFile), which it replaces entirely;
// callers are SPIFFE ids, written out.
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

// LoadPolicy reads and parses the policy file at path (see ParsePolicy).
func LoadPolicy(path string) (*Policy, error) {
	if path == "" {
		return nil, errors.New("authz policy: no file named")
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
