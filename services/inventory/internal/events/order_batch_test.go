package events_test

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer/consumertest"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
)

// confirmedBatches is the use case of the batch handler, a consumertest.UseCase.
type confirmedBatches struct {
	*consumertest.UseCase[app.Confirmation]
}

func (c confirmedBatches) OnOrderConfirmedBatch(ctx context.Context, es []app.Confirmation) (bool, error) {
	return c.Apply(ctx, es)
}

// The batch handler takes only OrderConfirmed events (and acknowledges other types); anything the
// Handler must decide — an OrderCancelled, a payload it dead-letters, a batch the use case refuses —
// leaves the whole batch to it, never dead-lettered by the batch path.
func TestOrderBatchHandler(t *testing.T) {
	t.Parallel()
	consumertest.BatchVerdicts[app.Confirmation]{
		Handler: func(uc *consumertest.UseCase[app.Confirmation]) consumer.BatchHandler {
			return events.OrderBatchHandler(confirmedBatches{uc})
		},
		TypeHeader: events.HeaderEventType,
		Take: []proto.Message{&eventsv1.OrderConfirmed{EventId: "e1", OrderId: "o1"},
			&eventsv1.OrderConfirmed{OrderId: "o2"}}, // the header's id stands in
		Applied: []app.Confirmation{{EventID: "e1", OrderID: "o1"}, {EventID: consumertest.MessageID, OrderID: "o2"}},
		Ignore:  &eventsv1.OrderCreated{EventId: "e3", OrderId: "o3"},
		LeftToHandler: map[string]proto.Message{
			"an OrderCancelled":               &eventsv1.OrderCancelled{EventId: "e4", OrderId: "o4"},
			"an OrderConfirmed without order": &eventsv1.OrderConfirmed{EventId: "e5"},
		},
	}.Check(t)
}
