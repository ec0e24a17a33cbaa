// Package consumer runs the loops that feed broker messages to an event handler — a Kafka consumer
// group and a JetStream durable consumer — with the same contract: a message is acknowledged only after
// its handler succeeded, failures are retried with backoff, a message that keeps failing goes to
// "<topic>.dlq" with the reason in its headers and the stream moves on, and stopping finishes the
// message in hand but acknowledges nothing it has not processed. Delivery is at least once; handlers
// make their effect idempotent with the inbox package (inbox.ErrAlreadyProcessed counts as success).
package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// Headers set on a dead-lettered message, next to the original ones.
const (
	HeaderDLQReason   = "dlq-reason"
	HeaderDLQAttempts = "dlq-attempts"
	HeaderDLQTopic    = "dlq-topic"
	HeaderDLQPosition = "dlq-position"
)

// DeadLetterTopic is where messages of topic (or subject) go after the last failed attempt.
func DeadLetterTopic(topic string) string { return topic + ".dlq" }

// Message is one delivered event.
type Message struct {
	// ID is the event id (outbox.HeaderEventID); without one, the broker position stands in.
	ID      string
	Topic   string
	Key     []byte
	Payload []byte
	Headers map[string]string
	// Attempt counts deliveries of this message to the handler, from 1.
	Attempt int
}

// Handler applies one message. Returning nil (or inbox.ErrAlreadyProcessed) acknowledges it; any other
// error is retried. Its ctx carries the producer's trace context and a deadline, and is not cancelled
// when the consumer is asked to stop: the message in hand is finished.
type Handler func(ctx context.Context, m Message) error

// Retry is the policy for failing messages. The zero value gets the defaults.
type Retry struct {
	// MaxAttempts is how many times a message is handled before it is dead-lettered (default 5).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential, jittered wait between attempts
	// (defaults 100 ms and 10 s).
	MinBackoff, MaxBackoff time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 5
	}
	if r.MinBackoff <= 0 {
		r.MinBackoff = 100 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 10 * time.Second
	}
	return r
}

// backoff is the wait after the attempt-th failure: doubling from MinBackoff, jittered ±20%.
func (r Retry) backoff(attempt int) time.Duration {
	d := r.MinBackoff
	for i := 1; i < attempt && d < r.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.MaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Observe is what a consumer reports; the zero value reports nothing.
type Observe struct {
	// TracerProvider starts a consumer span per handled delivery, child of the trace found in the
	// message headers (the producer's publish span), so the handler's work joins the order's trace.
	TracerProvider trace.TracerProvider
	// Metrics receives the shopmesh_consumer_* families; consumers of one process share them.
	Metrics prometheus.Registerer
}

// observer is an Observe made ready: a tracer and the metric families, either possibly absent.
type observer struct {
	tracer  trace.Tracer
	handled *prometheus.CounterVec // consumer, topic, outcome
	lag     *prometheus.GaugeVec   // consumer, topic, partition
}

func (o Observe) build() (*observer, error) {
	ob := &observer{}
	if o.TracerProvider != nil {
		ob.tracer = o.TracerProvider.Tracer("github.com/shopmesh/shopmesh/pkg/platform/consumer")
	}
	if o.Metrics == nil {
		return ob, nil
	}
	var err error
	ob.handled, err = register(o.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shopmesh_consumer_messages_total",
		Help: "Handler outcomes per delivery: ok, retry (failed, will be redelivered) or dead_lettered.",
	}, []string{"consumer", "topic", "outcome"}))
	if err != nil {
		return nil, err
	}
	ob.lag, err = register(o.Metrics, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "shopmesh_consumer_lag_messages",
		Help: "Messages after the one last handled: Kafka high watermark per partition, JetStream pending.",
	}, []string{"consumer", "topic", "partition"}))
	if err != nil {
		return nil, err
	}
	return ob, nil
}

func (ob *observer) outcome(consumer, topic, outcome string) {
	if ob.handled != nil {
		ob.handled.WithLabelValues(consumer, topic, outcome).Inc()
	}
}

func (ob *observer) setLag(consumer, topic, partition string, lag int64) {
	if ob.lag != nil {
		ob.lag.WithLabelValues(consumer, topic, partition).Set(float64(max(lag, 0)))
	}
}

// register returns the collector already registered under c's name, so several consumers of one
// process can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("consumer metrics: %w", err)
	}
	return c, nil
}

// handle runs h once under a deadline, detached from the stop signal, with the trace context of the
// message's headers, inside a consumer span when tracing is on.
// dest names the span: the Kafka topic, or the JetStream stream (subjects carry ids).
func handle(ctx context.Context, h Handler, prop propagation.TextMapPropagator, ob *observer, system, dest, group string,
	timeout time.Duration, m Message) error {
	hctx := prop.Extract(context.WithoutCancel(ctx), propagation.MapCarrier(m.Headers))
	var span trace.Span
	if ob.tracer != nil {
		hctx, span = ob.tracer.Start(hctx, dest+" process",
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.system", system),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", dest),
				attribute.String("messaging.consumer.group.name", group),
				attribute.String("messaging.message.id", m.ID),
				attribute.Int("messaging.delivery.attempt", m.Attempt),
			))
		defer span.End()
	}
	hctx, cancel := context.WithTimeout(hctx, timeout)
	defer cancel()
	err := h(hctx, m)
	if errors.Is(err, inbox.ErrAlreadyProcessed) {
		if span != nil {
			span.SetAttributes(attribute.Bool("shopmesh.inbox.duplicate", true))
		}
		return nil
	}
	if err != nil && span != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "handler failed")
	}
	return err
}

// sleep waits d or until ctx is done, reporting whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func deadLetterHeaders(m Message, reason error, attempts int, position string) map[string]string {
	h := make(map[string]string, len(m.Headers)+4)
	for k, v := range m.Headers {
		h[k] = v
	}
	if m.ID != "" {
		h[outbox.HeaderEventID] = m.ID
	}
	msg := reason.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	h[HeaderDLQReason] = msg
	h[HeaderDLQAttempts] = strconv.Itoa(attempts)
	h[HeaderDLQTopic] = m.Topic
	h[HeaderDLQPosition] = position
	return h
}
