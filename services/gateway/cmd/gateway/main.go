// Command gateway runs the shopmesh HTTP/JSON edge: it authenticates callers (HS256 bearer tokens),
// rate-limits them, and serves the order, catalogue, stock import and account API by calling the
// order, inventory and payment gRPC services. `gateway` serves, `gateway check-config` validates the
// environment (GATEWAY_HTTP_ADDR, GATEWAY_JWT_SECRET, GATEWAY_TARGETS_ORDER_ADDRESSES, ...),
// `gateway healthcheck` asks its /healthz, `gateway -h` lists every variable.
package main

import (
	"context"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/healthcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	"github.com/shopmesh/shopmesh/services/gateway/internal/config"
)

func main() { service.Main(spec()) }

func spec() service.Spec[config.Config] {
	return service.Spec[config.Config]{
		Name: "gateway", Summary: "the HTTP/JSON edge: tokens, rate limits, orders, catalogue, stock import and accounts over the gRPC services",
		Defaults: config.Default, Wire: wire,
		Backends: []platform.Backend{nacos.Backend()}, // GATEWAY_REGISTRY_BACKEND=nacos, GATEWAY_CONFIG_CENTER_BACKEND=nacos
		// The gateway runs no gRPC server: its healthcheck is GET /healthz on the HTTP port.
		Healthcheck: func(ctx context.Context, cfg config.Config) error {
			if cfg.HTTPS.Enabled() {
				return healthcheck.GatewayHTTPS(ctx, cfg.HTTPAddr)
			}
			return healthcheck.Gateway(ctx, cfg.HTTPAddr)
		},
	}
}
