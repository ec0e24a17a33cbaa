package registry_test

import (
	"io"
	"log/slog"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/registry"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/dns"
)

func TestNewPicksBackend(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := registry.New(registry.Config{Backend: registry.Static}, logger, nil)
	if err != nil || b.Resolver != nil || b.Registry != nil {
		t.Fatalf("static: %+v %v", b, err)
	}
	b, err = registry.New(registry.Config{Backend: registry.DNS, DNS: dns.Config{Port: 50051, Suffix: ".shop.svc"}}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if target, _, _ := b.Resolver.Resolve("inventory"); target != "dns:///inventory.shop.svc:50051" {
		t.Errorf("target = %q", target)
	}
	for _, c := range []registry.Config{{Backend: "consul"}, {Backend: registry.Nacos}, {Backend: registry.DNS}} {
		if _, err := registry.New(c, logger, nil); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}
