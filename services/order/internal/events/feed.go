package events

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/services/order/internal/app"
)

// flushTimeout bounds the round trip that makes a new subscription effective.
const flushTimeout = 5 * time.Second

// Feed delivers order status notifications from NATS core subscriptions on shopmesh.order.status.<id>;
// JetStream publishes reach core subscribers too, so every instance sees every change.
type Feed struct {
	nc     *nats.Conn
	tracer trace.Tracer // nil: no spans
}

var _ app.StatusFeed = (*Feed)(nil)

// NewFeed returns a feed on nc.
func NewFeed(nc *nats.Conn) *Feed { return &Feed{nc: nc} }

// Traced makes the feed record a consumer span per notification, in the trace of the request that
// changed the order (the event's traceparent header).
func (f *Feed) Traced(tp trace.TracerProvider) *Feed {
	f.tracer = tp.Tracer("github.com/shopmesh/shopmesh/services/order/internal/events")
	return f
}

// Subscribe implements app.StatusFeed. A notification that cannot be decoded is delivered as the
// largest version, which makes the watcher re-read the order.
func (f *Feed) Subscribe(_ context.Context, orderID string) (<-chan int64, func(), error) {
	ch := make(chan int64, 8)
	sub, err := f.nc.Subscribe(Subject(orderID), func(m *nats.Msg) {
		if f.tracer != nil {
			carrier := propagation.MapCarrier{"traceparent": m.Header.Get("traceparent"), "tracestate": m.Header.Get("tracestate")}
			ctx := propagation.TraceContext{}.Extract(context.Background(), carrier)
			_, span := f.tracer.Start(ctx, StatusStream+" receive", trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(attribute.String("messaging.system", "nats"),
					attribute.String("messaging.destination.name", m.Subject)))
			defer span.End()
		}
		v, err := Version(m.Header.Get(HeaderEventType), m.Data)
		if err != nil {
			v = math.MaxInt64
		}
		select {
		case ch <- v:
		default: // the watcher is behind; its next re-read sees the latest state anyway
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe %s: %w", Subject(orderID), err)
	}
	// The subscription must be registered on the server before the caller reads the current state.
	if err := f.nc.FlushTimeout(flushTimeout); err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, fmt.Errorf("subscribe %s: flush: %w", Subject(orderID), err)
	}
	return ch, func() { _ = sub.Unsubscribe() }, nil
}
