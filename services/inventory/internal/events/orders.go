package events

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
)

// ConsumerGroup is inventory's Kafka consumer group and inbox name.
const ConsumerGroup = "inventory"

// OrderHandler turns order events into stock effects: OrderConfirmed commits the order's reservation,
// OrderCancelled releases it; other order events are acknowledged and ignored. An event that does not
// decode or names no order is a permanent failure (dead-lettered); any other error is transient and
// the consumer holds the event until it applies.
func OrderHandler(svc *app.App) consumer.Handler {
	confirmed := string((&eventsv1.OrderConfirmed{}).ProtoReflect().Descriptor().FullName())
	cancelled := string((&eventsv1.OrderCancelled{}).ProtoReflect().Descriptor().FullName())
	return func(ctx context.Context, m consumer.Message) error {
		switch m.Headers[HeaderEventType] {
		case confirmed:
			var ev eventsv1.OrderConfirmed
			if err := proto.Unmarshal(m.Payload, &ev); err != nil {
				return consumer.Permanent(fmt.Errorf("decode OrderConfirmed: %w", err))
			}
			if ev.GetOrderId() == "" {
				return consumer.Permanent(fmt.Errorf("OrderConfirmed %s has no order id", eventID(m, ev.GetEventId())))
			}
			return svc.OnOrderConfirmed(ctx, eventID(m, ev.GetEventId()), ev.GetOrderId())
		case cancelled:
			var ev eventsv1.OrderCancelled
			if err := proto.Unmarshal(m.Payload, &ev); err != nil {
				return consumer.Permanent(fmt.Errorf("decode OrderCancelled: %w", err))
			}
			if ev.GetOrderId() == "" {
				return consumer.Permanent(fmt.Errorf("OrderCancelled %s has no order id", eventID(m, ev.GetEventId())))
			}
			return svc.OnOrderCancelled(ctx, eventID(m, ev.GetEventId()), ev.GetOrderId())
		}
		return nil
	}
}

// OrderBatchEvents is what the batch handler needs from the use cases.
type OrderBatchEvents interface {
	OnOrderConfirmedBatch(ctx context.Context, es []app.Confirmation) (done bool, err error)
}

var _ OrderBatchEvents = (*app.App)(nil)

// OrderBatchHandler applies a batch of order events at once when it holds only the common case: the
// OrderConfirmed events, whose commits OnOrderConfirmedBatch makes in one transaction, and events of
// other types, acknowledged without effect as OrderHandler does. Any OrderCancelled, any payload that
// does not decode, any OrderConfirmed without its order, or a batch OnOrderConfirmedBatch refuses,
// leaves the whole batch to OrderHandler (consumer.ErrNotBatched), which applies, reports and
// dead-letters them one by one; the batch path itself never dead-letters.
func OrderBatchHandler(uc OrderBatchEvents) consumer.BatchHandler {
	confirmed := string((&eventsv1.OrderConfirmed{}).ProtoReflect().Descriptor().FullName())
	cancelled := string((&eventsv1.OrderCancelled{}).ProtoReflect().Descriptor().FullName())
	return func(ctx context.Context, ms []consumer.Message) error {
		es := make([]app.Confirmation, 0, len(ms))
		for _, m := range ms {
			switch m.Headers[HeaderEventType] {
			case confirmed:
			case cancelled:
				return consumer.ErrNotBatched
			default:
				continue
			}
			var ev eventsv1.OrderConfirmed
			if err := proto.Unmarshal(m.Payload, &ev); err != nil || ev.GetOrderId() == "" {
				return consumer.ErrNotBatched
			}
			es = append(es, app.Confirmation{EventID: eventID(m, ev.GetEventId()), OrderID: ev.GetOrderId()})
		}
		if len(es) == 0 {
			return nil
		}
		done, err := uc.OnOrderConfirmedBatch(ctx, es)
		switch {
		case err != nil:
			return err
		case !done:
			return consumer.ErrNotBatched
		}
		return nil
	}
}

// eventID prefers the payload's id, which is the same on every delivery and every broker.
func eventID(m consumer.Message, payloadID string) string {
	if payloadID != "" {
		return payloadID
	}
	return m.ID
}
