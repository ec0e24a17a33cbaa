// Package dns resolves logical target names through grpc's built-in "dns:///" resolver, as used with
// Kubernetes headless services (one A record per ready pod). Kubernetes does the registering, so the
// Registry side does nothing.
package dns

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"

	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
)

// Config turns a name into "dns:///<name><Suffix>:<Port>".
type Config struct {
	// Suffix follows the name, e.g. ".shop.svc.cluster.local" ("" for names resolvable as they are).
	Suffix string
	// Port is the gRPC port every service listens on.
	Port int
}

// Validate names the fields that are wrong.
func (c Config) Validate() error {
	if c.Port <= 0 || c.Port > 65535 {
		return fmt.Errorf("port: must be within 1-65535, got %d", c.Port)
	}
	if strings.ContainsAny(c.Suffix, "/: ") {
		return fmt.Errorf("suffix: %q must be a DNS name suffix", c.Suffix)
	}
	return nil
}

// Resolver implements discovery.Resolver over DNS.
type Resolver struct{ cfg Config }

var _ discovery.Resolver = Resolver{}

// New validates cfg.
func New(cfg Config) (Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return Resolver{}, fmt.Errorf("dns resolver config: %w", err)
	}
	return Resolver{cfg}, nil
}

// Resolve returns the dns target of name; the builder is nil because grpc registers "dns" itself.
func (r Resolver) Resolve(name string) (string, resolver.Builder, error) {
	if name == "" || strings.ContainsAny(name, "/: ") {
		return "", nil, fmt.Errorf("dns resolve %q: not a service name", name)
	}
	return "dns:///" + name + r.cfg.Suffix + ":" + strconv.Itoa(r.cfg.Port), nil, nil
}

// Registry is the no-op registry for platforms (Kubernetes) that register instances themselves.
type Registry struct{}

var _ discovery.Registry = Registry{}

// Register does nothing: readiness probes put the pod into the headless service.
func (Registry) Register(ctx context.Context, _ discovery.Instance) error { return ctxErr(ctx) }

// Deregister does nothing: the terminating pod leaves the endpoints; the drain delay covers the lag.
func (Registry) Deregister(ctx context.Context, _ discovery.Instance) error { return ctxErr(ctx) }

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}
