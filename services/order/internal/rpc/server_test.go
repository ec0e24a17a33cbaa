package rpc_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/platformtest"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

type noFeed struct{}

func (noFeed) Subscribe(context.Context, string) (<-chan int64, func(), error) {
	return make(chan int64), func() {}, nil
}

// world is the order application on SQLite, calling inventory and payment servers over loopback gRPC
// through the rpc clients.
type world struct {
	orders *store.Store
	app    *app.App
	stock  *rpc.InventoryClient
	money  *rpc.PaymentClient
}

// newWorld builds the order application over inv and pay, served on loopback.
func newWorld(t *testing.T, inv inventoryv1.InventoryServiceServer, pay paymentv1.PaymentServiceServer) *world {
	t.Helper()
	inva := fakes.Serve(t, func(s *grpc.Server) { inventoryv1.RegisterInventoryServiceServer(s, inv) })
	paya := fakes.Serve(t, func(s *grpc.Server) { paymentv1.RegisterPaymentServiceServer(s, pay) })
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
	dsn := sqldbtest.SQLite(t)
	if err := migrate.UpAll(t.Context(), dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)
	w := &world{
		orders: store.New(db, d, outbox.New(d, nil)),
		stock:  rpc.NewInventoryClient(inventoryv1.NewInventoryServiceClient(ic), 2*time.Second),
		money:  rpc.NewPaymentClient(paymentv1.NewPaymentServiceClient(pc), 2*time.Second),
	}
	w.app, err = app.New(app.Deps{
		Orders: w.orders, Stock: w.stock, Catalog: w.stock, Payment: w.money, Feed: noFeed{}, Logger: discard(),
	}, app.Settings{SagaTimeout: 5 * time.Second, RecoveryAfter: time.Minute, GiveUpAfter: time.Hour, RecoveryBatch: 20, WatchPoll: 50 * time.Millisecond,
		SettleAfter: time.Minute, RetryMin: time.Second, RetryMax: time.Minute, StuckAfter: time.Hour, StuckAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// newApp is the order application on SQLite, calling fake inventory and payment servers.
func newApp(t *testing.T) *app.App {
	t.Helper()
	inv := fakes.NewInventory(map[string]fakes.Product{"SKU-A": {Name: "Apple", PriceCents: 150, OnHand: 1000}})
	return newWorld(t, inv, fakes.NewPayment()).app
}

// serveOrder serves the OrderService from a platform built from cfg and returns its address.
func serveOrder(t *testing.T, cfg config.Config, a *app.App) string {
	t.Helper()
	return platformtest.Serve(t, cfg, func(s *grpc.Server) { orderv1.RegisterOrderServiceServer(s, rpc.NewServer(a, nil)) },
		platform.WithPolicy(rpc.Policy()))
}

// orderClient dials the order service at addr as identity (TLS when dir != "").
func orderClient(t *testing.T, identity, dir, addr string) orderv1.OrderServiceClient {
	t.Helper()
	return orderv1.NewOrderServiceClient(platformtest.Dial(t, identity, dir, "order", addr))
}

func as(ctx context.Context, customer string) context.Context {
	if customer == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, authz.CustomerHeader, customer)
}

// A customer sees, cancels and watches only their own orders: another customer's order is NOT_FOUND,
// like a missing one. Checked with mTLS on (the customer comes from the gateway's certificate) and off.
func TestCustomerSeesOnlyOwnOrders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := mtls.EnsureDir(mtls.DirOptions{Dir: dir, Services: []string{"order", "gateway"}, TTL: time.Hour, CATTL: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	a := newApp(t)
	tlsCfg := config.Default(config.Test)
	tlsCfg.Service, tlsCfg.ListenAddr, tlsCfg.TLS = "order", "127.0.0.1:0", platformtest.TLSFiles(dir, "order")
	plainCfg := config.Default(config.Test)
	plainCfg.Service, plainCfg.ListenAddr = "order", "127.0.0.1:0"

	for _, tc := range []struct {
		name string
		dir  string
		addr string
	}{
		{"mtls", dir, serveOrder(t, tlsCfg, a)},
		{"plaintext", "", serveOrder(t, plainCfg, a)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := orderClient(t, "gateway", tc.dir, tc.addr)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			created, err := gw.CreateOrder(as(ctx, "alice"), &orderv1.CreateOrderRequest{
				CustomerId: "alice", IdempotencyKey: "key-" + tc.name,
				Items: []*orderv1.OrderItem{{Sku: "SKU-A", Quantity: 1}},
			})
			if err != nil {
				t.Fatal(err)
			}
			id := created.GetOrder().GetId()

			// Claiming another customer than the authenticated one is refused.
			_, err = gw.CreateOrder(as(ctx, "mallory"), &orderv1.CreateOrderRequest{
				CustomerId: "alice", IdempotencyKey: "key2-" + tc.name, Items: []*orderv1.OrderItem{{Sku: "SKU-A", Quantity: 1}},
			})
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("create for another customer: %v", err)
			}

			if got, err := gw.GetOrder(as(ctx, "alice"), &orderv1.GetOrderRequest{OrderId: id}); err != nil || got.GetOrder().GetCustomerId() != "alice" {
				t.Errorf("owner get: %v %v", got, err)
			}
			_, missing := gw.GetOrder(as(ctx, "mallory"), &orderv1.GetOrderRequest{OrderId: "00000000-0000-0000-0000-000000000000"})
			_, other := gw.GetOrder(as(ctx, "mallory"), &orderv1.GetOrderRequest{OrderId: id})
			if status.Code(other) != codes.NotFound || status.Convert(other).Message() != status.Convert(missing).Message() {
				t.Errorf("other's order: %v; missing order: %v", other, missing)
			}
			if _, err := gw.CancelOrder(as(ctx, "mallory"), &orderv1.CancelOrderRequest{OrderId: id, Reason: "mine now"}); status.Code(err) != codes.NotFound {
				t.Errorf("cancel other's order: %v", err)
			}
			if st, err := gw.WatchOrder(as(ctx, "mallory"), &orderv1.WatchOrderRequest{OrderId: id}); err == nil {
				if _, err = st.Recv(); status.Code(err) != codes.NotFound {
					t.Errorf("watch other's order: %v", err)
				}
			}
			// Without customer metadata the gateway acts for itself (no customer) and sees the order.
			got, err := gw.GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: id})
			if err != nil || got.GetOrder().GetStatus() == orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
				t.Errorf("service get: %v %v (must not have been cancelled by mallory)", got, err)
			}
			st, err := gw.WatchOrder(as(ctx, "alice"), &orderv1.WatchOrderRequest{OrderId: id})
			if err != nil {
				t.Fatal(err)
			}
			if first, err := st.Recv(); err != nil || first.GetOrder().GetId() != id {
				t.Errorf("owner watch: %v %v", first, err)
			}
		})
	}
}

// CreateOrder needs an idempotency key: without one a retry of a request whose answer was lost would
// place a second order. The server's validation refuses it before anything happens, naming the field.
func TestCreateOrderRequiresIdempotencyKey(t *testing.T) {
	t.Parallel()
	cfg := config.Default(config.Test)
	cfg.Service, cfg.ListenAddr = "order", "127.0.0.1:0"
	c := orderClient(t, "gateway", "", serveOrder(t, cfg, newApp(t)))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req := &orderv1.CreateOrderRequest{CustomerId: "alice", Items: []*orderv1.OrderItem{{Sku: "SKU-A", Quantity: 1}}}
	_, err := c.CreateOrder(ctx, req)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("without a key: %v, want INVALID_ARGUMENT", err)
	}
	var fields []string
	for _, v := range rpcerr.Violations(err) {
		fields = append(fields, v.Field)
	}
	if len(fields) != 1 || fields[0] != "idempotency_key" {
		t.Fatalf("violations name %v, want [idempotency_key]", fields)
	}
	req.IdempotencyKey = "k-1"
	if _, err := c.CreateOrder(ctx, req); err != nil {
		t.Fatalf("with a key: %v", err)
	}
}

// The calls that finish an order (commit, capture, void) tell a refusal that retrying cannot change
// from an outage, over real gRPC.
func TestClientsMapFollowupRefusals(t *testing.T) {
	t.Parallel()
	inv := fakes.NewInventory(map[string]fakes.Product{"SKU-A": {Name: "Apple", PriceCents: 150, OnHand: 10}})
	pay := fakes.NewPayment()
	w := newWorld(t, inv, pay)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	const id = "00000000-0000-4000-8000-000000000001"
	if err := w.stock.CommitStock(ctx, id); !errors.Is(err, domain.ErrDependencyRefused) {
		t.Errorf("commit of a reservation that does not exist: %v", err)
	}
	if err := w.money.CapturePayment(ctx, id); !errors.Is(err, domain.ErrDependencyRefused) {
		t.Errorf("capture of an authorization that does not exist: %v", err)
	}
	if _, err := w.stock.ReserveStock(ctx, id, []domain.Line{{SKU: "SKU-A", Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.money.AuthorizePayment(ctx, app.AuthorizeRequest{OrderID: id, CustomerID: "alice", AmountCents: 150, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(w.stock.CommitStock(ctx, id), w.stock.CommitStock(ctx, id),
		w.money.CapturePayment(ctx, id), w.money.CapturePayment(ctx, id)); err != nil {
		t.Fatalf("commit and capture, twice each: %v", err)
	}
	if err := w.money.VoidPayment(ctx, id); !errors.Is(err, domain.ErrDependencyRefused) {
		t.Errorf("void of a captured payment: %v", err)
	}
	if err := w.stock.ReleaseStock(ctx, id); err == nil || errors.Is(err, domain.ErrUnavailable) {
		t.Errorf("release of committed stock: %v, want a refusal", err)
	}
	pay.SetDown(true)
	if err := w.money.CapturePayment(ctx, id); !errors.Is(err, domain.ErrUnavailable) {
		t.Errorf("capture with payment down: %v", err)
	}
	if inv.Commits() != 1 || pay.Captures() != 1 {
		t.Errorf("commits %d, captures %d; want 1 each", inv.Commits(), pay.Captures())
	}
}
