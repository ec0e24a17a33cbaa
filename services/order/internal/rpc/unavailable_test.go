package rpc_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/platformtest"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	ordercfg "github.com/shopmesh/shopmesh/services/order/internal/config"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

// While its PostgreSQL is unreachable the order service answers UNAVAILABLE with a retry delay — 503
// with Retry-After at the gateway — never INTERNAL (a 500); once it is back, calls succeed again.
func TestDatabaseDownIsUnavailable(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	proxy := sqldbtest.NewProxy(t, dsn)
	dsn = proxy.DSN(dsn)
	if err := migrate.UpAll(t.Context(), dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)
	inv := fakes.NewInventory(map[string]fakes.Product{"SKU-A": {Name: "Apple", PriceCents: 150, OnHand: 1000}})
	inva := fakes.Serve(t, func(s *grpc.Server) { inventoryv1.RegisterInventoryServiceServer(s, inv) })
	paya := fakes.Serve(t, func(s *grpc.Server) { paymentv1.RegisterPaymentServiceServer(s, fakes.NewPayment()) })
	cfg := config.Default(config.Test)
	cfg.Service = "order"
	cfg.Targets["inventory"] = config.Target{Addresses: []string{inva}}
	cfg.Targets["payment"] = config.Target{Addresses: []string{paya}}
	p := platformtest.New(t, cfg)
	ic, err := p.Dial("inventory")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := p.Dial("payment")
	if err != nil {
		t.Fatal(err)
	}
	stock := rpc.NewInventoryClient(inventoryv1.NewInventoryServiceClient(ic), 2*time.Second)
	a, err := app.New(app.Deps{
		Orders: store.New(db, d, outbox.New(d, nil)), Stock: stock, Catalog: stock,
		Payment: rpc.NewPaymentClient(paymentv1.NewPaymentServiceClient(pc), 2*time.Second), Feed: noFeed{}, Logger: discard(),
	}, ordercfg.Default(config.Test).Settings())
	if err != nil {
		t.Fatal(err)
	}
	srvCfg := config.Default(config.Test)
	srvCfg.Service, srvCfg.ListenAddr = "order", "127.0.0.1:0"
	gw := orderClient(t, "gateway", "", serveOrder(t, srvCfg, a))
	ctx, cancel := context.WithTimeout(as(t.Context(), "alice"), 30*time.Second)
	defer cancel()
	create := func(key string) (*orderv1.CreateOrderResponse, error) {
		return gw.CreateOrder(ctx, &orderv1.CreateOrderRequest{
			CustomerId: "alice", IdempotencyKey: key, Items: []*orderv1.OrderItem{{Sku: "SKU-A", Quantity: 1}},
		})
	}
	created, err := create("key-1")
	if err != nil {
		t.Fatal(err)
	}

	proxy.Down()
	calls := map[string]func() error{
		"CreateOrder": func() error { _, err := create("key-2"); return err },
		"GetOrder": func() error {
			_, err := gw.GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: created.GetOrder().GetId()})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if rpcerr.Code(err) != codes.Unavailable {
			t.Errorf("%s with the database down: %v (want UNAVAILABLE)", name, err)
			continue
		}
		if d, ok := rpcerr.RetryDelay(err); !ok || d <= 0 {
			t.Errorf("%s: no RetryInfo in %v", name, err)
		}
		if h := rpcerr.ToHTTP(err); h.Status != http.StatusServiceUnavailable || h.RetryAfter <= 0 {
			t.Errorf("%s at the gateway: %d, Retry-After %v", name, h.Status, h.RetryAfter)
		}
	}

	proxy.Up()
	if _, err := create("key-2"); err != nil {
		t.Fatalf("after the database came back: %v", err)
	}
}
