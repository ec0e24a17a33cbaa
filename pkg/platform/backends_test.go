package platform_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/nacos"
)

// closingStatic is a config-center source from a contrib module, seen by the platform.
type closingStatic struct {
	*configcenter.Static
	closed bool
}

func (s *closingStatic) Close() error { s.closed = true; return nil }

// recordingRegistry is a contrib registry: it records what Serve registers.
type recordingRegistry struct {
	registered chan discovery.Instance
	closed     bool
}

func (r *recordingRegistry) Register(_ context.Context, in discovery.Instance) error {
	r.registered <- in
	return nil
}
func (r *recordingRegistry) Deregister(context.Context, discovery.Instance) error { return nil }
func (r *recordingRegistry) Close() error                                         { r.closed = true; return nil }

func nacosConfig(t *testing.T, service string) config.Config {
	cfg := testConfig(service)
	cfg.Registry.Nacos = nacos.Default("127.0.0.1:8848", t.TempDir())
	return cfg
}

// TestNacosBackendMustBeLinked: selecting nacos (registry or config center) in a binary that did not
// link contrib/nacos fails at New, and CheckBackends (check-config) says so, instead of silently running
// with static addresses and no config center.
func TestNacosBackendMustBeLinked(t *testing.T) {
	t.Parallel()
	reg := nacosConfig(t, "echo")
	reg.Registry.Backend = registry.Nacos
	cc := nacosConfig(t, "echo")
	cc.ConfigCenter.Backend = config.ConfigCenterNacos
	for name, cfg := range map[string]config.Config{"registry": reg, "config center": cc} {
		if err := platform.CheckBackends(cfg); !errors.Is(err, registry.ErrNotLinked) || !strings.Contains(err.Error(), "contrib/nacos") {
			t.Errorf("%s: CheckBackends = %v, want ErrNotLinked naming contrib/nacos", name, err)
		}
		if _, err := platform.New(t.Context(), cfg, quiet()); !errors.Is(err, registry.ErrNotLinked) {
			t.Errorf("%s: New = %v, want ErrNotLinked", name, err)
		}
	}
	if err := platform.CheckBackends(testConfig("echo")); err != nil {
		t.Errorf("static: %v", err)
	}
}

// TestLinkedBackendServes: a backend linked with WithBackends is the registry Serve registers with and
// the config center's source (its documents reach the running limiter); Close closes both.
func TestLinkedBackendServes(t *testing.T) {
	t.Parallel()
	cfg := nacosConfig(t, "echo")
	cfg.Registry.Backend = registry.Nacos
	cfg.ConfigCenter.Backend = config.ConfigCenterNacos
	rec := &recordingRegistry{registered: make(chan discovery.Instance, 1)}
	src := &closingStatic{Static: configcenter.NewStatic(map[string]string{"echo.yaml": "rate_limit: {default: {rps: 9}}"})}
	var gotAddrs []string
	backend := platform.Backend{
		Name: registry.Nacos,
		Registry: func(c registry.Config, _ *slog.Logger, _ prometheus.Registerer) (registry.Backend, error) {
			gotAddrs = c.Nacos.Addrs
			return registry.Backend{Registry: rec, Closer: rec}, nil
		},
		ConfigSource: func(platform.Config) (platform.ConfigSource, error) { return src, nil },
	}
	if err := platform.CheckBackends(cfg, backend); err != nil {
		t.Fatal(err)
	}
	p, err := platform.New(t.Context(), cfg, quiet(), platform.WithBackends(backend))
	if err != nil {
		t.Fatal(err)
	}
	if len(gotAddrs) != 1 || gotAddrs[0] != "127.0.0.1:8848" {
		t.Fatalf("factory saw addrs %v", gotAddrs)
	}
	srv := serve(t, p, func(*grpc.Server) {})
	select {
	case in := <-rec.registered:
		if in.Service != "echo" || in.Addr != srv.addr {
			t.Errorf("registered %+v, want echo at %s", in, srv.addr)
		}
	case <-t.Context().Done():
		t.Fatal("never registered")
	}
	eventually(t, "rps 9 from the linked config source", func() bool { return p.RateLimiter().Limits().Default.RPS == 9 })
	srv.stop()
	if err := srv.wait(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !rec.closed || !src.closed {
		t.Errorf("closed: registry %v, config source %v", rec.closed, src.closed)
	}
}

// TestConfigCenterBackendValidation names the field for a bad backend or a missing Nacos section.
func TestConfigCenterBackendValidation(t *testing.T) {
	t.Parallel()
	cfg := testConfig("cc")
	cfg.ConfigCenter.Backend = "etcd"
	if _, err := platform.New(t.Context(), cfg, quiet()); err == nil || !strings.Contains(err.Error(), "config_center.backend") {
		t.Fatalf("backend etcd: %v", err)
	}
	cfg.ConfigCenter.Backend = config.ConfigCenterNacos
	if _, err := platform.New(t.Context(), cfg, quiet()); err == nil || !strings.Contains(err.Error(), "config_center.backend") {
		t.Fatalf("nacos without addresses: %v", err)
	}
}
