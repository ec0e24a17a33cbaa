// Command inventory runs the shopmesh inventory service: `inventory` serves, `inventory migrate ...`
// manages the schema, `inventory check-config` validates the environment, `inventory -h` lists it.
package main

import (
	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
	"github.com/shopmesh/shopmesh/services/inventory/migrations"
)

func main() { service.Main(spec()) }

func spec() service.Spec[config.Config] {
	return service.Spec[config.Config]{
		Name: "inventory", Summary: "stock levels, reservations for orders, live stock watches and stock imports",
		Defaults: config.Default, Migrations: migrations.FS, Policy: rpc.Policy(), Wire: wire,
		Backends: []platform.Backend{nacos.Backend()}, // INVENTORY_REGISTRY_BACKEND=nacos, INVENTORY_CONFIG_CENTER_BACKEND=nacos
	}
}
