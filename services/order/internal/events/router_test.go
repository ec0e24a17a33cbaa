package events_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
)

// With NATS down, the order events other services act on (OrderConfirmed, OrderCancelled) still
// reach Kafka, every one and in order per order; the status events reach NATS once it is back.
// Before the router gave each broker its own relay lane, the batch went to NATS first and Kafka got
// nothing while NATS was down.
func TestRouterNATSOutageDoesNotDelayKafka(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	dsn := sqldbtest.SQLite(t)
	d, err := sqldb.ParseDialect(dsn)
	if err != nil {
		t.Fatal(err)
	}
	src, err := outbox.Migrations(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(ctx, dsn, src, migrate.Options{Table: outbox.MigrationsTable}); err != nil {
		t.Fatal(err)
	}
	db, _ := sqldbtest.Open(t, dsn)

	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	brokers := kc.ListenAddrs()
	if err := outbox.EnsureTopics(ctx, brokers, outbox.Topic{Name: events.Topic, Partitions: 3},
		outbox.Topic{Name: consumer.DeadLetterTopic(events.Topic), Partitions: 1}); err != nil {
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
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: events.StatusStream, Subjects: []string{events.SubjectPrefix + ">"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}

	kp := outbox.NewKafka(brokers)
	t.Cleanup(func() { _ = kp.Close() })
	relay, err := outbox.NewRelay(db, &events.Router{Kafka: kp, JetStream: outbox.NewJetStream(js)}, log, nil,
		outbox.RelayConfig{PollInterval: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, PublishTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// NATS goes away: the relay's publishes to it now fail (no connection) until the test ends.
	ns.Shutdown()
	ns.WaitForShutdown()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = relay.Run(runCtx) }()

	ob := outbox.New(d, nil)
	want := map[string][]string{}
	at := time.Now().UTC()
	for i := range 10 {
		o, err := domain.NewOrder(fmt.Sprint("order-", i), "cust-1", fmt.Sprint("idem-", i),
			[]domain.Line{{SKU: "SKU-1", Quantity: 1, UnitPriceCents: 100, LineTotalCents: 100}}, at)
		if err != nil {
			t.Fatal(err)
		}
		o.Currency = "EUR"
		for _, status := range []domain.Status{domain.Pending, domain.Confirmed} {
			o.Status = status
			msgs, err := events.Messages(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error { _, err := ob.EnqueueAll(ctx, tx, msgs...); return err }); err != nil {
				t.Fatal(err)
			}
			want[o.ID] = append(want[o.ID], msgs[0].ID)
			o.Version++
		}
		relay.Notify()
	}

	var (
		mu  sync.Mutex
		got = map[string][]string{}
		n   int
	)
	c, err := consumer.NewKafka(consumer.KafkaConfig{Brokers: brokers, GroupID: "router-test", Topics: []string{events.Topic},
		MaxWait: 100 * time.Millisecond}, func(_ context.Context, m consumer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got[string(m.Key)] = append(got[string(m.Key)], m.ID)
		n++
		return nil
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Run(runCtx) }()
	for {
		mu.Lock()
		done := n >= 20
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Kafka received %d of 20 order events while NATS was down", n)
		case <-time.After(20 * time.Millisecond):
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, w := range want {
		if !slices.Equal(got[id], w) {
			t.Fatalf("order %s on Kafka: got %v, want %v", id, got[id], w)
		}
	}
}
