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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform"
	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
)

// A reservation made while the service drains (SIGTERM received, the server still taking calls for
// the drain delay) still gets its StockChanged out, to Kafka and to its JetStream subject, before the
// process exits: the relay outlives the drain instead of stopping when it starts. A WatchStock stream
// open at the time is ended by the drain with UNAVAILABLE SHUTTING_DOWN.
func TestReservationDuringDrainIsPublished(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers, natsURL := brokers(t)
	env := map[string]string{
		"INVENTORY_PROFILE":             "test",
		"INVENTORY_LISTEN_ADDR":         "127.0.0.1:0",
		"INVENTORY_DSN":                 "sqlite:" + filepath.Join(t.TempDir(), "inventory.db"),
		"INVENTORY_SEED":                "true",
		"INVENTORY_SEED_PRODUCTS":       "2",
		"INVENTORY_TOPIC_PARTITIONS":    "1",
		"INVENTORY_RELAY_POLL_INTERVAL": "50ms",
		// Long enough for the call below to land inside it on a loaded machine.
		"INVENTORY_SERVER_DRAIN_DELAY": "5s",
		"KAFKA_BROKERS":                strings.Join(brokers, ","),
		"NATS_URL":                     natsURL,
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	logs := watchLogs(t, "serving", "shutting down")
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runService(runCtx, nil, lookup, logs.w) }()
	var target string
	select {
	case line := <-logs.seen["serving"]:
		target = line["addr"].(string)
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("service did not start")
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := inventoryv1.NewInventoryServiceClient(conn)
	watch, err := client.WatchStock(ctx, &inventoryv1.WatchStockRequest{Skus: []string{"SKU-0002"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}

	stop()
	select {
	case <-logs.seen["shutting down"]:
	case <-ctx.Done():
		t.Fatal("no drain after cancel")
	}
	const orderID = "0190f0c8-3f6e-7a41-9a3b-5d2c1e0f4a99"
	if _, err := client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{OrderId: orderID,
		Items: []*inventoryv1.ReservationItem{{Sku: "SKU-0001", Quantity: 3}}}); err != nil {
		t.Fatalf("reserve during the drain (is the drain delay too short for this machine?): %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after the drain")
	}

	// The watch was ended by the drain, telling its client to reconnect elsewhere.
	if _, err := watch.Recv(); rpcerr.Code(err) != codes.Unavailable || rpcerr.Reason(err) != platform.ReasonShuttingDown {
		t.Errorf("watch after the drain: %v; want UNAVAILABLE %s", err, platform.ReasonShuttingDown)
	}

	// The process is gone: what the brokers hold now is all it published.
	var inKafka bool
	for _, m := range topicMessages(ctx, t, brokers[0], events.InventoryTopic) {
		var ev eventsv1.StockChanged
		if proto.Unmarshal(m.Value, &ev) == nil && ev.GetOrderId() == orderID && ev.GetSku() == "SKU-0001" && ev.GetReserved() == 3 {
			inKafka = true
		}
	}
	if !inKafka {
		t.Error("the StockChanged of the reservation made during the drain is not in Kafka")
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, events.StockStream)
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, events.StockSubject+"SKU-0001")
	if err != nil {
		t.Fatalf("last %sSKU-0001: %v", events.StockSubject, err)
	}
	var ev eventsv1.StockChanged
	if err := proto.Unmarshal(last.Data, &ev); err != nil || ev.GetOrderId() != orderID {
		t.Errorf("last live copy of SKU-0001 is %v (%v), want the reservation made during the drain", &ev, err)
	}
}

// brokers starts an in-memory Kafka (kfake) and an in-process nats-server with JetStream for one test.
func brokers(t *testing.T) (kafka []string, natsURL string) {
	t.Helper()
	k, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return k.ListenAddrs(), ns.ClientURL()
}

// topicMessages reads every message partition 0 of topic holds.
func topicMessages(ctx context.Context, t *testing.T, broker, topic string) []kafkago.Message {
	t.Helper()
	conn, err := kafkago.DialLeader(ctx, "tcp", broker, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	end, err := conn.ReadLastOffset()
	if err != nil {
		t.Fatal(err)
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{broker}, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var out []kafkago.Message
	for int64(len(out)) < end {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s after %d of %d messages: %v", topic, len(out), end, err)
		}
		out = append(out, m)
		if m.Offset >= end-1 {
			break
		}
	}
	return out
}

// logs is a service's stdout: it parses the JSON log lines and hands over the first line of each
// message it was asked to watch.
type logs struct {
	w    io.Writer
	seen map[string]chan map[string]any
}

func watchLogs(t *testing.T, msgs ...string) logs {
	t.Helper()
	pr, pw := io.Pipe()
	l := logs{w: pw, seen: map[string]chan map[string]any{}}
	for _, m := range msgs {
		l.seen[m] = make(chan map[string]any, 1)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			msg, _ := m["msg"].(string)
			if ch, ok := l.seen[msg]; ok {
				select {
				case ch <- m:
				default:
				}
			}
		}
		_ = pr.CloseWithError(errors.New("log reader stopped"))
	}()
	t.Cleanup(func() { _ = pw.Close() })
	return l
}

// runService runs the inventory command as main does, without the process.
func runService(ctx context.Context, args []string, lookup platformcfg.Lookup, stdout io.Writer) error {
	return service.Run(ctx, spec(), args, service.Env{Lookup: lookup, Stdout: stdout})
}
