// Command payment runs the shopmesh payment service: the PaymentService gRPC API, the outbox relay
// publishing payment events to Kafka and the consumer applying order events. `payment migrate ...`
// manages the schema, `payment check-config` validates the environment, `payment -h` lists every
// PAYMENT_* variable (see internal/config).
package main

import (
	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	"github.com/shopmesh/shopmesh/services/payment/internal/config"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
	"github.com/shopmesh/shopmesh/services/payment/migrations"
)

func main() { service.Main(spec()) }

func spec() service.Spec[config.Config] {
	return service.Spec[config.Config]{
		Name: "payment", Summary: "customer accounts and the authorization, capture and void of order payments",
		Defaults: config.Default, Migrations: migrations.FS, Policy: rpc.Policy(), Wire: wire,
		Backends: []platform.Backend{nacos.Backend()}, // PAYMENT_REGISTRY_BACKEND=nacos, PAYMENT_CONFIG_CENTER_BACKEND=nacos
	}
}
