// Package events connects inventory to its brokers: StockChanged events into the outbox, a publisher
// that fans each one out to Kafka and to its JetStream subject, the NATS feed behind WatchStock, and
// the handler of the order events inventory consumes.
package events

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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
// SKU. The Fanout publisher sends each such row to Kafka and to shopmesh.stock.<sku>.
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
	msgs := make([]outbox.Message, 0, len(changes))
	for _, c := range changes {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("event id: %w", err)
		}
		ev := StockChanged(id.String(), c)
		payload, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal StockChanged: %w", err)
		}
		msgs = append(msgs, outbox.Message{
			ID: ev.GetEventId(), Topic: InventoryTopic, Key: c.Level.SKU, Payload: payload,
			Headers: map[string]string{HeaderEventType: string(ev.ProtoReflect().Descriptor().FullName())},
		})
	}
	if len(msgs) == 0 {
		return nil
	}
	if _, err := o.ob.EnqueueAll(ctx, tx, msgs...); err != nil {
		return fmt.Errorf("enqueue %d StockChanged: %w", len(msgs), err)
	}
	return nil
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

// Fanout publishes InventoryTopic rows to Kafka and, for live views, to shopmesh.stock.<key> on
// JetStream, with the same event id (the JetStream copy is de-duplicated by Nats-Msg-Id). Any other
// topic goes to Kafka only. As an outbox.Router it gives the relay one lane per broker (Kafka lane 0,
// NATS lane 1; fixed while rows are pending), so either broker's outage leaves the other's events
// flowing, each at least once.
type Fanout struct {
	Kafka     outbox.Publisher
	JetStream outbox.Publisher
}

var _ outbox.Router = Fanout{}

// Destinations returns the Kafka lane and, when JetStream is set, the NATS lane.
func (f Fanout) Destinations() []outbox.Destination {
	d := []outbox.Destination{{Lane: 0, Name: "kafka", Publisher: f.Kafka}}
	if f.JetStream != nil {
		d = append(d, outbox.Destination{Lane: 1, Name: "nats", Publisher: f.JetStream, Route: liveCopy})
	}
	return d
}

// liveCopy is the JetStream copy of a StockChanged row.
func liveCopy(m outbox.Message) (outbox.Message, bool) {
	if m.Topic != InventoryTopic || m.Key == "" || strings.ContainsAny(m.Key, ". *>") {
		return m, false
	}
	m.Topic = StockSubject + m.Key
	return m, true
}

// Publish sends msgs to Kafka, then their live copies to JetStream (tools and tests; the relay uses
// the lanes).
func (f Fanout) Publish(ctx context.Context, msgs []outbox.Message) error {
	return outbox.Fanout(f.Destinations()).Publish(ctx, msgs)
}
