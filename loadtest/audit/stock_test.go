package audit_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

// stockOnKafka moves w's stock histories from the outbox to inventory's topic, as a relay that
// deletes sent rows leaves them, sending the first event of each product twice (at least once) and,
// before since, an older run's event of the same product and version.
func stockOnKafka(t *testing.T, brokers []string, w *world, since time.Time, change func(sku string, version int, delta int64) int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "shopmesh.inventory.events", RequiredAcks: kafka.RequireAll,
		Balancer: &kafka.Hash{}, BatchTimeout: 10 * time.Millisecond}
	defer func() { _ = kw.Close() }()
	var msgs []kafka.Message
	add := func(ev *eventsv1.StockChanged, at time.Time) {
		payload, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Key: []byte(ev.GetSku()), Value: payload, Time: at})
	}
	for i := range w.products {
		p := &w.products[i]
		add(&eventsv1.StockChanged{EventId: uuid.NewString(), Sku: p.sku, AggregateVersion: 1, Delta: 7, Cause: imported},
			since.Add(-time.Hour))
		for v, h := range p.history {
			ev := &eventsv1.StockChanged{EventId: uuid.NewString(), Sku: p.sku, AggregateVersion: int64(v + 1),
				Delta: change(p.sku, v+1, h.delta), Cause: h.cause}
			add(ev, since.Add(time.Second))
			if v == 0 {
				add(ev, since.Add(2*time.Second))
			}
		}
		p.history = nil
	}
	if err := kw.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

// The relay deletes outbox rows once sent: with Kafka, the audit reads each product's stock history
// from inventory's topic (each event once, this run's only) and checks conservation on it.
func TestStockHistoryFromKafka(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(sku string, version int, delta int64) int64
		ok     bool
	}{
		{"consistent", func(_ string, _ int, d int64) int64 { return d }, true},
		{"an event says more than happened", func(sku string, v int, d int64) int64 {
			if sku == "SKU-2" && v == 3 {
				return d + 1
			}
			return d
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "shopmesh.inventory.events"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cluster.Close)
			w := consistent()
			w.dlqSince = time.Now().UTC().Add(-time.Minute)
			stockOnKafka(t, cluster.ListenAddrs(), w, w.dlqSince, tc.change)
			r := runAudit(t, write(t, sqldbtest.SQLite, w), w, cluster.ListenAddrs()...)
			if len(r.Notes) != 0 {
				t.Fatalf("notes %v: the history on Kafka was not used", r.Notes)
			}
			if r.OK() != tc.ok || (!tc.ok && !hasViolation(r, "stock: SKU-2: its events add up")) {
				t.Fatalf("OK %v, violations %v; want OK %v", r.OK(), r.Violations, tc.ok)
			}
		})
	}
}
