// Package registry picks the discovery backend a service runs with — static addresses from config, Nacos,
// or DNS (Kubernetes headless services) — and returns it as a discovery.Resolver and discovery.Registry.
// platform.New builds it from the Registry section of the platform config; platform.WithResolver and
// platform.WithRegistry replace either side.
//
// Static and DNS are built in. The Nacos backend is a Factory from its own module
// (github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos), linked only into binaries that opt in, so
// nacos-sdk-go stays out of the others; its configuration section (package nacos here) is always known,
// so every binary validates and documents the same variables.
package registry

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/dns"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/nacos"
)

// The backends.
const (
	Static = "static"
	Nacos  = "nacos"
	DNS    = "dns"
)

// Config selects the backend; only its own section is read.
type Config struct {
	Backend string `help:"service discovery: static (target addresses), nacos or dns"`
	Nacos   nacos.Config
	DNS     dns.Config
}

// Default returns the static backend, with the other sections holding their defaults so that selecting
// one needs only its addresses: for Nacos Addrs, CacheDir and LogDir (a service listening on every
// interface advertises its first non-loopback interface address unless AdvertiseHost says otherwise),
// for DNS the Suffix.
func Default() Config {
	return Config{
		Backend: Static,
		Nacos: nacos.Config{
			Group:          "DEFAULT_GROUP",
			LogLevel:       "warn",
			Timeout:        3 * time.Second,
			EmptyGrace:     10 * time.Second,
			HealthInterval: time.Second,
			Weight:         1,
		},
		DNS: dns.Config{Port: 50051},
	}
}

// Validate checks the selected backend's section.
func (c Config) Validate() error {
	switch c.Backend {
	case Static, "":
		return nil
	case Nacos:
		if err := c.Nacos.Validate(); err != nil {
			return fmt.Errorf("nacos: %w", err)
		}
		return nil
	case DNS:
		if err := c.DNS.Validate(); err != nil {
			return fmt.Errorf("dns: %w", err)
		}
		return nil
	}
	return fmt.Errorf("backend: must be %s, %s or %s, got %q", Static, Nacos, DNS, c.Backend)
}

// Backend is what New returns. Resolver and Registry are nil for static: the facade then uses the
// addresses of Config.Targets and registers nothing. Close ends the backend's connections.
type Backend struct {
	Resolver discovery.Resolver
	Registry discovery.Registry
	io.Closer
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// Factory builds a backend that is not part of this module (the Nacos one of contrib/nacos) from the
// configuration; reg receives its metrics (may be nil).
type Factory func(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (Backend, error)

// ErrNotLinked is returned (wrapped) for a configured backend that no Factory provides.
var ErrNotLinked = errors.New("backend not linked into this binary")

// New builds the configured backend; reg receives its metrics (may be nil). Static and dns are built
// in; any other backend comes from factories, by the name Config.Backend holds.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer, factories map[string]Factory) (Backend, error) {
	if err := cfg.Validate(); err != nil {
		return Backend{}, fmt.Errorf("registry config: %w", err)
	}
	if err := Linked(cfg, factories); err != nil {
		return Backend{}, err
	}
	switch cfg.Backend {
	case Static, "":
		return Backend{Closer: nopCloser{}}, nil
	case DNS:
		r, err := dns.New(cfg.DNS)
		if err != nil {
			return Backend{}, err
		}
		return Backend{Resolver: r, Registry: dns.Registry{}, Closer: nopCloser{}}, nil
	}
	b, err := factories[cfg.Backend](cfg, logger, reg)
	if err != nil {
		return Backend{}, err
	}
	if b.Closer == nil {
		b.Closer = nopCloser{}
	}
	return b, nil
}

// Linked reports whether the backend cfg selects can be built with factories: static and dns always
// can, another one needs its Factory (for nacos: the Backend of contrib/nacos in service.Spec.Backends).
func Linked(cfg Config, factories map[string]Factory) error {
	switch cfg.Backend {
	case Static, "", DNS:
		return nil
	}
	if factories[cfg.Backend] == nil {
		return fmt.Errorf("registry backend %q: %w (add github.com/shopmesh/shopmesh/pkg/platform/contrib/%s's Backend to service.Spec.Backends, or platform.WithBackends)",
			cfg.Backend, ErrNotLinked, cfg.Backend)
	}
	return nil
}
