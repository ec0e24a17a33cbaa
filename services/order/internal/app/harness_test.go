package app_test

import (
	"context"
	"database/sql"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

var settings = app.Settings{
	SagaTimeout:   5 * time.Second,
	RecoveryAfter: time.Minute,
	GiveUpAfter:   time.Hour,
	RecoveryBatch: 20,
	WatchPoll:     time.Second,
	SettleAfter:   time.Hour,
	RetryMin:      5 * time.Second,
	RetryMax:      10 * time.Minute,
	StuckAfter:    30 * time.Minute,
	StuckAttempts: 3,
}

// clock is real time plus an offset the test moves forward, so leases expire without sleeping.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// world is one database and the fake inventory and payment services; instances are order service
// processes on it.
type world struct {
	t     *testing.T
	dsn   string
	inv   *fakes.Inventory
	pay   *fakes.Payment
	inva  string
	paya  string
	clock *clock
}

func catalogue() map[string]fakes.Product {
	return map[string]fakes.Product{
		"SKU-A":   {Name: "Apple", PriceCents: 150, OnHand: 100000},
		"SKU-B":   {Name: "Banana", PriceCents: 80, OnHand: 100000},
		"SKU-LOW": {Name: "Rare", PriceCents: 999, OnHand: 5},
	}
}

func newWorld(t *testing.T, dsn string) *world {
	t.Helper()
	return newWorldWith(t, dsn, nil)
}

// newWorldWith is newWorld with the fake inventory served through wrap (nil: as it is), to script
// answers per order.
func newWorldWith(t *testing.T, dsn string, wrap func(*fakes.Inventory) inventoryv1.InventoryServiceServer) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := migrate.UpAll(ctx, dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, dsn: dsn, inv: fakes.NewInventory(catalogue()), pay: fakes.NewPayment(), clock: &clock{}}
	var inv inventoryv1.InventoryServiceServer = w.inv
	if wrap != nil {
		inv = wrap(w.inv)
	}
	w.inva = fakes.Serve(t, func(s *grpc.Server) { inventoryv1.RegisterInventoryServiceServer(s, inv) })
	w.paya = fakes.Serve(t, func(s *grpc.Server) { paymentv1.RegisterPaymentServiceServer(s, w.pay) })
	return w
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// instance is one order service process: its own pool, platform connections and application.
type instance struct {
	app    *app.App
	orders *store.Store
	db     *sql.DB
}

// start builds an instance. Its platform is the real one: round robin, health checks, retries of
// UNAVAILABLE and a breaker (with a short open time, so tests need not wait long after an outage).
func (w *world) start() *instance {
	w.t.Helper()
	return w.startWith(nil)
}

// startWith is start with the settings changed by tune (nil: as they are).
func (w *world) startWith(tune func(*app.Settings)) *instance {
	t := w.t
	t.Helper()
	set := settings
	if tune != nil {
		tune(&set)
	}
	cfg := config.Default(config.Test)
	cfg.Service = "order-test"
	cfg.Targets["inventory"] = config.Target{Addresses: []string{w.inva}}
	cfg.Targets["payment"] = config.Target{Addresses: []string{w.paya}}
	cfg.Client.Breaker.OpenTimeout = 20 * time.Millisecond
	p, err := platform.New(context.Background(), cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ic, err := p.Dial("inventory")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := p.Dial("payment")
	if err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, w.dsn)
	orders := store.New(db, d, outbox.New(d, nil))
	inv := rpc.NewInventoryClient(inventoryv1.NewInventoryServiceClient(ic), 2*time.Second)
	a, err := app.New(app.Deps{
		Orders: orders, Stock: inv, Catalog: inv, Feed: noFeed{}, Logger: discard(), Now: w.clock.Now,
		Payment: rpc.NewPaymentClient(paymentv1.NewPaymentServiceClient(pc), 2*time.Second),
	}, set)
	if err != nil {
		t.Fatal(err)
	}
	return &instance{app: a, orders: orders, db: db}
}

// noFeed is a status feed that never notifies (watchers fall back to re-reading).
type noFeed struct{}

func (noFeed) Subscribe(context.Context, string) (<-chan int64, func(), error) {
	return make(chan int64), func() {}, nil
}

func lines(l ...domain.Line) []domain.Line { return l }

func line(sku string, q int32) domain.Line { return domain.Line{SKU: sku, Quantity: q} }

// recoverUntil runs recovery passes (moving the clock past every lease) until no order of ids is
// PENDING and no compensation is due, or fails after a bounded number of passes.
func (w *world) recoverUntil(in *instance, ids ...string) {
	t := w.t
	t.Helper()
	ctx := context.Background()
	for range 200 {
		w.clock.Advance(2 * settings.RecoveryAfter)
		st, err := in.app.RecoverOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pending := 0
		for _, id := range ids {
			o, err := in.orders.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if o.Status == domain.Pending {
				pending++
			}
		}
		if pending == 0 && st.Compensated == 0 && st.Claimed == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond) // let an open breaker half-open
	}
	t.Fatalf("orders still pending after 200 recovery passes")
}

func (w *world) status(orderID string) (inventoryv1.ReservationStatus, paymentv1.AuthorizationStatus) {
	return w.inv.Reservation(orderID), w.pay.Status(orderID)
}
