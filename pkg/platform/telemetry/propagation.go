package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

// Inject writes ctx's trace context and baggage into headers, e.g. when the
// outbox stores a message, so the consumer's work joins the producer's trace.
func (t *Telemetry) Inject(ctx context.Context, headers map[string]string) {
	if headers == nil {
		return
	}
	t.propagator.Inject(ctx, propagation.MapCarrier(headers))
}

// Extract returns ctx carrying the remote trace context and baggage found in
// headers; start the consumer span from it.
func (t *Telemetry) Extract(ctx context.Context, headers map[string]string) context.Context {
	return t.propagator.Extract(ctx, propagation.MapCarrier(headers))
}
