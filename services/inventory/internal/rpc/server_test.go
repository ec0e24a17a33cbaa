package rpc_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform"
	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// chanFeed stands in for NATS: the test pushes levels, every watcher gets them.
type chanFeed struct {
	mu       sync.Mutex
	watchers []chan domain.StockLevel
	watching atomic.Int32
}

func (f *chanFeed) Watch(ctx context.Context, _ []string) (<-chan domain.StockLevel, error) {
	ch := make(chan domain.StockLevel, 16)
	f.mu.Lock()
	f.watchers = append(f.watchers, ch)
	f.mu.Unlock()
	f.watching.Add(1)
	return ch, nil
}

func (f *chanFeed) push(l domain.StockLevel) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.watchers {
		ch <- l
	}
}

type fixture struct {
	client   inventoryv1.InventoryServiceClient
	db       *store.Store
	feed     *chanFeed
	received map[string]int64
	check    func(t *testing.T)
}

func logger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func start(t *testing.T, dsn string, skus int, stock int64) *fixture {
	t.Helper()
	return startWith(t, dsn, skus, stock, nil)
}

// startWith is start with serve's wrap and dial options.
func startWith(t *testing.T, dsn string, skus int, stock int64, wrap func(*rpc.Server) inventoryv1.InventoryServiceServer, dialOpts ...grpc.DialOption) *fixture {
	t.Helper()
	in := serve(t, dsn, wrap, dialOpts...)
	catalog := app.DevCatalog(skus, stock)
	if _, err := in.svc.Seed(callCtx(t), catalog); err != nil {
		t.Fatal(err)
	}
	received := map[string]int64{}
	for _, p := range catalog {
		received[p.SKU] = p.OnHand
	}
	f := &fixture{client: in.client, db: in.store, feed: in.feed, received: received}
	f.check = func(t *testing.T) { storetest.CheckConserved(t, in.db, f.received) }
	return f
}

// instance is one inventory server over loopback gRPC on the database dsn names; several may share one.
type instance struct {
	client inventoryv1.InventoryServiceClient
	db     *sql.DB
	store  *store.Store
	svc    *app.App
	feed   *chanFeed
}

// serve starts an instance; wrap, when set, decorates the server before it is registered.
func serve(t *testing.T, dsn string, wrap func(*rpc.Server) inventoryv1.InventoryServiceServer, dialOpts ...grpc.DialOption) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db, d := storetest.Open(t, dsn)
	st := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
	feed := &chanFeed{}
	svc, err := app.New(app.Deps{Stock: st, Effects: st, Feed: feed, Logger: logger()}, app.Settings{Consumer: "inventory"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := platformcfg.Default(platformcfg.Test)
	cfg.Service, cfg.ListenAddr = "inventory", "127.0.0.1:0"
	p, err := platform.New(ctx, cfg, logger())
	if err != nil {
		t.Fatal(err)
	}
	srv := p.NewServer()
	var impl inventoryv1.InventoryServiceServer = rpc.NewServer(svc, logger())
	if wrap != nil {
		impl = wrap(impl.(*rpc.Server))
	}
	inventoryv1.RegisterInventoryServiceServer(srv, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, srv, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &instance{client: inventoryv1.NewInventoryServiceClient(conn), db: db, store: st, svc: svc, feed: feed}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func orderID(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func reserve(id string, items ...*inventoryv1.ReservationItem) *inventoryv1.ReserveStockRequest {
	return &inventoryv1.ReserveStockRequest{OrderId: id, Items: items}
}

func item(sku string, q int32) *inventoryv1.ReservationItem {
	return &inventoryv1.ReservationItem{Sku: sku, Quantity: q}
}

func TestErrorsCarryCodesAndReasons(t *testing.T) {
	t.Parallel()
	f := start(t, sqldbtest.SQLite(t), 3, 10)
	ctx := callCtx(t)
	if _, err := f.client.ReserveStock(ctx, reserve(orderID(1), item("SKU-0001", 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: orderID(1)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
		sku    string
	}{
		{"out of stock", func() error {
			_, err := f.client.ReserveStock(ctx, reserve(orderID(2), item("SKU-0001", 1), item("SKU-0002", 11)))
			return err
		}, codes.FailedPrecondition, rpc.ReasonOutOfStock, "SKU-0002"},
		{"unknown product", func() error {
			_, err := f.client.ReserveStock(ctx, reserve(orderID(2), item("NOPE-1", 1)))
			return err
		}, codes.NotFound, rpc.ReasonUnknownProduct, "NOPE-1"},
		{"invalid request", func() error {
			_, err := f.client.ReserveStock(ctx, reserve("x", item("SKU-0001", 0)))
			return err
		}, codes.InvalidArgument, rpcerr.ReasonValidation, ""},
		{"commit unknown", func() error {
			_, err := f.client.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: orderID(9)})
			return err
		}, codes.NotFound, rpc.ReasonReservationNotFound, ""},
		{"release committed", func() error {
			_, err := f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: orderID(1)})
			return err
		}, codes.FailedPrecondition, rpc.ReasonReservationCommitted, ""},
		{"reserve again with other items", func() error {
			_, err := f.client.ReserveStock(ctx, reserve(orderID(1), item("SKU-0002", 1)))
			return err
		}, codes.AlreadyExists, rpc.ReasonReservationMismatch, ""},
		{"get unknown", func() error {
			_, err := f.client.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "NOPE-1"})
			return err
		}, codes.NotFound, rpc.ReasonUnknownProduct, "NOPE-1"},
		{"bad page token", func() error {
			_, err := f.client.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageToken: "!!"})
			return err
		}, codes.InvalidArgument, rpcerr.ReasonValidation, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if rpcerr.Code(err) != tt.code || rpcerr.Reason(err) != tt.reason {
				t.Fatalf("err = %v (reason %q), want %v %s", err, rpcerr.Reason(err), tt.code, tt.reason)
			}
			if tt.sku != "" && rpcerr.ErrorInfo(err).GetMetadata()["sku"] != tt.sku {
				t.Fatalf("metadata = %v, want sku %s", rpcerr.ErrorInfo(err).GetMetadata(), tt.sku)
			}
		})
	}
	// Releasing an unknown order succeeds without a reservation.
	resp, err := f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: orderID(9)})
	if err != nil || resp.GetReservation() != nil {
		t.Fatalf("release unknown = %v, %v", resp, err)
	}
	f.check(t)
}

func TestReservationPricesAndIdempotency(t *testing.T) {
	t.Parallel()
	f := start(t, sqldbtest.SQLite(t), 3, 10)
	ctx := callCtx(t)
	req := reserve(orderID(1), item("SKU-0002", 2), item("SKU-0001", 1))
	first, err := f.client.ReserveStock(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r := first.GetReservation()
	p1, _ := f.client.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "SKU-0001"})
	p2, _ := f.client.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "SKU-0002"})
	want := 2*p2.GetProduct().GetPriceCents() + p1.GetProduct().GetPriceCents()
	if r.GetStatus() != inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD || r.GetCurrency() != "EUR" ||
		r.GetTotalCents() != want || r.GetLines()[0].GetLineTotalCents() != 2*p2.GetProduct().GetPriceCents() {
		t.Fatalf("reservation = %v, want total %d", r, want)
	}
	again, err := f.client.ReserveStock(ctx, req)
	if err != nil || !proto.Equal(again.GetReservation(), r) {
		t.Fatalf("repeat = %v, %v; want the same reservation", again, err)
	}
	if p2.GetProduct().GetReserved() != 2 || p2.GetProduct().GetAvailable() != 8 {
		t.Fatalf("SKU-0002 = %v", p2.GetProduct())
	}
	f.check(t)
}

func TestListProductsPages(t *testing.T) {
	t.Parallel()
	f := start(t, sqldbtest.SQLite(t), 24, 10)
	ctx := callCtx(t)
	var skus []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("too many pages")
		}
		resp, err := f.client.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageSize: 5, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range resp.GetProducts() {
			skus = append(skus, p.GetSku())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(skus) != 24 || skus[0] != "SKU-0001" || skus[23] != "SKU-0024" {
		t.Fatalf("listed %d: %v", len(skus), skus)
	}
	for i := 1; i < len(skus); i++ {
		if skus[i-1] >= skus[i] {
			t.Fatalf("not in SKU order at %d: %v", i, skus)
		}
	}
}

func TestImportStockReportsBadLines(t *testing.T) {
	t.Parallel()
	f := start(t, sqldbtest.SQLite(t), 2, 10)
	ctx := callCtx(t)
	stream, err := f.client.ImportStock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name, price, cur := "Grinder", int64(4999), "EUR"
	lines := []*inventoryv1.ImportStockRequest{
		{Sku: "SKU-0001", Quantity: 5},
		{Sku: "SKU-0002", Quantity: 0}, // refused by validation
		{Sku: "NEW-0001", Quantity: 3}, // new without name and price
		{Sku: "NEW-0002", Quantity: 4, Name: &name, PriceCents: &price, Currency: &cur},
		{Sku: "bad sku", Quantity: 1}, // refused by validation
		{Sku: "SKU-0002", Quantity: 6, Name: &name},
	}
	for i, l := range lines {
		l.ImportId, l.Seq = "bad-lines", int64(i+1)
		if err := stream.Send(l); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if sum.GetLinesReceived() != 6 || sum.GetLinesApplied() != 3 || sum.GetLinesRejected() != 3 || sum.GetUnitsAdded() != 15 ||
		sum.GetLinesSkipped() != 0 || sum.GetImportId() != "bad-lines" {
		t.Fatalf("summary = %v", sum)
	}
	var rejected []int64
	for _, e := range sum.GetErrors() {
		rejected = append(rejected, e.GetLine())
		if e.GetReason() == "" {
			t.Errorf("line %d has no reason", e.GetLine())
		}
	}
	if fmt.Sprint(rejected) != "[2 3 5]" {
		t.Fatalf("rejected lines %v, want [2 3 5]", rejected)
	}
	f.received["SKU-0001"] += 5
	f.received["SKU-0002"] += 6
	f.received["NEW-0002"] = 4
	f.check(t)
}

func TestWatchStockSendsSnapshotThenNewerChanges(t *testing.T) {
	t.Parallel()
	f := start(t, sqldbtest.SQLite(t), 3, 10)
	ctx := callCtx(t)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := f.client.WatchStock(wctx, &inventoryv1.WatchStockRequest{Skus: []string{"SKU-0002", "SKU-0001"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SKU-0001", "SKU-0002"} {
		m, err := stream.Recv()
		if err != nil || m.GetLevel().GetSku() != want || m.GetLevel().GetVersion() != 1 || m.GetLevel().GetAvailable() != 10 {
			t.Fatalf("snapshot = %v, %v; want %s v1", m, err, want)
		}
	}
	f.feed.push(domain.StockLevel{SKU: "SKU-0001", OnHand: 10, Version: 1})              // stale: dropped
	f.feed.push(domain.StockLevel{SKU: "SKU-0001", OnHand: 10, Reserved: 4, Version: 2}) // newer
	m, err := stream.Recv()
	if err != nil || m.GetLevel().GetVersion() != 2 || m.GetLevel().GetAvailable() != 6 {
		t.Fatalf("change = %v, %v", m, err)
	}
	cancel()
	if _, err := stream.Recv(); rpcerr.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestWatchStockUnknownSKU(t *testing.T) {
	t.Parallel()
	f := start(t, sqldbtest.SQLite(t), 1, 10)
	stream, err := f.client.WatchStock(callCtx(t), &inventoryv1.WatchStockRequest{Skus: []string{"SKU-0001", "NOPE-1"}})
	if err == nil {
		_, err = stream.Recv()
	}
	if rpcerr.Code(err) != codes.NotFound || rpcerr.ErrorInfo(err).GetMetadata()["sku"] != "NOPE-1" {
		t.Fatalf("err = %v, want NOT_FOUND for NOPE-1", err)
	}
}

// TestConcurrentOperationsConserveStock runs 200 clients over loopback gRPC, each reserving a few
// units of overlapping SKUs (some more than exist), then committing or releasing, some twice, and
// checks afterwards that stock is conserved and nothing went negative.
func TestConcurrentOperationsConserveStock(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			f := start(t, b.DSN(t), 4, 60)
			ctx := callCtx(t)
			const clients = 200
			var (
				wg                          sync.WaitGroup
				reserved, outOfStock, other atomic.Int32
			)
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := orderID(i)
					req := reserve(id, item(fmt.Sprintf("SKU-%04d", 1+i%4), int32(1+i%3)), item(fmt.Sprintf("SKU-%04d", 1+(i+1)%4), 1))
					if _, err := f.client.ReserveStock(ctx, req); err != nil {
						if rpcerr.Reason(err) == rpc.ReasonOutOfStock {
							outOfStock.Add(1)
						} else {
							t.Errorf("reserve %d: %v", i, err)
							other.Add(1)
						}
						return
					}
					reserved.Add(1)
					if _, err := f.client.ReserveStock(ctx, req); err != nil { // a retried request
						t.Errorf("re-reserve %d: %v", i, err)
					}
					for range 1 + i%2 { // some settle twice
						var err error
						switch i % 3 {
						case 0:
							_, err = f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: id})
						case 1:
							_, err = f.client.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: id})
						}
						if err != nil {
							t.Errorf("settle %d: %v", i, err)
						}
					}
				}()
			}
			wg.Wait()
			t.Logf("%d clients: %d reserved, %d out of stock, %d other errors", clients, reserved.Load(), outOfStock.Load(), other.Load())
			if reserved.Load() == 0 || outOfStock.Load() == 0 {
				t.Errorf("want both successes and OUT_OF_STOCK refusals to exercise the limit")
			}
			f.check(t)
		})
	}
}
