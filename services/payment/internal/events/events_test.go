package events_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
)

func TestEncode(t *testing.T) {
	t.Parallel()
	a := domain.Authorization{OrderID: "o1", CustomerID: "c1", Amount: 300, Currency: "EUR", Status: domain.StatusDeclined,
		DeclineReason: domain.DeclineCurrencyMismatch, Version: 1, UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m, err := events.Encode(domain.Event{Type: domain.EventDeclined, Authorization: a})
	if err != nil {
		t.Fatal(err)
	}
	if m.Topic != events.PaymentTopic || m.Key != "o1" || m.Headers[events.HeaderEventType] != "shopmesh.events.v1.PaymentDeclined" {
		t.Fatalf("message = %+v", m)
	}
	var e eventsv1.PaymentDeclined
	if err := proto.Unmarshal(m.Payload, &e); err != nil {
		t.Fatal(err)
	}
	if e.GetEventId() != m.ID || e.GetOrderId() != "o1" || e.GetAggregateVersion() != 1 || e.GetAmountCents() != 300 ||
		e.GetReason() != paymentv1.DeclineReason_DECLINE_REASON_CURRENCY_MISMATCH || !e.GetOccurredAt().AsTime().Equal(a.UpdatedAt) {
		t.Errorf("payload = %v", &e)
	}
	for _, typ := range []domain.EventType{domain.EventAuthorized, domain.EventCaptured, domain.EventVoided} {
		if m, err := events.Encode(domain.Event{Type: typ, Authorization: a}); err != nil || m.Headers[events.HeaderEventType] != "shopmesh.events.v1."+string(typ) {
			t.Errorf("%s: %+v, %v", typ, m, err)
		}
	}
	if _, err := events.Encode(domain.Event{Type: "Refunded"}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("unknown type: %v", err)
	}
}

type recorder struct{ confirmed, cancelled []string }

func (r *recorder) OrderConfirmed(_ context.Context, e app.Confirmation) (app.Outcome, error) {
	r.confirmed = append(r.confirmed, fmt.Sprintf("%s/%s/%s/%d/%s", e.EventID, e.OrderID, e.CustomerID, e.Amount, e.Currency))
	return app.OutcomeApplied, nil
}

func (r *recorder) OrderCancelled(_ context.Context, eventID, orderID string) (app.Outcome, error) {
	r.cancelled = append(r.cancelled, eventID+"/"+orderID)
	return app.OutcomeConflict, nil
}

func TestOrderHandler(t *testing.T) {
	t.Parallel()
	msg := func(m proto.Message) consumer.Message {
		b, _ := proto.Marshal(m)
		return consumer.Message{ID: "hdr-id", Payload: b, Headers: map[string]string{
			events.HeaderEventType: string(m.ProtoReflect().Descriptor().FullName())}}
	}
	r := &recorder{}
	h := events.OrderHandler(r, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	for _, m := range []consumer.Message{
		msg(&eventsv1.OrderConfirmed{EventId: "e1", OrderId: "o1", CustomerId: "c1", TotalCents: 300, Currency: "EUR"}),
		msg(&eventsv1.OrderCancelled{OrderId: "o2"}), // no payload id: the header's stands in
		msg(&eventsv1.OrderCreated{EventId: "e3", OrderId: "o3"}),
	} {
		if err := h(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.confirmed) != 1 || r.confirmed[0] != "e1/o1/c1/300/EUR" || len(r.cancelled) != 1 || r.cancelled[0] != "hdr-id/o2" {
		t.Errorf("confirmed %v cancelled %v", r.confirmed, r.cancelled)
	}
	bad := consumer.Message{ID: "x", Payload: []byte{0xff}, Headers: map[string]string{events.HeaderEventType: "shopmesh.events.v1.OrderConfirmed"}}
	// Both can never apply: permanent, so the consumer dead-letters them instead of holding them.
	if err := h(ctx, bad); !errors.Is(err, consumer.ErrPermanent) {
		t.Errorf("undecodable payload: %v, want a permanent error", err)
	}
	if err := h(ctx, msg(&eventsv1.OrderConfirmed{EventId: "e4"})); !errors.Is(err, consumer.ErrPermanent) {
		t.Errorf("event without order id: %v, want a permanent error", err)
	}
}
