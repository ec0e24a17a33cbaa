package nacos

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
)

// Backend links Nacos into a binary as the registry backend (<P>_REGISTRY_BACKEND=nacos: register on
// Serve, resolve "nacos:///<target>") and the config-center backend (<P>_CONFIG_CENTER_BACKEND=nacos,
// reading the registry's Nacos section). A service opts in with one line of its Spec:
//
//	Backends: []platform.Backend{nacos.Backend()},
//
// (or platform.WithBackends(nacos.Backend()) when building a Platform directly).
func Backend() platform.Backend {
	return platform.Backend{
		Name: registry.Nacos,
		Registry: func(cfg registry.Config, logger *slog.Logger, reg prometheus.Registerer) (registry.Backend, error) {
			c, err := New(cfg.Nacos, logger, reg)
			if err != nil {
				return registry.Backend{}, err
			}
			return registry.Backend{Resolver: c, Registry: c, Closer: c}, nil
		},
		ConfigSource: func(cfg platform.Config) (platform.ConfigSource, error) {
			return NewConfigSource(cfg.Registry.Nacos)
		},
	}
}
