package events_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
)

// Order events that can never apply (undecodable, no order id) are permanent failures, so the
// consumer dead-letters them instead of holding the partition behind them; other event types are
// acknowledged without effect.
func TestOrderHandlerPermanentFailures(t *testing.T) {
	t.Parallel()
	h := events.OrderHandler(nil) // none of these cases reaches the service
	withType := func(typ string, payload []byte) consumer.Message {
		return consumer.Message{ID: "m1", Payload: payload, Headers: map[string]string{events.HeaderEventType: typ}}
	}
	noOrder, _ := proto.Marshal(&eventsv1.OrderCancelled{EventId: "e2"})
	for name, m := range map[string]consumer.Message{
		"undecodable confirmed":   withType("shopmesh.events.v1.OrderConfirmed", []byte{0xff}),
		"undecodable cancelled":   withType("shopmesh.events.v1.OrderCancelled", []byte{0xff}),
		"cancelled without order": withType("shopmesh.events.v1.OrderCancelled", noOrder),
	} {
		if err := h(context.Background(), m); !errors.Is(err, consumer.ErrPermanent) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
	if err := h(context.Background(), withType("shopmesh.events.v1.OrderCreated", []byte{0xff})); err != nil {
		t.Errorf("other event type: %v", err)
	}
}
