// Package events connects payment to the brokers, in one place: the topic names (Topics: the ones
// payment creates), the encoding of payment events as eventsv1 protobuf outbox messages for the topic
// shopmesh.payment.events (Encode, written by Outbox in the change's transaction), and the decoding of
// order events consumed from shopmesh.order.events into use-case calls (OrderHandler, and
// OrderBatchHandler for a fetched batch). Payment
// publishes to Kafka only: no JetStream copies.
package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
	"github.com/shopmesh/shopmesh/services/payment/internal/store"
)

// Kafka topics, as documented in proto/shopmesh/events/v1/events.proto.
const (
	PaymentTopic = "shopmesh.payment.events"
	OrderTopic   = "shopmesh.order.events"
	// HeaderEventType carries the payload's full message name.
	HeaderEventType = "event-type"
)

// Topics are the Kafka topics payment writes, to create when missing: its events and the dead letters
// of the order events it consumes. The order topic is the order service's (the consumer waits for it).
func Topics(partitions int) []outbox.Topic {
	return []outbox.Topic{
		{Name: PaymentTopic, Partitions: partitions},
		{Name: consumer.DeadLetterTopic(OrderTopic), Partitions: 1},
	}
}

// Outbox writes payment events into the outbox (Encode's message, one row per event) in the
// transaction of the change they announce; the relay sends each row to Kafka.
type Outbox struct {
	ob *outbox.Outbox
}

var _ store.EventWriter = (*Outbox)(nil)

// NewOutbox returns the event writer on ob.
func NewOutbox(ob *outbox.Outbox) *Outbox { return &Outbox{ob: ob} }

// WriteEvent implements store.EventWriter.
func (o *Outbox) WriteEvent(ctx context.Context, tx *sql.Tx, e domain.Event) error {
	m, err := Encode(e)
	if err != nil {
		return fmt.Errorf("encode %s: %w", e.Type, err)
	}
	if _, err := o.ob.Enqueue(ctx, tx, m); err != nil {
		return fmt.Errorf("enqueue %s: %w", e.Type, err)
	}
	return nil
}

var _ store.EventPreparer = (*Outbox)(nil)

// PrepareEvents implements store.EventPreparer: Encode's messages as outbox rows for the store's own
// statement.
func (o *Outbox) PrepareEvents(ctx context.Context, evs ...domain.Event) (outbox.Rows, error) {
	msgs := make([]outbox.Message, len(evs))
	for i, e := range evs {
		m, err := Encode(e)
		if err != nil {
			return outbox.Rows{}, fmt.Errorf("encode %s: %w", e.Type, err)
		}
		msgs[i] = m
	}
	rows, err := o.ob.Prepare(ctx, msgs...)
	if err != nil {
		return outbox.Rows{}, fmt.Errorf("prepare events: %w", err)
	}
	return rows, nil
}

// Encode turns a payment event into its outbox message: key = order id, event-type header = the
// eventsv1 message name, payload event_id = the outbox event id.
func Encode(e domain.Event) (outbox.Message, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return outbox.Message{}, fmt.Errorf("event id: %w", err)
	}
	a := e.Authorization
	at := timestamppb.New(a.UpdatedAt)
	var m proto.Message
	switch e.Type {
	case domain.EventAuthorized:
		m = &eventsv1.PaymentAuthorized{EventId: id.String(), OccurredAt: at, OrderId: a.OrderID,
			AggregateVersion: a.Version, CustomerId: a.CustomerID, AmountCents: a.Amount, Currency: a.Currency}
	case domain.EventDeclined:
		m = &eventsv1.PaymentDeclined{EventId: id.String(), OccurredAt: at, OrderId: a.OrderID,
			AggregateVersion: a.Version, CustomerId: a.CustomerID, AmountCents: a.Amount, Currency: a.Currency,
			Reason: DeclineReason(a.DeclineReason)}
	case domain.EventCaptured:
		m = &eventsv1.PaymentCaptured{EventId: id.String(), OccurredAt: at, OrderId: a.OrderID,
			AggregateVersion: a.Version, CustomerId: a.CustomerID, AmountCents: a.Amount, Currency: a.Currency}
	case domain.EventVoided:
		m = &eventsv1.PaymentVoided{EventId: id.String(), OccurredAt: at, OrderId: a.OrderID,
			AggregateVersion: a.Version, CustomerId: a.CustomerID, AmountCents: a.Amount, Currency: a.Currency}
	default:
		return outbox.Message{}, fmt.Errorf("event type %q: %w", e.Type, errors.ErrUnsupported)
	}
	payload, err := proto.Marshal(m)
	if err != nil {
		return outbox.Message{}, fmt.Errorf("marshal %s: %w", e.Type, err)
	}
	return outbox.Message{
		ID:      id.String(),
		Topic:   PaymentTopic,
		Key:     a.OrderID,
		Payload: payload,
		Headers: map[string]string{HeaderEventType: string(m.ProtoReflect().Descriptor().FullName())},
	}, nil
}

// DeclineReason maps the domain's decline reason to the contract's.
func DeclineReason(r domain.DeclineReason) paymentv1.DeclineReason {
	switch r {
	case domain.DeclineInsufficientFunds:
		return paymentv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS
	case domain.DeclineAccountNotFound:
		return paymentv1.DeclineReason_DECLINE_REASON_ACCOUNT_NOT_FOUND
	case domain.DeclineCurrencyMismatch:
		return paymentv1.DeclineReason_DECLINE_REASON_CURRENCY_MISMATCH
	}
	return paymentv1.DeclineReason_DECLINE_REASON_UNSPECIFIED
}

// OrderEvents is what the order-event handler needs from the use cases.
type OrderEvents interface {
	OrderConfirmed(ctx context.Context, e app.Confirmation) (app.Outcome, error)
	OrderCancelled(ctx context.Context, eventID, orderID string) (app.Outcome, error)
}

var _ OrderEvents = (*app.App)(nil)

// errUndecodable marks a payload that will never decode. It is permanent: the consumer dead-letters it
// at once instead of holding the partition behind it.
var errUndecodable = consumer.Permanent(errors.New("undecodable order event"))

// OrderHandler applies OrderConfirmed (capture) and OrderCancelled (void) through the inbox; other
// order events are acknowledged without effect. Conflicts (a confirmed order whose payment was voided)
// are logged: retrying would not resolve them.
func OrderHandler(uc OrderEvents, log *slog.Logger) consumer.Handler {
	orderConfirmed := (&eventsv1.OrderConfirmed{}).ProtoReflect().Descriptor().FullName()
	orderCancelled := (&eventsv1.OrderCancelled{}).ProtoReflect().Descriptor().FullName()
	return func(ctx context.Context, m consumer.Message) error {
		var (
			orderID, eventID string
			apply            func(context.Context, string, string) (app.Outcome, error)
		)
		switch protoreflect.FullName(m.Headers[HeaderEventType]) {
		case orderConfirmed:
			var e eventsv1.OrderConfirmed
			if err := proto.Unmarshal(m.Payload, &e); err != nil {
				return fmt.Errorf("%s %s: %w: %w", orderConfirmed, m.ID, errUndecodable, err)
			}
			orderID, eventID = e.GetOrderId(), e.GetEventId()
			apply = func(ctx context.Context, eventID, orderID string) (app.Outcome, error) {
				return uc.OrderConfirmed(ctx, app.Confirmation{EventID: eventID, OrderID: orderID,
					CustomerID: e.GetCustomerId(), Amount: e.GetTotalCents(), Currency: e.GetCurrency()})
			}
		case orderCancelled:
			var e eventsv1.OrderCancelled
			if err := proto.Unmarshal(m.Payload, &e); err != nil {
				return fmt.Errorf("%s %s: %w: %w", orderCancelled, m.ID, errUndecodable, err)
			}
			orderID, eventID, apply = e.GetOrderId(), e.GetEventId(), uc.OrderCancelled
		default:
			return nil
		}
		if eventID == "" {
			eventID = m.ID
		}
		if orderID == "" {
			return fmt.Errorf("event %s has no order id: %w", eventID, errUndecodable)
		}
		outcome, err := apply(ctx, eventID, orderID)
		if err != nil {
			return err
		}
		level := slog.LevelDebug
		if outcome == app.OutcomeConflict {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "order event applied", "event_type", m.Headers[HeaderEventType], "event_id", eventID,
			"order_id", orderID, "outcome", string(outcome))
		return nil
	}
}

// OrderBatchEvents is what the batch handler needs from the use cases.
type OrderBatchEvents interface {
	OrderConfirmedBatch(ctx context.Context, es []app.Confirmation) (done bool, err error)
}

var _ OrderBatchEvents = (*app.App)(nil)

// OrderBatchHandler applies a batch of order events at once when it holds only the common case: the
// OrderConfirmed events, whose captures OrderConfirmedBatch does in one transaction, and events of
// other types, acknowledged without effect as OrderHandler does. Any OrderCancelled, any payload that
// does not decode, any OrderConfirmed without its order, or one OrderConfirmedBatch refuses, leaves
// the whole batch to OrderHandler (consumer.ErrNotBatched), which applies, reports and dead-letters
// them one by one; the batch path itself never dead-letters.
func OrderBatchHandler(uc OrderBatchEvents, log *slog.Logger) consumer.BatchHandler {
	orderConfirmed := (&eventsv1.OrderConfirmed{}).ProtoReflect().Descriptor().FullName()
	orderCancelled := (&eventsv1.OrderCancelled{}).ProtoReflect().Descriptor().FullName()
	return func(ctx context.Context, ms []consumer.Message) error {
		es := make([]app.Confirmation, 0, len(ms))
		for _, m := range ms {
			switch protoreflect.FullName(m.Headers[HeaderEventType]) {
			case orderConfirmed:
			case orderCancelled:
				return consumer.ErrNotBatched
			default:
				continue
			}
			var e eventsv1.OrderConfirmed
			if err := proto.Unmarshal(m.Payload, &e); err != nil || e.GetOrderId() == "" {
				return consumer.ErrNotBatched
			}
			eventID := e.GetEventId()
			if eventID == "" {
				eventID = m.ID
			}
			es = append(es, app.Confirmation{EventID: eventID, OrderID: e.GetOrderId(), CustomerID: e.GetCustomerId(),
				Amount: e.GetTotalCents(), Currency: e.GetCurrency()})
		}
		if len(es) == 0 {
			return nil
		}
		done, err := uc.OrderConfirmedBatch(ctx, es)
		switch {
		case err != nil:
			return err
		case !done:
			return consumer.ErrNotBatched
		}
		if log.Enabled(ctx, slog.LevelDebug) {
			for _, e := range es {
				log.DebugContext(ctx, "order event applied", "event_type", string(orderConfirmed), "event_id", e.EventID,
					"order_id", e.OrderID, "outcome", string(app.OutcomeApplied), "batch", len(ms))
			}
		}
		return nil
	}
}
