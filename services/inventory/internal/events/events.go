// Package events connects inventory to its brokers, in one place: topic, stream and subject names,
// StockChanged events into the outbox and the JetStream subject of each one's live copy, the NATS feed
// behind WatchStock, and the handler of the order events inventory consumes.
package events

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
)

// Topics and subjects, as documented in proto/shopmesh/events/v1/events.proto.
const (
	InventoryTopic = "shopmesh.inventory.events"
	OrderTopic     = "shopmesh.order.events"
	StockSubject   = "shopmesh.stock." // + sku
	// StockStream is the JetStream stream capturing StockSubject.*.
	StockStream = "SHOPMESH_STOCK"
	// HeaderEventType carries the payload's full message name.
	HeaderEventType = "event-type"
)

// Outbox writes StockChanged events into the outbox: one row per event, topic InventoryTopic, key the
// SKU. The relay sends each such row to Kafka and its copy to shopmesh.stock.<sku> (see LiveSubject).
type Outbox struct {
	ob *outbox.Outbox
}

var _ store.EventWriter = (*Outbox)(nil)

// NewOutbox returns the event writer on ob.
func NewOutbox(ob *outbox.Outbox) *Outbox {
	return &Outbox{ob: ob}
}

// WriteStockChanges enqueues one StockChanged per change in tx.
func (o *Outbox) WriteStockChanges(ctx context.Context, tx *sql.Tx, changes []domain.StockChange) error {
	msgs, err := messages(changes)
	if err != nil || len(msgs) == 0 {
		return err
	}
	if _, err := o.ob.EnqueueAll(ctx, tx, msgs...); err != nil {
		return fmt.Errorf("enqueue %d StockChanged: %w", len(msgs), err)
	}
	return nil
}

// StockChangesInsert is WriteStockChanges as a statement to send (PostgreSQL only): its SQL and
// arguments, for a store that sends the insert in one round trip with its transaction's COMMIT; an
// empty query when there is no change. It must run in the transaction that made the changes, after
// the statement that locked their products' rows (the relay's per-key order, see
// outbox.Rows.InsertSQL).
func (o *Outbox) StockChangesInsert(ctx context.Context, changes []domain.StockChange) (string, []any, error) {
	msgs, err := messages(changes)
	if err != nil || len(msgs) == 0 {
		return "", nil, err
	}
	rows, err := o.ob.Prepare(ctx, msgs...)
	if err != nil {
		return "", nil, fmt.Errorf("enqueue %d StockChanged: %w", len(msgs), err)
	}
	q, args := rows.InsertSQL(1, "true")
	return q, args, nil
}

// messages encodes one StockChanged outbox message per change.
func messages(changes []domain.StockChange) ([]outbox.Message, error) {
	msgs := make([]outbox.Message, 0, len(changes))
	for _, c := range changes {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("event id: %w", err)
		}
		ev := StockChanged(id.String(), c)
		payload, err := proto.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("marshal StockChanged: %w", err)
		}
		msgs = append(msgs, outbox.Message{
			ID: ev.GetEventId(), Topic: InventoryTopic, Key: c.Level.SKU, Payload: payload,
			Headers: map[string]string{HeaderEventType: string(ev.ProtoReflect().Descriptor().FullName())},
		})
	}
	return msgs, nil
}

// StockChanged encodes a change.
func StockChanged(eventID string, c domain.StockChange) *eventsv1.StockChanged {
	return &eventsv1.StockChanged{
		EventId:          eventID,
		OccurredAt:       timestamppb.New(c.Level.UpdatedAt),
		Sku:              c.Level.SKU,
		AggregateVersion: c.Level.Version,
		OnHand:           c.Level.OnHand,
		Reserved:         c.Level.Reserved,
		Available:        c.Level.Available(),
		Delta:            c.Delta,
		Cause:            eventsv1.StockChangeCause(c.Cause),
		OrderId:          c.OrderID,
	}
}

// LevelOf decodes the stock level a StockChanged carries.
func LevelOf(ev *eventsv1.StockChanged) domain.StockLevel {
	return domain.StockLevel{
		SKU: ev.GetSku(), OnHand: ev.GetOnHand(), Reserved: ev.GetReserved(), Version: ev.GetAggregateVersion(),
		UpdatedAt: ev.GetOccurredAt().AsTime(),
	}
}

// Topics are the Kafka topics inventory writes, to create when missing: its events and the dead
// letters of the order events it consumes. The order topic is the order service's (the consumer
// waits for it).
func Topics(partitions int) []outbox.Topic {
	return []outbox.Topic{
		{Name: InventoryTopic, Partitions: partitions},
		{Name: consumer.DeadLetterTopic(OrderTopic), Partitions: 1},
	}
}

// Stream is the JetStream stream of the live copies: the last levels of each SKU for a day, a resend
// within two minutes de-duplicated by event id.
func Stream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: StockStream, Subjects: []string{StockSubject + "*"}, Storage: jetstream.FileStorage,
		MaxAge: 24 * time.Hour, MaxMsgsPerSubject: 100, Duplicates: 2 * time.Minute,
	}
}

// LiveSubject is the JetStream subject of a row's live copy (outbox.Brokers.Subject): a StockChanged
// row goes to shopmesh.stock.<sku> as well as to Kafka, with the same event id (so JetStream
// de-duplicates a resend by Nats-Msg-Id); any other row goes to Kafka only.
func LiveSubject(m outbox.Message) (string, bool) {
	if m.Topic != InventoryTopic || m.Key == "" || strings.ContainsAny(m.Key, ". *>") {
		return "", false
	}
	return StockSubject + m.Key, true
}
