// Package consumer runs the loops that feed broker messages to an event handler — a Kafka consumer
// group and a JetStream durable consumer — with one contract:
//
//   - A message is acknowledged only after its handler succeeded or it was dead-lettered; stopping
//     finishes the message in hand but acknowledges nothing it has not settled.
//   - A failure is transient unless the handler marks it permanent (Permanent, ErrPermanent). A
//     transient failure (database or broker unreachable, deadline, serialization conflict, anything
//     not known to be permanent) is retried without limit, with capped, jittered exponential backoff,
//     and the message is held meanwhile: the consumer does not move past it, so a partition (Kafka) or
//     the consumer instance (JetStream) keeps its order. Retry.MaxAttempts can cap this; by default it
//     does not, because an event dead-lettered during a database outage is an effect silently lost.
//   - A permanent failure, or a handler panic, goes to "<topic>.dlq" (JetStream: "<subject>.dlq") with
//     the reason in its headers, and the stream moves on. The dlq subpackage and the dlq command list
//     and replay dead letters.
//   - JetStream counts deliveries on the server: a message delivered more than Retry.MaxDeliveries
//     times without being settled (its consumer crashed or was stopped while handling it, again and
//     again) is dead-lettered before the handler sees it again. Kafka keeps no delivery count: there a
//     handler panic is caught and dead-lettered, but a message that kills the process otherwise (out of
//     memory, a fatal runtime error) is redelivered to the next member each time; the held gauge and
//     the lag show the stuck partition.
//
// Delivery is at least once; handlers make their effect idempotent with the inbox package
// (inbox.ErrAlreadyProcessed counts as success).
//
// A Kafka consumer can also apply a batch in one call (KafkaConfig.Batch, a BatchHandler; JetStream
// consumers do not batch): after each fetch it takes the messages kafka-go already has ready, up to
// KafkaConfig.MaxBatch, and when there are several it calls the BatchHandler once with all of them —
// a lone message goes to the Handler as always. The batch is all or none: on nil every message is
// applied and their offsets are committed together; on any error (ErrNotBatched, a failure, a panic)
// none is, and the Handler gets the same messages one at a time, in order, with the retries, holds and
// dead letters above. Effects stay exactly once because a BatchHandler commits the effects and inbox
// records of the whole batch in one transaction, or nothing; the one-at-a-time path after it is the
// inbox-deduplicated one; and no offset is committed before the effects it covers. A failed batch
// costs one extra call and is logged at WARN (ErrNotBatched at DEBUG). shopmesh_consumer_messages_total
// stays per message: an applied batch counts ok once for each of its messages, a failed one nothing
// (the Handler's calls after it count as always).
//
// Metrics (Observe.Metrics): shopmesh_consumer_messages_total{consumer,topic,outcome} per handler call
// (ok, retry, dead_lettered); shopmesh_consumer_dead_lettered_total{consumer,topic,cause} per dead
// letter written (cause: permanent, max_attempts, max_deliveries) — alert on any increase;
// shopmesh_consumer_held_messages{consumer,topic} messages currently held in retry and
// shopmesh_consumer_held_oldest_seconds{consumer,topic} since when the oldest of them has been failing
// — alert when it stays above a few minutes; shopmesh_consumer_lag_messages.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
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
	// HeaderDLQCause is why the message was dead-lettered: one of the Cause values.
	HeaderDLQCause = "dlq-cause"
	// HeaderDLQConsumer names the consumer group (Kafka) or durable (JetStream) that gave up on it.
	HeaderDLQConsumer = "dlq-consumer"
	// HeaderDLQTime is when it was dead-lettered, RFC 3339 in UTC.
	HeaderDLQTime = "dlq-time"
)

// Causes of a dead letter (HeaderDLQCause, label cause of shopmesh_consumer_dead_lettered_total).
const (
	// CausePermanent: the handler returned a permanent error, or panicked.
	CausePermanent = "permanent"
	// CauseMaxAttempts: transient failures reached Retry.MaxAttempts (only when it is set).
	CauseMaxAttempts = "max_attempts"
	// CauseMaxDeliveries: JetStream delivered it more than Retry.MaxDeliveries times without it being
	// settled — the consumer crashed or stopped while handling it, each time.
	CauseMaxDeliveries = "max_deliveries"
)

// DeadLetterTopic is where messages of topic (or subject) go when they cannot be applied.
func DeadLetterTopic(topic string) string { return topic + ".dlq" }

// ErrPermanent marks a failure that no retry can fix (an undecodable or invalid event): the message
// is dead-lettered at once. Test with errors.Is; mark with Permanent.
var ErrPermanent = errors.New("permanent failure")

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{ErrPermanent, e.err} }

// Permanent marks err as permanent (errors.Is(err, ErrPermanent) holds, and err stays reachable with
// errors.Is/As). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// Message is one delivered event.
type Message struct {
	// ID is the event id (outbox.HeaderEventID); without one, the broker position stands in.
	ID      string
	Topic   string
	Key     []byte
	Payload []byte
	Headers map[string]string
	// Attempt counts handler calls for this delivery, from 1.
	Attempt int
	// Delivery is how many times the broker has delivered the message, from 1: JetStream's count
	// (above 1 after a crash or a stop while it was in hand); Kafka keeps none and says 1.
	Delivery int
}

// Handler applies one message. Returning nil (or inbox.ErrAlreadyProcessed) acknowledges it; an error
// marked Permanent dead-letters it; any other error is retried while the message is held. Its ctx
// carries the producer's trace context and a deadline, and is not cancelled when the consumer is asked
// to stop: the call in progress is finished.
type Handler func(ctx context.Context, m Message) error

// BatchHandler applies several messages fetched together (Kafka only), all or none — in practice in
// one database transaction: the effects and the inbox records of every message, committed once.
// Returning nil acknowledges every message of the batch; any error (also a panic) means none was
// applied, and the consumer then hands the same messages, in the same order, to the Handler one at a
// time, with its retries and dead letters. So a BatchHandler may refuse any batch it cannot apply
// whole (ErrNotBatched, e.g. an event type it leaves to the Handler) without changing the outcome. The
// messages, two or more, are in delivery order, which per key is the producer's order; they may span
// partitions. Its ctx is as the Handler's: a deadline (HandleTimeout, for the whole batch), not
// cancelled by a stop, and with tracing on a consumer span linked to every message's producer span.
type BatchHandler func(ctx context.Context, ms []Message) error

// ErrNotBatched is what a BatchHandler returns for a batch it leaves to the Handler, message by
// message. It is not a failure: it is neither logged nor counted as one.
var ErrNotBatched = errors.New("batch left to the handler")

// Retry is the policy for failing messages. The zero value gets the defaults.
type Retry struct {
	// MaxAttempts, when positive, dead-letters a message after that many failed handler calls even if
	// the failures are transient. Zero (the default) retries transient failures without limit.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential, jittered wait between attempts
	// (defaults 100 ms and 10 s).
	MinBackoff, MaxBackoff time.Duration
	// MaxDeliveries (JetStream only) dead-letters a message the server has delivered more than this
	// many times: every delivery but the last ended without the message being settled, because its
	// consumer crashed or stopped while handling it (default 10). A held message does not add
	// deliveries: the consumer keeps it in progress.
	MaxDeliveries int
	// LogInterval is how often a held message is reported at WARN (default 30 s); the failures in
	// between are logged at DEBUG.
	LogInterval time.Duration
}

func (r Retry) withDefaults() Retry {
	r.MaxAttempts = max(r.MaxAttempts, 0)
	if r.MinBackoff <= 0 {
		r.MinBackoff = 100 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 10 * time.Second
	}
	r.MaxBackoff = max(r.MaxBackoff, r.MinBackoff)
	if r.MaxDeliveries <= 0 {
		r.MaxDeliveries = 10
	}
	if r.LogInterval <= 0 {
		r.LogInterval = 30 * time.Second
	}
	return r
}

// backoff is the wait after the attempt-th failure: doubling from MinBackoff, jittered ±20%, capped
// at MaxBackoff.
func (r Retry) backoff(attempt int) time.Duration {
	d := r.MinBackoff
	for i := 1; i < attempt && d < r.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.MaxBackoff)
	return min(time.Duration(float64(d)*(0.8+0.4*rand.Float64())), r.MaxBackoff)
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
	tracer       trace.Tracer
	handled      *prometheus.CounterVec // consumer, topic, outcome
	deadLettered *prometheus.CounterVec // consumer, topic, cause
	lag          *prometheus.GaugeVec   // consumer, topic, partition
	held         *heldCollector
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
		Help: "Handler outcomes per call: ok, retry (failed transiently, held and retried) or dead_lettered.",
	}, []string{"consumer", "topic", "outcome"}))
	if err != nil {
		return nil, err
	}
	ob.deadLettered, err = register(o.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shopmesh_consumer_dead_lettered_total",
		Help: "Dead letters written, by cause (permanent, max_attempts, max_deliveries); each needs an operator (dlq list / replay).",
	}, []string{"consumer", "topic", "cause"}))
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
	ob.held, err = register(o.Metrics, newHeldCollector())
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

func (ob *observer) deadLetter(consumer, topic, cause string) {
	if ob.deadLettered != nil {
		ob.deadLettered.WithLabelValues(consumer, topic, cause).Inc()
	}
}

func (ob *observer) setLag(consumer, topic, partition string, lag int64) {
	if ob.lag != nil {
		ob.lag.WithLabelValues(consumer, topic, partition).Set(float64(max(lag, 0)))
	}
}

// hold records a message held in retry since now; the returned func releases it.
func (ob *observer) hold(consumer, topic string) func() {
	if ob.held == nil {
		return func() {}
	}
	return ob.held.add(heldKey{consumer, topic}, time.Now())
}

type heldKey struct{ consumer, topic string }

// heldCollector exports the messages held in retry and the age of the oldest, computed at scrape time
// so a stuck consumer shows a growing age even while nothing else happens.
type heldCollector struct {
	count, oldest *prometheus.Desc

	mu    sync.Mutex
	next  uint64
	holds map[heldKey]map[uint64]time.Time
	seen  map[heldKey]bool // keys reported once stay reported (at 0) so alerts see them clear
}

func newHeldCollector() *heldCollector {
	return &heldCollector{
		count: prometheus.NewDesc("shopmesh_consumer_held_messages",
			"Messages held in retry after a transient failure: the consumer does not move past them.",
			[]string{"consumer", "topic"}, nil),
		oldest: prometheus.NewDesc("shopmesh_consumer_held_oldest_seconds",
			"Seconds since the oldest held message first failed (0 when none is held).",
			[]string{"consumer", "topic"}, nil),
		holds: map[heldKey]map[uint64]time.Time{},
		seen:  map[heldKey]bool{},
	}
}

func (c *heldCollector) add(k heldKey, since time.Time) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	id := c.next
	if c.holds[k] == nil {
		c.holds[k] = map[uint64]time.Time{}
	}
	c.holds[k][id] = since
	c.seen[k] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(c.holds[k], id)
		})
	}
}

func (c *heldCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.count
	ch <- c.oldest
}

func (c *heldCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for k := range c.seen {
		var age float64
		for _, since := range c.holds[k] {
			age = max(age, now.Sub(since).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(len(c.holds[k])), k.consumer, k.topic)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, k.consumer, k.topic)
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

// pipeline is what both consumers share: the handler and how it is called, retried and reported.
type pipeline struct {
	h       Handler
	retry   Retry
	prop    propagation.TextMapPropagator
	obs     *observer
	system  string // messaging.system: kafka or nats
	name    string // consumer group or durable
	timeout time.Duration
}

// verdict is how a message ended: applied (err nil) or to be dead-lettered for cause.
type verdict struct {
	err      error
	cause    string
	attempts int
}

// settle calls the handler until the message is applied or must be dead-lettered. Between failed
// attempts the message is held: it waits with backoff, calling beat (when not nil) at least every
// beatEvery so the broker keeps it assigned. It reports false when ctx ended first: the message is
// then unsettled. dest names the span and the metrics' topic.
func (p *pipeline) settle(ctx context.Context, m Message, dest string, log *slog.Logger,
	beat func(), beatEvery time.Duration) (verdict, bool) {
	var (
		release   func()
		heldSince time.Time
		lastWarn  time.Time
	)
	defer func() {
		if release != nil {
			release()
		}
	}()
	for attempt := 1; ; attempt++ {
		m.Attempt = attempt
		err := p.handle(ctx, m, dest, log)
		switch {
		case err == nil:
			p.obs.outcome(p.name, dest, "ok")
			if attempt > 1 {
				log.InfoContext(ctx, "held message applied", "attempts", attempt, "held_for", time.Since(heldSince).Round(time.Millisecond))
			}
			return verdict{attempts: attempt}, true
		case errors.Is(err, ErrPermanent):
			p.obs.outcome(p.name, dest, "dead_lettered")
			return verdict{err: err, cause: CausePermanent, attempts: attempt}, true
		case p.retry.MaxAttempts > 0 && attempt >= p.retry.MaxAttempts:
			p.obs.outcome(p.name, dest, "dead_lettered")
			return verdict{err: err, cause: CauseMaxAttempts, attempts: attempt}, true
		}
		p.obs.outcome(p.name, dest, "retry")
		wait := p.retry.backoff(attempt)
		now := time.Now()
		switch {
		case attempt == 1:
			heldSince, lastWarn = now, now
			release = p.obs.hold(p.name, dest)
			log.WarnContext(ctx, "handler failed, holding the message and retrying", "retry_in", wait, "err", err)
		case now.Sub(lastWarn) >= p.retry.LogInterval:
			lastWarn = now
			log.WarnContext(ctx, "message still held", "attempts", attempt, "held_for", now.Sub(heldSince).Round(time.Second),
				"retry_in", wait, "err", err)
		default:
			log.DebugContext(ctx, "handler failed", "attempt", attempt, "retry_in", wait, "err", err)
		}
		if !p.wait(ctx, wait, beat, beatEvery) {
			log.InfoContext(ctx, "stopping with a held message unsettled", "attempts", attempt)
			return verdict{}, false
		}
	}
}

// wait sleeps d, calling beat every beatEvery (and once at the end) when beat is set; false when ctx
// ended first.
func (p *pipeline) wait(ctx context.Context, d time.Duration, beat func(), beatEvery time.Duration) bool {
	if beat == nil || beatEvery <= 0 {
		return sleep(ctx, d)
	}
	for d > 0 {
		step := min(d, beatEvery)
		if !sleep(ctx, step) {
			return false
		}
		d -= step
		beat()
	}
	return true
}

// handle runs the handler once under a deadline, detached from the stop signal, with the trace context
// of the message's headers, inside a consumer span when tracing is on. A panic is returned as a
// permanent error: the same message would panic again.
func (p *pipeline) handle(ctx context.Context, m Message, dest string, log *slog.Logger) (err error) {
	hctx := p.prop.Extract(context.WithoutCancel(ctx), propagation.MapCarrier(m.Headers))
	var span trace.Span
	if p.obs.tracer != nil {
		hctx, span = p.obs.tracer.Start(hctx, dest+" process",
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.system", p.system),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", dest),
				attribute.String("messaging.consumer.group.name", p.name),
				attribute.String("messaging.message.id", m.ID),
				attribute.Int("messaging.delivery.attempt", m.Attempt),
			))
		defer span.End()
	}
	hctx, cancel := context.WithTimeout(hctx, p.timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			log.ErrorContext(ctx, "handler panicked", "panic", r, "stack", string(debug.Stack()))
			err = Permanent(fmt.Errorf("handler panicked: %v", r))
		}
		if err != nil && span != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "handler failed")
		}
	}()
	err = p.h(hctx, m)
	if errors.Is(err, inbox.ErrAlreadyProcessed) {
		if span != nil {
			span.SetAttributes(attribute.Bool("shopmesh.inbox.duplicate", true))
		}
		return nil
	}
	return err
}

// handleBatch runs a batch handler once, as handle runs the handler: under the handler's deadline,
// detached from the stop signal, inside one consumer span when tracing is on — linked to each
// message's producer span, since a batch has no single parent. A panic is returned as a plain error:
// the messages then go to the handler one at a time, where the one that panics is dead-lettered.
func (p *pipeline) handleBatch(ctx context.Context, b BatchHandler, ms []Message, log *slog.Logger) (err error) {
	hctx := context.WithoutCancel(ctx)
	var span trace.Span
	if p.obs.tracer != nil {
		dest := ms[0].Topic
		links := make([]trace.Link, 0, len(ms))
		for _, m := range ms {
			if dest != m.Topic {
				dest = ""
			}
			sc := trace.SpanContextFromContext(p.prop.Extract(context.Background(), propagation.MapCarrier(m.Headers)))
			if sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("messaging.message.id", m.ID)}})
			}
		}
		name, attrs := "process", []attribute.KeyValue{
			attribute.String("messaging.system", p.system),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.consumer.group.name", p.name),
			attribute.Int("messaging.batch.message_count", len(ms)),
		}
		if dest != "" {
			name = dest + " process"
			attrs = append(attrs, attribute.String("messaging.destination.name", dest))
		}
		hctx, span = p.obs.tracer.Start(hctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...),
			trace.WithLinks(links...))
		defer span.End()
	}
	hctx, cancel := context.WithTimeout(hctx, p.timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			log.ErrorContext(ctx, "batch handler panicked", "messages", len(ms), "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("batch handler panicked: %v", r)
		}
		if err != nil && span != nil && !errors.Is(err, ErrNotBatched) {
			span.RecordError(err)
			span.SetStatus(codes.Error, "batch handler failed")
		}
	}()
	return b(hctx, ms)
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

func deadLetterHeaders(m Message, consumer string, v verdict, position string) map[string]string {
	h := make(map[string]string, len(m.Headers)+7)
	for k, val := range m.Headers {
		h[k] = val
	}
	if m.ID != "" {
		h[outbox.HeaderEventID] = m.ID
	}
	msg := v.err.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	h[HeaderDLQReason] = msg
	h[HeaderDLQAttempts] = strconv.Itoa(v.attempts)
	h[HeaderDLQTopic] = m.Topic
	h[HeaderDLQPosition] = position
	h[HeaderDLQCause] = v.cause
	h[HeaderDLQConsumer] = consumer
	h[HeaderDLQTime] = time.Now().UTC().Format(time.RFC3339Nano)
	return h
}
