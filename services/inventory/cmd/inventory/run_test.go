package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
)

// TestRun starts the whole service on :0 ports with SQLite, kfake and an in-process nats-server, and
// drives it like its clients and the order service would.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	brokers := kafka.ListenAddrs()
	env := map[string]string{
		"INVENTORY_PROFILE":             "test",
		"INVENTORY_LISTEN_ADDR":         "127.0.0.1:0",
		"INVENTORY_DSN":                 "sqlite:" + filepath.Join(t.TempDir(), "inventory.db"),
		"INVENTORY_SEED":                "true",
		"INVENTORY_TOPIC_PARTITIONS":    "2",
		"INVENTORY_RELAY_POLL_INTERVAL": "50ms",
		"KAFKA_BROKERS":                 strings.Join(brokers, ","),
		"NATS_URL":                      ns.ClientURL(),
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	logs, addr := logWatcher(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runService(runCtx, nil, lookup, logs) }()
	var target string
	select {
	case target = <-addr:
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("service did not start")
	}
	checkHealth(ctx, t, env, target)
	// The order service owns its topic; it is created only now, after inventory's consumer started
	// (and waits for it), as when inventory starts first in a deployment.
	if err := outbox.EnsureTopics(ctx, brokers, nil, outbox.Topic{Name: events.OrderTopic, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := inventoryv1.NewInventoryServiceClient(conn)

	// Seed: 24 SKUs with 10,000 units each.
	list, err := client.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageSize: 100})
	if err != nil || len(list.GetProducts()) != 24 || list.GetProducts()[0].GetOnHand() != 10_000 {
		t.Fatalf("seeded catalogue = %d products, %v", len(list.GetProducts()), err)
	}

	// A watcher sees the current level first, then the reservation's change, through NATS.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := client.WatchStock(wctx, &inventoryv1.WatchStockRequest{Skus: []string{"SKU-0003"}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetLevel().GetAvailable() != 10_000 {
		t.Fatalf("first level = %v, %v", first, err)
	}

	const orderID = "0190f0c8-3f6e-7a41-9a3b-5d2c1e0f4a21"
	res, err := client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{OrderId: orderID, Items: []*inventoryv1.ReservationItem{
		{Sku: "SKU-0003", Quantity: 7}, {Sku: "SKU-0004", Quantity: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetReservation().GetTotalCents() <= 0 || res.GetReservation().GetCurrency() != "EUR" {
		t.Fatalf("reservation = %v", res.GetReservation())
	}
	change, err := watch.Recv()
	if err != nil || change.GetLevel().GetAvailable() != 9_993 || change.GetLevel().GetReserved() != 7 || change.GetLevel().GetVersion() != 2 {
		t.Fatalf("watched change = %v, %v", change, err)
	}

	// Import: one good line, one bad; sent again, nothing is added.
	for attempt := range 2 {
		imp, err := client.ImportStock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []*inventoryv1.ImportStockRequest{
			{ImportId: "run-test", Seq: 1, Sku: "SKU-0005", Quantity: 50},
			{ImportId: "run-test", Seq: 2, Sku: "NEW-0001", Quantity: 1},
		} {
			if err := imp.Send(l); err != nil {
				t.Fatal(err)
			}
		}
		sum, err := imp.CloseAndRecv()
		applied, skipped, units := int64(1), int64(0), int64(50)
		if attempt == 1 {
			applied, skipped, units = 0, 1, 0
		}
		if err != nil || sum.GetLinesApplied() != applied || sum.GetLinesSkipped() != skipped || sum.GetLinesRejected() != 1 ||
			sum.GetUnitsAdded() != units {
			t.Fatalf("import summary (attempt %d) = %v, %v", attempt+1, sum, err)
		}
	}

	// OrderConfirmed, delivered twice, commits the stock once.
	confirmed := &eventsv1.OrderConfirmed{EventId: "0190f0c8-0000-7000-8000-000000000001", OccurredAt: timestamppb.Now(), OrderId: orderID, AggregateVersion: 3}
	payload, err := proto.Marshal(confirmed)
	if err != nil {
		t.Fatal(err)
	}
	pub := outbox.NewKafka(brokers, nil)
	defer pub.Close()
	msg := outbox.Message{ID: confirmed.GetEventId(), Topic: events.OrderTopic, Key: orderID, Payload: payload,
		Headers: map[string]string{events.HeaderEventType: "shopmesh.events.v1.OrderConfirmed"}}
	for range 2 {
		if err := pub.Publish(ctx, []outbox.Message{msg}); err != nil {
			t.Fatal(err)
		}
	}
	// The watcher sees the commit (on_hand down by 7); nothing else touches SKU-0003.
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("waiting for the commit: %v", err)
		}
		if m.GetLevel().GetOnHand() == 9_993 && m.GetLevel().GetReserved() == 0 {
			break
		}
	}
	// A second delivery must not commit again: send a marker event after both and wait for it to be
	// consumed, then check the levels.
	marker := &eventsv1.OrderCancelled{EventId: "0190f0c8-0000-7000-8000-000000000002", OrderId: "0190f0c8-0000-7000-8000-0000000000ff"}
	mp, _ := proto.Marshal(marker)
	if err := pub.Publish(ctx, []outbox.Message{{ID: marker.GetEventId(), Topic: events.OrderTopic, Key: orderID, Payload: mp,
		Headers: map[string]string{events.HeaderEventType: "shopmesh.events.v1.OrderCancelled"}}}); err != nil {
		t.Fatal(err)
	}
	waitHandled(t, ctx, brokers, 3)
	// The confirmation once, and the marker: cancelling an order with no reservation is an effect too
	// (it leaves a tombstone that refuses a late reserve), so it is recorded.
	if n := inboxCount(t, env["INVENTORY_DSN"]); n != 2 {
		t.Fatalf("inbox holds %d events, want 2 (the confirmation once, the marker)", n)
	}
	for _, want := range []struct {
		sku              string
		onHand, reserved int64
	}{{"SKU-0003", 9_993, 0}, {"SKU-0004", 9_999, 0}, {"SKU-0005", 10_050, 0}} {
		p, err := client.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: want.sku})
		if err != nil || p.GetProduct().GetOnHand() != want.onHand || p.GetProduct().GetReserved() != want.reserved {
			t.Fatalf("%s = %v, %v; want %d/%d", want.sku, p.GetProduct(), err, want.onHand, want.reserved)
		}
	}
	cr, err := client.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: orderID})
	if err != nil || cr.GetReservation().GetStatus() != inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED {
		t.Fatalf("commit after event = %v, %v", cr, err)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// logWatcher is run's stdout: it parses the JSON log lines and reports the address run serves on.
func logWatcher(t *testing.T) (io.Writer, <-chan string) {
	t.Helper()
	pr, pw := io.Pipe()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "serving" {
				addr <- m["addr"].(string)
			}
		}
	}()
	t.Cleanup(func() { _ = pw.Close() })
	return pw, addr
}

// waitHandled waits until the "inventory" group has committed n messages of the order topic: the
// consumer commits a message only after its handler finished, so every delivery has been handled.
func waitHandled(t *testing.T, ctx context.Context, brokers []string, n int64) {
	t.Helper()
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 5 * time.Second}
	var committed int64
	for {
		resp, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{
			GroupID: events.ConsumerGroup, Topics: map[string][]int{events.OrderTopic: {0, 1}},
		})
		if err == nil {
			committed = 0
			for _, p := range resp.Topics[events.OrderTopic] {
				if p.Error == nil && p.CommittedOffset > 0 {
					committed += p.CommittedOffset
				}
			}
			if committed >= n {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group committed %d of %d order events (last error %v)", committed, n, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func inboxCount(t *testing.T, dsn string) int {
	t.Helper()
	db, _ := sqldbtest.Open(t, dsn)
	var n int
	if err := db.QueryRow("SELECT count(*) FROM inbox WHERE consumer = ?", events.ConsumerGroup).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
