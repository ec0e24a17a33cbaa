package events_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
)

// broker records what it was sent; while down it refuses everything, as a broker that cannot be
// reached does.
type broker struct {
	mu   sync.Mutex
	down bool
	got  []outbox.Message
}

func (b *broker) Publish(_ context.Context, msgs []outbox.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return errors.New("no connection")
	}
	b.got = append(b.got, msgs...)
	return nil
}

func (b *broker) subjects() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, len(b.got))
	for i, m := range b.got {
		out[i] = m.Topic + " " + m.ID
	}
	return out
}

func (b *broker) setDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
}

// Through outbox.Brokers with LiveSubject, as the service wires its relay: each StockChanged row
// reaches Kafka once while JetStream is down (before the lanes every retry re-sent it to Kafka), and
// its live copy reaches shopmesh.stock.<sku> once JetStream is back.
func TestRelayDeliversKafkaWhileJetStreamIsDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := sqldbtest.SQLite(t)
	d, _ := sqldb.ParseDialect(dsn)
	src, err := outbox.Migrations(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(ctx, dsn, src, migrate.Options{Table: outbox.MigrationsTable}); err != nil {
		t.Fatal(err)
	}
	db, _ := sqldbtest.Open(t, dsn)
	kafka, js := &broker{}, &broker{down: true}
	relay, err := outbox.NewRelay(db, outbox.Brokers{Kafka: kafka, JetStream: js, Subject: events.LiveSubject}, slog.New(slog.DiscardHandler), nil, outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w := events.NewOutbox(outbox.New(d, nil))
	at := time.Now().UTC()
	if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		return w.WriteStockChanges(ctx, tx, []domain.StockChange{
			{Level: domain.StockLevel{SKU: "SKU-1", OnHand: 5, Version: 2, UpdatedAt: at}, Delta: 5},
			{Level: domain.StockLevel{SKU: "SKU-2", OnHand: 3, Version: 2, UpdatedAt: at}, Delta: 3},
		})
	}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := relay.RelayOnce(ctx); err == nil {
			t.Fatal("RelayOnce with JetStream down: no error")
		}
	}
	// Once each: Kafka's progress is its own, so JetStream's failures do not re-send to Kafka.
	got := kafka.subjects()
	if len(got) != 2 || got[0][:len(events.InventoryTopic)] != events.InventoryTopic {
		t.Fatalf("kafka got %v while JetStream was down, want both StockChanged once", got)
	}
	js.setDown(false)
	if n, err := relay.RelayOnce(ctx); err != nil || n != 2 {
		t.Fatalf("RelayOnce after JetStream is back = %d, %v; want the 2 live copies", n, err)
	}
	ids := make([]string, len(kafka.got))
	for i, m := range kafka.got {
		ids[i] = m.ID
	}
	want := []string{events.StockSubject + "SKU-1 " + ids[0], events.StockSubject + "SKU-2 " + ids[1]}
	if live := js.subjects(); !slices.Equal(live, want) {
		t.Fatalf("jetstream got %v, want %v", live, want)
	}
	if n, err := relay.RelayOnce(ctx); err != nil || n != 0 {
		t.Fatalf("third RelayOnce = %d, %v; want nothing left", n, err)
	}
}
