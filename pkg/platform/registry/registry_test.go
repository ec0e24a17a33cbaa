package registry_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/dns"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/nacos"
)

func TestNewPicksBackend(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	b, err := registry.New(registry.Config{Backend: registry.Static}, logger, nil, nil)
	if err != nil || b.Resolver != nil || b.Registry != nil {
		t.Fatalf("static: %+v %v", b, err)
	}
	b, err = registry.New(registry.Config{Backend: registry.DNS, DNS: dns.Config{Port: 50051, Suffix: ".shop.svc"}}, logger, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if target, _, _ := b.Resolver.Resolve("inventory"); target != "dns:///inventory.shop.svc:50051" {
		t.Errorf("target = %q", target)
	}
	for _, c := range []registry.Config{{Backend: "consul"}, {Backend: registry.Nacos}, {Backend: registry.DNS}} {
		if _, err := registry.New(c, logger, nil, nil); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}

// fakeRegistry stands for a contrib backend (the Nacos client).
type fakeRegistry struct{ closed bool }

func (f *fakeRegistry) Register(context.Context, discovery.Instance) error   { return nil }
func (f *fakeRegistry) Deregister(context.Context, discovery.Instance) error { return nil }
func (f *fakeRegistry) Close() error                                         { f.closed = true; return nil }

// TestNacosNeedsItsFactory: a valid Nacos section builds through the linked factory only; without it
// New says the backend is not linked instead of silently falling back to static addresses.
func TestNacosNeedsItsFactory(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	cfg := registry.Default()
	cfg.Backend = registry.Nacos
	cfg.Nacos = nacos.Default("127.0.0.1:8848", t.TempDir())

	if _, err := registry.New(cfg, logger, nil, nil); !errors.Is(err, registry.ErrNotLinked) {
		t.Fatalf("without a factory: err = %v, want ErrNotLinked", err)
	}
	if err := registry.Linked(cfg, nil); !errors.Is(err, registry.ErrNotLinked) {
		t.Fatalf("Linked without a factory: %v", err)
	}

	reg := &fakeRegistry{}
	var got registry.Config
	factories := map[string]registry.Factory{registry.Nacos: func(c registry.Config, _ *slog.Logger, _ prometheus.Registerer) (registry.Backend, error) {
		got = c
		return registry.Backend{Registry: reg, Closer: reg}, nil
	}}
	b, err := registry.New(cfg, logger, nil, factories)
	if err != nil {
		t.Fatal(err)
	}
	if got.Nacos.Addrs[0] != "127.0.0.1:8848" || b.Registry != reg {
		t.Fatalf("factory got %+v, backend %+v", got, b)
	}
	if err := b.Close(); err != nil || !reg.closed {
		t.Fatalf("close: %v closed=%v", err, reg.closed)
	}

	// An invalid section is refused before the factory runs.
	cfg.Nacos.Addrs = nil
	got = registry.Config{}
	if _, err := registry.New(cfg, logger, nil, factories); err == nil || got.Backend != "" {
		t.Fatalf("invalid section: err = %v, factory called with %+v", err, got)
	}
}
