package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// JetStreamConfig configures a durable pull consumer.
type JetStreamConfig struct {
	Stream string
	// Durable names the consumer; instances sharing it share the work and the acknowledged position.
	Durable        string
	FilterSubjects []string
	// Retry: a delivery above Retry.MaxDeliveries is dead-lettered without calling the handler. The
	// server's MaxDeliver is unlimited, so the server never drops a message silently.
	Retry Retry
	// AckWait is how long the server waits for an ack before redelivering (default 30 s); BackOff
	// lengthens it for later deliveries of a message whose consumer crashed. A held message is kept
	// in progress every AckWait/3.
	AckWait time.Duration
	// HandleTimeout bounds one handler call (default AckWait/2, so it ends before a redelivery).
	HandleTimeout time.Duration
	// FetchWait is how long one pull waits for a message (default 5 s).
	FetchWait time.Duration
	// Propagator extracts the trace context from headers (default propagation.TraceContext{}).
	Propagator propagation.TextMapPropagator
	// Observe turns on consumer spans and metrics.
	Observe Observe
}

// JetStream runs one instance of a durable consumer with explicit acks. It pulls one message at a
// time, so a message held in retry has no others waiting behind it in the client whose AckWait would
// expire (and whose delivery count would grow) meanwhile.
type JetStream struct {
	js  jetstream.JetStream
	cfg JetStreamConfig
	log *slog.Logger
	p   *pipeline
}

// NewJetStream returns a consumer on js that feeds h.
func NewJetStream(js jetstream.JetStream, cfg JetStreamConfig, h Handler, log *slog.Logger) (*JetStream, error) {
	if cfg.Stream == "" || cfg.Durable == "" {
		return nil, errors.New("jetstream consumer: stream and durable are required")
	}
	cfg.Retry = cfg.Retry.withDefaults()
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.HandleTimeout <= 0 {
		cfg.HandleTimeout = cfg.AckWait / 2
	}
	if cfg.FetchWait <= 0 {
		cfg.FetchWait = 5 * time.Second
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	obs, err := cfg.Observe.build()
	if err != nil {
		return nil, err
	}
	return &JetStream{js: js, cfg: cfg, log: log.With("stream", cfg.Stream, "durable", cfg.Durable), p: &pipeline{
		h: h, retry: cfg.Retry, prop: cfg.Propagator, obs: obs, system: "nats", name: cfg.Durable, timeout: cfg.HandleTimeout,
	}}, nil
}

// ConsumerConfig is the server-side configuration Run creates or updates.
func (c *JetStream) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        c.cfg.Durable,
		FilterSubjects: c.cfg.FilterSubjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckWait:        c.cfg.AckWait,
		// Unlimited: the consumer dead-letters a message above Retry.MaxDeliveries itself, so the
		// message is kept; a server limit would drop it with no dead letter.
		MaxDeliver:    -1,
		BackOff:       []time.Duration{c.cfg.AckWait, 2 * c.cfg.AckWait, 4 * c.cfg.AckWait},
		MaxAckPending: 1000,
	}
}

// Run consumes until ctx is cancelled, then finishes the message in hand and returns nil; a message
// held in retry when ctx ends is negatively acknowledged so another instance takes it at once.
func (c *JetStream) Run(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := c.js.CreateOrUpdateConsumer(sctx, c.cfg.Stream, c.ConsumerConfig())
	cancel()
	if ctx.Err() != nil {
		return nil //nolint:nilerr // stopping: a create cut short by the caller's cancel is not a failure
	}
	if err != nil {
		return fmt.Errorf("jetstream consumer %s: %w", c.cfg.Durable, err)
	}
	failures := 0
	for {
		fctx, cancel := context.WithTimeout(ctx, c.cfg.FetchWait)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if ctx.Err() != nil {
			if msg != nil {
				_ = msg.Nak()
			}
			return nil
		}
		switch {
		case err == nil:
			failures = 0
			c.process(ctx, msg)
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
			// No message within FetchWait.
		default:
			failures++
			wait := c.cfg.Retry.backoff(failures)
			c.log.WarnContext(ctx, "jetstream next", "err", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return nil
			}
		}
	}
}

func (c *JetStream) process(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to settle it against.
		c.log.ErrorContext(ctx, "jetstream metadata", "err", err)
		_ = msg.Term()
		return
	}
	m := Message{Topic: msg.Subject(), Payload: msg.Data(), Headers: map[string]string{}, Delivery: int(md.NumDelivered)}
	for k, v := range msg.Headers() {
		if len(v) > 0 {
			m.Headers[k] = v[0]
		}
	}
	if key := m.Headers[outbox.HeaderKey]; key != "" {
		m.Key = []byte(key)
	}
	position := fmt.Sprintf("%s/%d", md.Stream, md.Sequence.Stream)
	m.ID = m.Headers[outbox.HeaderEventID]
	if m.ID == "" {
		m.ID = m.Headers[jetstream.MsgIDHeader]
	}
	if m.ID == "" {
		m.ID = position
	}
	log := c.log.With("event_id", m.ID, "position", position, "delivery", md.NumDelivered)
	c.p.obs.setLag(c.cfg.Durable, md.Stream, "", int64(md.NumPending))
	beat := func() {
		if err := msg.InProgress(); err != nil {
			log.DebugContext(ctx, "jetstream in progress", "err", err)
		}
	}

	var v verdict
	if int(md.NumDelivered) > c.cfg.Retry.MaxDeliveries {
		// Every earlier delivery ended unsettled: whatever handles it dies or stops first.
		c.p.obs.outcome(c.cfg.Durable, md.Stream, "dead_lettered")
		v = verdict{cause: CauseMaxDeliveries, attempts: int(md.NumDelivered) - 1, err: fmt.Errorf(
			"delivered %d times without being settled: the consumer crashed or stopped while handling it each time", md.NumDelivered)}
	} else {
		var ok bool
		v, ok = c.p.settle(ctx, m, md.Stream, log, beat, c.cfg.AckWait/3)
		if !ok {
			// Stopping while it is held: another instance takes it now rather than after AckWait.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := msg.Nak(); err != nil {
				log.WarnContext(actx, "jetstream nak", "err", err)
			}
			return
		}
	}
	// Acks go out even when stopping: they settle the message that was just finished.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if v.err == nil {
		if err := msg.DoubleAck(actx); err != nil {
			log.WarnContext(ctx, "jetstream ack", "err", err)
		}
		return
	}
	log.ErrorContext(ctx, "dead-lettering message", "cause", v.cause, "attempts", v.attempts, "err", v.err)
	if !c.deadLetter(ctx, m, v, position, md.Stream, beat) {
		_ = msg.Nak()
		return
	}
	// Terminated, not acknowledged: the server stops redelivering it and reports it as terminated.
	if err := msg.TermWithReason(v.cause); err != nil {
		log.WarnContext(ctx, "jetstream term", "err", err)
	}
}

// deadLetter publishes the message to its dead-letter subject, retrying (and keeping the message in
// progress) until it is stored or ctx ends.
func (c *JetStream) deadLetter(ctx context.Context, m Message, v verdict, position, stream string, beat func()) bool {
	out := nats.NewMsg(DeadLetterTopic(m.Topic))
	out.Data = m.Payload
	for k, val := range deadLetterHeaders(m, c.cfg.Durable, v, position) {
		out.Header.Set(k, val)
	}
	for try := 1; ; try++ {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		// A second dead-lettering of this stored message (its term lost) is dropped by the server; a
		// replayed copy has another position and can be dead-lettered again.
		_, err := c.js.PublishMsg(pctx, out, jetstream.WithMsgID("dlq-"+m.ID+"@"+position))
		cancel()
		if err == nil {
			c.p.obs.deadLetter(c.cfg.Durable, stream, v.cause)
			return true
		}
		wait := c.cfg.Retry.backoff(try)
		c.log.ErrorContext(ctx, "dead-letter publish", "subject", out.Subject, "err", err, "retry_in", wait)
		if !c.p.wait(ctx, wait, beat, c.cfg.AckWait/3) {
			return false
		}
	}
}
