package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
)

// TestRun starts the whole service as the order command does (service.Run of spec()) on a :0 port
// (SQLite, kfake, in-process NATS, fake inventory and payment), places an order while payment is down,
// watches it go PENDING → CONFIRMED once payment is back (recovery worker), finds OrderConfirmed on
// Kafka, and stops cleanly.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	inv := fakes.NewInventory(map[string]fakes.Product{"SKU-A": {Name: "Apple", PriceCents: 150, OnHand: 10}})
	pay := fakes.NewPayment()
	invAddr := fakes.Serve(t, func(s *grpc.Server) { inventoryv1.RegisterInventoryServiceServer(s, inv) })
	payAddr := fakes.Serve(t, func(s *grpc.Server) { paymentv1.RegisterPaymentServiceServer(s, pay) })

	env := map[string]string{
		"ORDER_PROFILE":                        "test",
		"ORDER_LISTEN_ADDR":                    "127.0.0.1:0",
		"ORDER_DSN":                            "sqlite:" + filepath.Join(t.TempDir(), "order.db"),
		"KAFKA_BROKERS":                        strings.Join(kc.ListenAddrs(), ","),
		"NATS_URL":                             ns.ClientURL(),
		"ORDER_TARGETS_INVENTORY_ADDRESSES":    invAddr,
		"ORDER_TARGETS_PAYMENT_ADDRESSES":      payAddr,
		"ORDER_CALL_TIMEOUT":                   "300ms",
		"ORDER_SAGA_TIMEOUT":                   "1s",
		"ORDER_RECOVERY_AFTER":                 "1500ms",
		"ORDER_RECOVERY_INTERVAL":              "100ms",
		"ORDER_WATCH_POLL":                     "10s", // the update must come from NATS, not from polling
		"ORDER_CLIENT_BREAKER_OPEN_TIMEOUT":    "100ms",
		"ORDER_SERVER_SHUTDOWN_TIMEOUT":        "5s",
		"ORDER_TOPIC_PARTITIONS":               "1",
		"ORDER_RELAY_POLL_INTERVAL":            "50ms",
		"ORDER_SERVER_STREAM_DEFAULT_DEADLINE": "30s",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	pr, pw := io.Pipe()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, nil, lookup, pw); _ = pw.Close() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				addr <- line.Addr
			}
		}
	}()
	var target string
	select {
	case target = <-addr:
	case err := <-done:
		t.Fatalf("run ended before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("not serving in time")
	}
	checkHealth(ctx, t, env, target)

	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := orderv1.NewOrderServiceClient(conn)

	pay.SetDown(true)
	created, err := client.CreateOrder(ctx, &orderv1.CreateOrderRequest{CustomerId: "cust-1", IdempotencyKey: "c-1",
		Items: []*orderv1.OrderItem{{Sku: "SKU-A", Quantity: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetOrder().GetId()
	if created.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Fatalf("with payment down: %v", created.GetOrder().GetStatus())
	}
	watch, err := client.WatchOrder(ctx, &orderv1.WatchOrderRequest{OrderId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil {
		t.Fatal(err)
	}
	pay.SetDown(false)
	var seen []string
	seen = append(seen, first.GetOrder().GetStatus().String())
	for {
		m, err := watch.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("watch: %v (seen %v)", err, seen)
		}
		seen = append(seen, m.GetOrder().GetStatus().String())
	}
	want := []string{"ORDER_STATUS_PENDING", "ORDER_STATUS_CONFIRMED"}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("watch saw %v, want %v", seen, want)
	}

	// OrderConfirmed reaches Kafka, keyed by the order id, with its event-type header.
	kcl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ConsumeTopics(events.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer kcl.Close()
	var types []string
	for !contains(types, "shopmesh.events.v1.OrderConfirmed") {
		fetches := kcl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no OrderConfirmed on %s; saw %v", events.Topic, types)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Key) != id {
				return
			}
			for _, h := range r.Headers {
				if h.Key == events.HeaderEventType {
					types = append(types, string(h.Value))
					if string(h.Value) == "shopmesh.events.v1.OrderConfirmed" {
						var ev eventsv1.OrderConfirmed
						if err := proto.Unmarshal(r.Value, &ev); err != nil || ev.GetTotalCents() != 300 || ev.GetAggregateVersion() != 2 {
							t.Errorf("OrderConfirmed %v: %v", &ev, err)
						}
					}
				}
			}
		})
	}

	// A watch of a terminal order yields one message; checkout quotes every edit.
	again, err := client.WatchOrder(ctx, &orderv1.WatchOrderRequest{OrderId: id})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := again.Recv(); err != nil || m.GetOrder().GetVersion() != 2 {
		t.Fatalf("watch terminal: %v %v", m, err)
	}
	if _, err := again.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("watch terminal did not end: %v", err)
	}
	co, err := client.Checkout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	edits := []*orderv1.CheckoutRequest{
		{Edit: &orderv1.CheckoutRequest_SetItem{SetItem: &orderv1.CartSetItem{Sku: "SKU-A", Quantity: 3}}},
		{Edit: &orderv1.CheckoutRequest_SetItem{SetItem: &orderv1.CartSetItem{Sku: "SKU-ZZ", Quantity: 1}}},
		{Edit: &orderv1.CheckoutRequest_Refresh{Refresh: &orderv1.CartRefresh{}}},
		{Edit: &orderv1.CheckoutRequest_SetItem{SetItem: &orderv1.CartSetItem{Sku: "SKU-A", Quantity: 9}}},
	}
	type quote struct {
		total     int64
		orderable bool
		revision  int64
	}
	wantQ := []quote{{450, true, 1}, {450, false, 2}, {450, false, 2}, {1350, false, 3}}
	for i, e := range edits {
		if err := co.Send(e); err != nil {
			t.Fatal(err)
		}
		r, err := co.Recv()
		if err != nil {
			t.Fatal(err)
		}
		q := r.GetQuote()
		if got := (quote{q.GetTotalCents(), q.GetOrderable(), q.GetRevision()}); got != wantQ[i] {
			t.Fatalf("edit %d: quote %+v, want %+v", i, got, wantQ[i])
		}
	}
	_ = co.CloseSend()
	if _, err := co.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("checkout did not end: %v", err)
	}

	// A stop ends the streams still open (a watch of a PENDING order, a checkout session) with
	// UNAVAILABLE "server is shutting down", so their clients reconnect elsewhere, and the command
	// returns nil.
	pay.SetDown(true)
	pending, err := client.CreateOrder(ctx, &orderv1.CreateOrderRequest{CustomerId: "cust-1", IdempotencyKey: "c-2",
		Items: []*orderv1.OrderItem{{Sku: "SKU-A", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	open, err := client.WatchOrder(ctx, &orderv1.WatchOrderRequest{OrderId: pending.GetOrder().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := open.Recv(); err != nil || m.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Fatalf("watch of a pending order: %v %v", m, err)
	}
	session, err := client.Checkout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := session.Send(edits[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := session.Recv(); err != nil {
		t.Fatal(err)
	}

	stop()
	for name, recv := range map[string]func() error{
		"watch":    func() error { _, err := open.Recv(); return err },
		"checkout": func() error { _, err := session.Recv(); return err },
	} {
		if err := recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
			t.Errorf("%s at stop: %v, want UNAVAILABLE: server is shutting down", name, err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
