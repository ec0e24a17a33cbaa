// Command order runs the shopmesh order service: the OrderService gRPC API and the checkout saga that
// reserves stock (inventory) and authorizes payment (payment), its recovery worker and its outbox
// relay. `order -h` lists the commands (serve, migrate, check-config, healthcheck) and every variable.
package main

import (
	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	"github.com/shopmesh/shopmesh/services/order/internal/config"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

func main() { service.Main(spec()) }

func spec() service.Spec[config.Config] {
	return service.Spec[config.Config]{
		Name: "order", Summary: "orders and the checkout saga (reserve stock, authorize payment, confirm or compensate)",
		Defaults: config.Default, Migrations: migrations.FS, Policy: rpc.Policy(), Wire: wire,
		Backends: []platform.Backend{nacos.Backend()}, // ORDER_REGISTRY_BACKEND=nacos, ORDER_CONFIG_CENTER_BACKEND=nacos
	}
}
