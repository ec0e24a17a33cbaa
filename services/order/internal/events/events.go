// Package events turns order state changes into the broker messages other services and watchers
// consume: protobuf payloads from eventsv1 on the Kafka topic shopmesh.order.events (keyed by order id),
// written once through the outbox, and their copies on the JetStream subject
// shopmesh.order.status.<order_id> that the relay derives from the same row (Brokers). It also feeds
// WatchOrder from NATS.
package events

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// Broker names, as documented in proto/shopmesh/events/v1/events.proto.
const (
	Topic         = "shopmesh.order.events"
	SubjectPrefix = "shopmesh.order.status."
	// StatusStream is the JetStream stream capturing every order status subject.
	StatusStream = "SHOPMESH_ORDER_STATUS"
	// HeaderEventType carries the payload's full message name.
	HeaderEventType = "event-type"
)

// Subject is the NATS subject of one order's status changes.
func Subject(orderID string) string { return SubjectPrefix + orderID }

// StatusStreamConfig returns the JetStream stream capturing every status subject; JetStream drops a copy
// the relay sends again within Duplicates (same event id, Nats-Msg-Id).
func StatusStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: StatusStream, Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute, MaxAge: 24 * time.Hour,
	}
}

// Brokers is the outbox relay's publisher: every row to Kafka, and its status copy (StatusSubject) to
// JetStream, each broker on its own lane, so a NATS outage never delays the Kafka events other
// services act on (OrderConfirmed, OrderCancelled), nor the reverse. Rows written by older versions
// for NATS alone (topic shopmesh.order.status.<id>) still go to JetStream only.
func Brokers(kafka, jetStream outbox.Publisher) outbox.Brokers {
	return outbox.Brokers{Kafka: kafka, JetStream: jetStream, Subject: StatusSubject, NATSPrefix: SubjectPrefix}
}

// StatusSubject is the subject of the JetStream copy of an order event (Message's row): the order's
// status subject; the payload and headers are the Kafka event's, which the feed decodes.
func StatusSubject(m outbox.Message) (string, bool) {
	if m.Topic != Topic || m.Key == "" {
		return "", false
	}
	return Subject(m.Key), true
}

// Message returns the outbox message announcing o's current state: OrderCreated for a new order,
// OrderConfirmed or OrderCancelled for a terminal one. It is one row, for Kafka; Brokers derives its
// copy on the order's status subject.
func Message(o domain.Order) (outbox.Message, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return outbox.Message{}, fmt.Errorf("event id: %w", err)
	}
	eventID := id.String()
	at := timestamppb.New(o.UpdatedAt)
	var msg proto.Message
	switch o.Status {
	case domain.Pending:
		msg = &eventsv1.OrderCreated{
			EventId: eventID, OccurredAt: at, OrderId: o.ID, AggregateVersion: o.Version,
			CustomerId: o.CustomerID, Items: Lines(o.Lines), TotalCents: o.TotalCents, Currency: o.Currency,
		}
	case domain.Confirmed:
		msg = &eventsv1.OrderConfirmed{
			EventId: eventID, OccurredAt: at, OrderId: o.ID, AggregateVersion: o.Version,
			CustomerId: o.CustomerID, TotalCents: o.TotalCents, Currency: o.Currency,
		}
	case domain.Cancelled:
		msg = &eventsv1.OrderCancelled{
			EventId: eventID, OccurredAt: at, OrderId: o.ID, AggregateVersion: o.Version,
			CustomerId: o.CustomerID, Reason: CancelReason(o.CancelReason), Detail: o.CancelDetail,
		}
	default:
		return outbox.Message{}, fmt.Errorf("event for status %q", o.Status)
	}
	payload, err := proto.Marshal(msg)
	if err != nil {
		return outbox.Message{}, fmt.Errorf("encode %T: %w", msg, err)
	}
	headers := map[string]string{HeaderEventType: string(msg.ProtoReflect().Descriptor().FullName())}
	return outbox.Message{ID: eventID, Topic: Topic, Key: o.ID, Payload: payload, Headers: headers}, nil
}

// Lines converts order lines to their proto form.
func Lines(lines []domain.Line) []*orderv1.OrderLine {
	out := make([]*orderv1.OrderLine, len(lines))
	for i, l := range lines {
		out[i] = &orderv1.OrderLine{
			Sku: l.SKU, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents, LineTotalCents: l.LineTotalCents,
		}
	}
	return out
}

// CancelReason converts a domain cancel reason to its proto form.
func CancelReason(r domain.CancelReason) orderv1.CancelReason {
	switch r {
	case domain.OutOfStock:
		return orderv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK
	case domain.UnknownProduct:
		return orderv1.CancelReason_CANCEL_REASON_UNKNOWN_PRODUCT
	case domain.PaymentDeclined:
		return orderv1.CancelReason_CANCEL_REASON_PAYMENT_DECLINED
	case domain.CustomerRequested:
		return orderv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUESTED
	case domain.DependencyFailed:
		return orderv1.CancelReason_CANCEL_REASON_DEPENDENCY_FAILED
	}
	return orderv1.CancelReason_CANCEL_REASON_UNSPECIFIED
}

// Version returns the aggregate_version of an encoded order event named by its event-type header.
func Version(eventType string, payload []byte) (int64, error) {
	var msg interface {
		proto.Message
		GetAggregateVersion() int64
	}
	switch eventType {
	case string((&eventsv1.OrderCreated{}).ProtoReflect().Descriptor().FullName()):
		msg = &eventsv1.OrderCreated{}
	case string((&eventsv1.OrderConfirmed{}).ProtoReflect().Descriptor().FullName()):
		msg = &eventsv1.OrderConfirmed{}
	case string((&eventsv1.OrderCancelled{}).ProtoReflect().Descriptor().FullName()):
		msg = &eventsv1.OrderCancelled{}
	default:
		return 0, fmt.Errorf("unknown order event type %q", eventType)
	}
	if err := proto.Unmarshal(payload, msg); err != nil {
		return 0, fmt.Errorf("decode %s: %w", eventType, err)
	}
	return msg.GetAggregateVersion(), nil
}
