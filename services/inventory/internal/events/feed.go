package events

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// Feed delivers the StockChanged events of shopmesh.stock.<sku> through core NATS subscriptions, so a
// watcher on any instance sees every change, whichever instance made it. Messages are not persisted
// for it: a watcher too slow to keep up loses intermediate levels, never the fact that levels are
// absolute (each event carries the full level, so the next one corrects the view).
type Feed struct {
	nc     *nats.Conn
	log    *slog.Logger
	tracer trace.Tracer // nil: no spans
}

var _ app.StockFeed = (*Feed)(nil)

// NewFeed returns a feed on nc.
func NewFeed(nc *nats.Conn, log *slog.Logger) *Feed { return &Feed{nc: nc, log: log} }

// Traced makes the feed record a consumer span per delivered change, in the trace of the request that
// made it (the event's traceparent header).
func (f *Feed) Traced(tp trace.TracerProvider) *Feed {
	f.tracer = tp.Tracer("github.com/shopmesh/shopmesh/services/inventory/internal/events")
	return f
}

// span starts the consumer span of one feed message; end it when the message is handed on.
//
//nolint:spancheck // the span is returned: the caller ends it when the message is handed on
func (f *Feed) span(m *nats.Msg) trace.Span {
	if f.tracer == nil {
		return nil
	}
	carrier := propagation.MapCarrier{"traceparent": m.Header.Get("traceparent"), "tracestate": m.Header.Get("tracestate")}
	ctx := propagation.TraceContext{}.Extract(context.Background(), carrier)
	_, span := f.tracer.Start(ctx, StockStream+" receive", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", m.Subject)))
	return span
}

// feedBuffer is how many levels may wait for a watcher before NATS drops them (slow consumer).
const feedBuffer = 1024

// Watch subscribes to the SKUs' subjects (all SKUs when empty). The channel closes when ctx ends.
func (f *Feed) Watch(ctx context.Context, skus []string) (<-chan domain.StockLevel, error) {
	raw := make(chan *nats.Msg, feedBuffer)
	subjects := []string{StockSubject + "*"}
	if len(skus) > 0 {
		subjects = subjects[:0]
		for _, s := range skus {
			subjects = append(subjects, StockSubject+s)
		}
	}
	subs := make([]*nats.Subscription, 0, len(subjects))
	unsubscribe := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, subj := range subjects {
		s, err := f.nc.ChanSubscribe(subj, raw)
		if err != nil {
			unsubscribe()
			return nil, fmt.Errorf("subscribe %s: %w", subj, err)
		}
		subs = append(subs, s)
	}
	// The subscriptions must be registered on the server before the caller reads its snapshot, or a
	// change between the two would be missed.
	if err := f.nc.FlushWithContext(ctx); err != nil {
		unsubscribe()
		return nil, fmt.Errorf("subscribe flush: %w", err)
	}
	out := make(chan domain.StockLevel)
	go func() {
		defer close(out)
		defer unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-raw:
				if span := f.span(m); span != nil {
					span.End()
				}
				var ev eventsv1.StockChanged
				if err := proto.Unmarshal(m.Data, &ev); err != nil {
					f.log.Warn("bad StockChanged on feed", "subject", m.Subject, "err", err)
					continue
				}
				select {
				case out <- LevelOf(&ev):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
