package rpc_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/platformtest"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

// A watcher (the gateway's SSE stream) sees every status change of an order through NATS: the store
// writes one outbox row per change, the relay (events.Brokers) publishes it to Kafka and copies it to
// the order's status subject, and the feed wakes WatchOrder. The watch poll is an hour, so nothing
// but the NATS copy can deliver the change in time.
func TestWatchOrderSeesEveryChangeThroughNATS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	if err := outbox.EnsureTopics(ctx, kc.ListenAddrs(), nil, outbox.Topic{Name: events.Topic, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, events.StatusStreamConfig()); err != nil {
		t.Fatal(err)
	}

	dsn := sqldbtest.SQLite(t)
	if err := migrate.UpAll(ctx, dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)
	kp := outbox.NewKafka(kc.ListenAddrs(), nil)
	t.Cleanup(func() { _ = kp.Close() })
	relay, err := outbox.NewRelay(db, events.Brokers(kp, outbox.NewJetStream(js)), discard(), nil,
		outbox.RelayConfig{PollInterval: time.Hour}) // only the after-commit hook wakes it
	if err != nil {
		t.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = relay.Run(relayCtx) }()
	t.Cleanup(func() { stopRelay(); <-relayDone })

	inv := fakes.NewInventory(map[string]fakes.Product{"SKU-A": {Name: "Apple", PriceCents: 150, OnHand: 10}})
	pay := fakes.NewPayment()
	inva := fakes.Serve(t, func(s *grpc.Server) { inventoryv1.RegisterInventoryServiceServer(s, inv) })
	paya := fakes.Serve(t, func(s *grpc.Server) { paymentv1.RegisterPaymentServiceServer(s, pay) })
	cfg := config.Default(config.Test)
	cfg.Service, cfg.ListenAddr = "order", "127.0.0.1:0"
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
		Orders: store.New(db, d, outbox.New(d, nil), store.WithAfterCommit(relay.Notify)),
		Stock:  stock, Catalog: stock, Payment: rpc.NewPaymentClient(paymentv1.NewPaymentServiceClient(pc), 2*time.Second),
		Feed: events.NewFeed(nc), Logger: discard(),
	}, app.Settings{SagaTimeout: 5 * time.Second, RecoveryAfter: time.Minute, GiveUpAfter: time.Hour, RecoveryBatch: 20,
		WatchPoll: time.Hour, SettleAfter: time.Minute, RetryMin: time.Second, RetryMax: time.Minute, StuckAfter: time.Hour, StuckAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	c := orderClient(t, "gateway", "", serveOrder(t, cfg, a))

	// Payment is down: the saga leaves the order PENDING for recovery.
	pay.SetDown(true)
	created, err := c.CreateOrder(as(ctx, "alice"), &orderv1.CreateOrderRequest{CustomerId: "alice", IdempotencyKey: "w-1",
		Items: []*orderv1.OrderItem{{Sku: "SKU-A", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetOrder().GetId()
	watch, err := c.WatchOrder(as(ctx, "alice"), &orderv1.WatchOrderRequest{OrderId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil {
		t.Fatal(err)
	}
	seen := []string{first.GetOrder().GetStatus().String()}
	if _, err := c.CancelOrder(as(ctx, "alice"), &orderv1.CancelOrderRequest{OrderId: id, Reason: "changed my mind"}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := watch.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("watch after %v: %v", seen, err)
		}
		seen = append(seen, m.GetOrder().GetStatus().String())
	}
	if got, want := strings.Join(seen, ","), "ORDER_STATUS_PENDING,ORDER_STATUS_CANCELLED"; got != want {
		t.Fatalf("watch saw %s, want %s", got, want)
	}
}
