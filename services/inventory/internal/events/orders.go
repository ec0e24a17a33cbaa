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

// eventID prefers the payload's id, which is the same on every delivery and every broker.
func eventID(m consumer.Message, payloadID string) string {
	if payloadID != "" {
		return payloadID
	}
	return m.ID
}
