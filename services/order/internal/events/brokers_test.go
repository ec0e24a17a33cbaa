package events_test

import (
	"context"
	"database/sql"
	"fmt"
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
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

// rig is an order database (every schema), a Kafka cluster with the order topic, a NATS server with
// the status stream, and a relay of the database's outbox through events.Brokers.
type rig struct {
	db      *sql.DB
	ob      *outbox.Outbox
	brokers []string
	ns      *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	relay   *outbox.Relay
}

func newRig(ctx context.Context, t *testing.T) *rig {
	t.Helper()
	dsn := sqldbtest.SQLite(t)
	if err := migrate.UpAll(ctx, dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)

	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	brokers := kc.ListenAddrs()
	if err := outbox.EnsureTopics(ctx, brokers, nil, outbox.Topic{Name: events.Topic, Partitions: 3},
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
	if _, err := js.CreateOrUpdateStream(ctx, events.StatusStreamConfig()); err != nil {
		t.Fatal(err)
	}

	kp := outbox.NewKafka(brokers, nil)
	t.Cleanup(func() { _ = kp.Close() })
	relay, err := outbox.NewRelay(db, events.Brokers(kp, outbox.NewJetStream(js)), slog.New(slog.DiscardHandler), nil,
		outbox.RelayConfig{PollInterval: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, PublishTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{db: db, ob: outbox.New(d, nil), brokers: brokers, ns: ns, nc: nc, js: js, relay: relay}
}

// run runs the relay until the test ends.
func (r *rig) run(ctx context.Context, t *testing.T) {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.relay.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
}

// enqueue writes msgs to the outbox in one transaction and wakes the relay.
func (r *rig) enqueue(ctx context.Context, t *testing.T, msgs ...outbox.Message) {
	t.Helper()
	if err := sqldb.InTx(ctx, r.db, func(tx *sql.Tx) error { _, err := r.ob.EnqueueAll(ctx, tx, msgs...); return err }); err != nil {
		t.Fatal(err)
	}
	r.relay.Notify()
}

// kafkaEvents collects the event ids that reach the order topic, by order id.
type kafkaEvents struct {
	mu  sync.Mutex
	got map[string][]string
	n   int
}

func (r *rig) consumeKafka(ctx context.Context, t *testing.T, group string) *kafkaEvents {
	t.Helper()
	k := &kafkaEvents{got: map[string][]string{}}
	c, err := consumer.NewKafka(consumer.KafkaConfig{Brokers: r.brokers, GroupID: group, Topics: []string{events.Topic},
		MaxWait: 100 * time.Millisecond}, func(_ context.Context, m consumer.Message) error {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.got[string(m.Key)] = append(k.got[string(m.Key)], m.ID)
		k.n++
		return nil
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	return k
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func newOrder(t *testing.T, id string) domain.Order {
	t.Helper()
	o, err := domain.NewOrder(id, "cust-1", "idem-"+id,
		[]domain.Line{{SKU: "SKU-1", Quantity: 1, UnitPriceCents: 100, LineTotalCents: 100}}, time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	o.Currency = "EUR"
	return o
}

// One outbox row per event reaches both brokers: the event on Kafka, and its copy, with the same event
// id, payload and event-type header, on the order's status subject, where the WatchOrder feed sees
// every version. Before, each event took two rows (one per broker).
func TestOneRowReachesKafkaAndTheStatusSubject(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(ctx, t)
	r.run(ctx, t)
	k := r.consumeKafka(ctx, t, "one-row")

	o := newOrder(t, "order-1")
	versions, unsubscribe, err := events.NewFeed(r.nc).Subscribe(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribe()

	var ids []string
	for _, status := range []domain.Status{domain.Pending, domain.Confirmed} {
		o.Status = status
		m, err := events.Message(o)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
		r.enqueue(ctx, t, m)
		select {
		case v := <-versions:
			if v != o.Version {
				t.Fatalf("feed saw version %d, want %d (%s)", v, o.Version, status)
			}
		case <-ctx.Done():
			t.Fatalf("the feed never saw %s", status)
		}
		o.Version++
	}
	waitFor(ctx, t, "both events on Kafka", func() bool { k.mu.Lock(); defer k.mu.Unlock(); return k.n >= 2 })
	k.mu.Lock()
	if !slices.Equal(k.got[o.ID], ids) {
		t.Fatalf("Kafka got %v, want %v", k.got[o.ID], ids)
	}
	k.mu.Unlock()
	// Each row is deleted once both brokers have it.
	waitFor(ctx, t, "the outbox emptied", func() bool {
		var rows int
		return r.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&rows) == nil && rows == 0
	})

	// The stream holds the copies under the events' ids (JetStream drops a resend by Nats-Msg-Id).
	cons, err := r.js.OrderedConsumer(ctx, events.StatusStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.Subject(o.ID)}})
	if err != nil {
		t.Fatal(err)
	}
	var streamIDs []string
	for range ids {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("status stream after %v: %v", streamIDs, err)
		}
		v, err := events.Version(msg.Headers().Get(events.HeaderEventType), msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(len(streamIDs) + 1); v != want {
			t.Errorf("copy %d carries version %d, want %d", len(streamIDs), v, want)
		}
		streamIDs = append(streamIDs, msg.Headers().Get(nats.MsgIdHdr))
	}
	if !slices.Equal(streamIDs, ids) {
		t.Fatalf("status stream ids %v, want the event ids %v", streamIDs, ids)
	}
}

// A row written for NATS alone by the previous version (two rows per event: the status row's topic
// is the subject) still reaches the status subject after an upgrade, and never Kafka.
func TestOldStatusRowsGoToJetStreamOnly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(ctx, t)
	k := r.consumeKafka(ctx, t, "old-rows")

	o := newOrder(t, "order-old")
	m, err := events.Message(o)
	if err != nil {
		t.Fatal(err)
	}
	old := m
	old.ID, old.Topic = m.ID+".status", events.Subject(o.ID)
	versions, unsubscribe, err := events.NewFeed(r.nc).Subscribe(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribe()
	r.enqueue(ctx, t, old)
	r.run(ctx, t)
	select {
	case v := <-versions:
		if v != o.Version {
			t.Fatalf("feed saw version %d, want %d", v, o.Version)
		}
	case <-ctx.Done():
		t.Fatal("the old status row never reached NATS")
	}
	// A later event of the same order on Kafka, and nothing before it.
	o.Status, o.Version = domain.Confirmed, o.Version+1
	next, err := events.Message(o)
	if err != nil {
		t.Fatal(err)
	}
	r.enqueue(ctx, t, next)
	waitFor(ctx, t, "the new event on Kafka", func() bool { k.mu.Lock(); defer k.mu.Unlock(); return k.n >= 1 })
	k.mu.Lock()
	defer k.mu.Unlock()
	if !slices.Equal(k.got[o.ID], []string{next.ID}) {
		t.Fatalf("Kafka got %v, want only %s", k.got[o.ID], next.ID)
	}
}

// With NATS down, the order events other services act on (OrderConfirmed, OrderCancelled) still
// reach Kafka, every one and in order per order: each broker has its own relay lane.
func TestNATSOutageDoesNotDelayKafka(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(ctx, t)
	// NATS goes away: the relay's publishes to it now fail (no connection) until the test ends.
	r.ns.Shutdown()
	r.ns.WaitForShutdown()
	r.run(ctx, t)

	want := map[string][]string{}
	for i := range 10 {
		o := newOrder(t, fmt.Sprint("order-", i))
		for _, status := range []domain.Status{domain.Pending, domain.Confirmed} {
			o.Status = status
			m, err := events.Message(o)
			if err != nil {
				t.Fatal(err)
			}
			r.enqueue(ctx, t, m)
			want[o.ID] = append(want[o.ID], m.ID)
			o.Version++
		}
	}
	k := r.consumeKafka(ctx, t, "outage")
	waitFor(ctx, t, "20 order events on Kafka while NATS is down", func() bool { k.mu.Lock(); defer k.mu.Unlock(); return k.n >= 20 })
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, w := range want {
		if !slices.Equal(k.got[id], w) {
			t.Fatalf("order %s on Kafka: got %v, want %v", id, k.got[id], w)
		}
	}
}
