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
	"math/rand/v2"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/propagation"

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

// handle runs h once under a deadline, detached from the stop signal, with the trace context of the
// message's headers.
func handle(ctx context.Context, h Handler, prop propagation.TextMapPropagator, timeout time.Duration, m Message) error {
	hctx := prop.Extract(context.WithoutCancel(ctx), propagation.MapCarrier(m.Headers))
	hctx, cancel := context.WithTimeout(hctx, timeout)
	defer cancel()
	err := h(hctx, m)
	if errors.Is(err, inbox.ErrAlreadyProcessed) {
		return nil
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
