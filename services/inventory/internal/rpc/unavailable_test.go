package rpc_test

import (
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
)

// While PostgreSQL is unreachable every call answers UNAVAILABLE with a retry delay — 503 with
// Retry-After at the gateway — never INTERNAL (a 500); once it is back, calls succeed again.
func TestDatabaseDownIsUnavailable(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	proxy := sqldbtest.NewProxy(t, dsn)
	in := serve(t, proxy.DSN(dsn), nil)
	ctx := callCtx(t)
	if _, err := in.svc.Seed(ctx, app.DevCatalog(2, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := in.client.ReserveStock(ctx, reserve(orderID(1), item("SKU-0001", 1))); err != nil {
		t.Fatal(err)
	}

	proxy.Down()
	calls := map[string]func() error{
		"ReserveStock": func() error {
			_, err := in.client.ReserveStock(ctx, reserve(orderID(2), item("SKU-0001", 1)))
			return err
		},
		"ReleaseStock": func() error {
			_, err := in.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: orderID(1)})
			return err
		},
		"ListProducts": func() error {
			_, err := in.client.ListProducts(ctx, &inventoryv1.ListProductsRequest{})
			return err
		},
		"GetProduct": func() error {
			_, err := in.client.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "SKU-0001"})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if rpcerr.Code(err) != codes.Unavailable || rpcerr.Reason(err) != rpc.ReasonStoreUnavailable {
			t.Errorf("%s with the database down: %v (want UNAVAILABLE %s)", name, err, rpc.ReasonStoreUnavailable)
			continue
		}
		if d, ok := rpcerr.RetryDelay(err); !ok || d <= 0 {
			t.Errorf("%s: no RetryInfo", name)
		}
		if h := rpcerr.ToHTTP(err); h.Status != http.StatusServiceUnavailable || h.RetryAfter <= 0 {
			t.Errorf("%s at the gateway: %d, Retry-After %v", name, h.Status, h.RetryAfter)
		}
	}

	proxy.Up()
	if _, err := in.client.ReserveStock(ctx, reserve(orderID(2), item("SKU-0001", 1))); err != nil {
		t.Fatalf("after the database came back: %v", err)
	}
}
