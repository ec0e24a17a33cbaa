package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
)

const (
	orderA = "00000000-0000-4000-8000-00000000000a"
	orderB = "00000000-0000-4000-8000-00000000000b"
	orderC = "00000000-0000-4000-8000-00000000000c"
	orderD = "00000000-0000-4000-8000-00000000000d"
)

// TestRun starts the whole service as main does (service.Run with spec()) on a loopback port, an
// SQLite file and an in-process Kafka (kfake), drives the gRPC API, feeds it order events (one
// OrderConfirmed delivered twice) and stops it by cancelling the context.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	brokers := cluster.ListenAddrs()
	dbPath := filepath.Join(t.TempDir(), "payment.db")
	env := map[string]string{
		"PAYMENT_PROFILE":             "dev",
		"PAYMENT_LISTEN_ADDR":         "127.0.0.1:0",
		"PAYMENT_DSN":                 "sqlite:" + dbPath,
		"PAYMENT_SEED":                "true",
		"PAYMENT_RELAY_POLL_INTERVAL": "50ms",
		"PAYMENT_CONSUMER_MAX_WAIT":   "100ms",
		"KAFKA_BROKERS":               brokers[0],
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	logs, logw := io.Pipe()
	serving := make(chan servingLine, 1)
	go scanServing(logs, serving)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, nil, lookup, logw)
		_ = logw.Close()
	}()
	var target string
	select {
	case line := <-serving:
		target = line.Addr
		// The platform's lines carry the service's name (set once by the service package).
		if line.Service != "payment" {
			t.Errorf("serving line's service = %q, want payment", line.Service)
		}
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("service never served")
	}
	checkHealth(ctx, t, env, target)
	// The order service owns its topic; it is created only now, after payment's consumer started (and
	// waits for it), as when payment starts first in a deployment.
	if err := outbox.EnsureTopics(ctx, brokers, nil, outbox.Topic{Name: events.OrderTopic, Partitions: 3}); err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := paymentv1.NewPaymentServiceClient(conn)
	account := func(id string) *paymentv1.Account {
		t.Helper()
		resp, err := c.GetAccount(ctx, &paymentv1.GetAccountRequest{CustomerId: id})
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		return resp.GetAccount()
	}
	authorize := func(order, customer string, amount int64) *paymentv1.Authorization {
		t.Helper()
		resp, err := c.AuthorizePayment(ctx, &paymentv1.AuthorizePaymentRequest{OrderId: order, CustomerId: customer, AmountCents: amount, Currency: "EUR"})
		if err != nil {
			t.Fatalf("authorize %s: %v", order, err)
		}
		return resp.GetAuthorization()
	}

	// Seeded accounts.
	if a := account("cust-0001"); a.GetBalanceCents() != 10_000_000 || a.GetAvailableCents() != 10_000_000 {
		t.Fatalf("cust-0001 = %v", a)
	}
	if a := account("cust-1000"); a.GetBalanceCents() != 10_000_000 {
		t.Fatalf("cust-1000 = %v", a)
	}
	// Authorize, capture, void over gRPC; cust-broke is declined.
	if a := authorize(orderA, "cust-0001", 2_500); a.GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED {
		t.Fatalf("authorize A = %v", a)
	}
	if resp, err := c.CapturePayment(ctx, &paymentv1.CapturePaymentRequest{OrderId: orderA}); err != nil ||
		resp.GetAuthorization().GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED {
		t.Fatalf("capture A = %v, %v", resp, err)
	}
	if a := authorize(orderD, "cust-0001", 700); a.GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED {
		t.Fatalf("authorize D = %v", a)
	}
	if resp, err := c.VoidPayment(ctx, &paymentv1.VoidPaymentRequest{OrderId: orderD}); err != nil ||
		resp.GetAuthorization().GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED {
		t.Fatalf("void D = %v, %v", resp, err)
	}
	if a := authorize(orderC, "cust-broke", 1); a.GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_DECLINED ||
		a.GetDeclineReason() != paymentv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS {
		t.Fatalf("broke = %v", a)
	}
	if a := account("cust-0001"); a.GetBalanceCents() != 10_000_000-2_500 || a.GetHeldCents() != 0 {
		t.Fatalf("cust-0001 after capture and void = %v", a)
	}

	// Order events: B is confirmed twice with one event id (a redelivery); a cancellation of an order
	// without payment, sent after them on the same partition, marks that both were consumed.
	if a := authorize(orderB, "cust-0002", 4_000); a.GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED {
		t.Fatalf("authorize B = %v", a)
	}
	confirmed := orderEvent(t, &eventsv1.OrderConfirmed{EventId: "evt-confirm-b", OccurredAt: timestamppb.Now(),
		OrderId: orderB, AggregateVersion: 3, CustomerId: "cust-0002", TotalCents: 4_000, Currency: "EUR"}, orderB)
	marker := orderEvent(t, &eventsv1.OrderCancelled{EventId: "evt-marker", OccurredAt: timestamppb.Now(),
		OrderId: "00000000-0000-4000-8000-0000000000ff", AggregateVersion: 2}, orderB)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	for _, m := range []kafka.Message{confirmed, confirmed, marker} {
		if err := w.WriteMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	db, _, err := sqldb.Open(ctx, "sqlite:"+dbPath, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFor(t, ctx, db, "SELECT count(*) FROM inbox WHERE event_id = 'evt-marker'", 1)
	if a := account("cust-0002"); a.GetBalanceCents() != 10_000_000-4_000 || a.GetHeldCents() != 0 {
		t.Errorf("cust-0002 after a twice-delivered confirmation = %v, want one capture of 4000", a)
	}
	if n := count(t, ctx, db, "SELECT count(*) FROM ledger_entries WHERE order_id = ? AND kind = 'DEBIT'", orderB); n != 1 {
		t.Errorf("debits of B = %d, want 1", n)
	}
	if n := count(t, ctx, db, "SELECT count(*) FROM inbox WHERE consumer = 'payment'"); n != 2 {
		t.Errorf("inbox records = %d, want 2 (the confirmation once, the marker)", n)
	}
	// Every payment event reaches Kafka: A 2, D 2, C 1, B 2.
	waitFor(t, ctx, db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0)
	got := readPaymentEvents(t, ctx, brokers, 7)
	want := map[string]int{orderA: 2, orderB: 2, orderC: 1, orderD: 2}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("payment events for %s = %d, want %d (all: %v)", k, got[k], n, got)
		}
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not stop")
	}
}

func orderEvent(t *testing.T, m proto.Message, key string) kafka.Message {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Topic: events.OrderTopic, Key: []byte(key), Value: b, Headers: []kafka.Header{
		{Key: events.HeaderEventType, Value: []byte(m.ProtoReflect().Descriptor().FullName())},
	}}
}

// servingLine is the platform's "serving" log line.
type servingLine struct{ Msg, Addr, Service string }

// scanServing finds the platform's "serving" log line, then keeps draining the logs.
func scanServing(r io.Reader, serving chan<- servingLine) {
	sc := bufio.NewScanner(r)
	sent := false
	for sc.Scan() {
		var line servingLine
		if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
			serving <- line
			sent = true
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func count(t *testing.T, ctx context.Context, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// waitFor polls q until it counts want, within ctx.
func waitFor(t *testing.T, ctx context.Context, db *sql.DB, q string, want int) {
	t.Helper()
	for {
		if count(t, ctx, db, q) == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never counted %d", q, want)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readPaymentEvents reads n messages of the payment topic and counts them by key, checking headers.
func readPaymentEvents(t *testing.T, ctx context.Context, brokers []string, n int) map[string]int {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: "component-test", GroupTopics: []string{events.PaymentTopic},
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	got := map[string]int{}
	for range n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read payment events (%v so far): %v", got, err)
		}
		headers := map[string]string{}
		for _, h := range m.Headers {
			headers[h.Key] = string(h.Value)
		}
		if headers[outbox.HeaderEventID] == "" || headers[events.HeaderEventType] == "" {
			t.Errorf("event without id or type headers: %v", headers)
		}
		got[string(m.Key)]++
	}
	return got
}
