// Package discovery is the seam between services and the way they find each other. A Resolver turns a
// logical target name ("inventory") into a gRPC target and the resolver.Builder that understands it; a
// Registry announces this instance. Static, config-driven implementations live here; a registry such as
// Nacos implements the same interfaces later without touching the services.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/resolver"
)

// Resolver maps a logical target name to a gRPC dial target and the builder for its scheme. The builder is
// passed to grpc.WithResolvers, so nothing is registered globally.
type Resolver interface {
	Resolve(name string) (target string, builder resolver.Builder, err error)
}

// Instance is one running copy of a service, as announced to a Registry.
type Instance struct {
	Service  string
	Addr     string
	Metadata map[string]string
}

// Registry announces and withdraws instances. The platform registers after the server starts listening
// and deregisters first thing on shutdown, before draining.
type Registry interface {
	Register(ctx context.Context, in Instance) error
	Deregister(ctx context.Context, in Instance) error
}

// StaticScheme is the URI scheme of targets served by Static.
const StaticScheme = "static"

// Static resolves names to fixed address lists ("static:///inventory"). Addresses can be replaced with
// Update, which pushes the new list to every connection already dialed.
type Static struct {
	mu      sync.Mutex
	targets map[string][]string
	conns   map[string][]*staticResolver
}

var _ Resolver = (*Static)(nil)

// NewStatic returns a Static resolver for the given name → "host:port" addresses.
func NewStatic(targets map[string][]string) *Static {
	s := &Static{targets: map[string][]string{}, conns: map[string][]*staticResolver{}}
	for name, addrs := range targets {
		s.targets[name] = slices.Clone(addrs)
	}
	return s
}

// Resolve returns "static:///name" and the builder serving it.
func (s *Static) Resolve(name string) (string, resolver.Builder, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs, ok := s.targets[name]
	if !ok || len(addrs) == 0 {
		return "", nil, fmt.Errorf("resolve %q: no static addresses configured", name)
	}
	return StaticScheme + ":///" + name, staticBuilder{s}, nil
}

// Update replaces the addresses of name and informs the connections using it. A list with an address
// that is not "host:port" is refused as a whole: name keeps its addresses.
func (s *Static) Update(name string, addrs []string) error {
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("static resolver: update %q: address %q: %w", name, a, err)
		}
	}
	s.mu.Lock()
	s.targets[name] = slices.Clone(addrs)
	rs := slices.Clone(s.conns[name])
	s.mu.Unlock()
	var errs []error
	for _, r := range rs {
		errs = append(errs, r.push(addrs))
	}
	return errors.Join(errs...)
}

type staticBuilder struct{ s *Static }

func (b staticBuilder) Scheme() string { return StaticScheme }

func (b staticBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	name := strings.TrimPrefix(target.Endpoint(), "/")
	b.s.mu.Lock()
	addrs, ok := b.s.targets[name]
	r := &staticResolver{cc: cc, owner: b.s, name: name}
	if ok {
		b.s.conns[name] = append(b.s.conns[name], r)
	}
	b.s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("static resolver: unknown target %q", name)
	}
	if err := r.push(addrs); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

type staticResolver struct {
	cc    resolver.ClientConn
	owner *Static
	name  string
}

func (r *staticResolver) push(addrs []string) error {
	eps := make([]resolver.Endpoint, 0, len(addrs))
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("static resolver: target %q: address %q: %w", r.name, a, err)
		}
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	return r.cc.UpdateState(resolver.State{Endpoints: eps})
}

func (r *staticResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *staticResolver) Close() {
	r.owner.mu.Lock()
	defer r.owner.mu.Unlock()
	r.owner.conns[r.name] = slices.DeleteFunc(r.owner.conns[r.name], func(x *staticResolver) bool { return x == r })
}
