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
	// Retry.MaxAttempts is the delivery after whose failure the message is dead-lettered; the server's
	// MaxDeliver is two more, so a crash during the last attempt still gets the message dead-lettered.
	Retry Retry
	// AckWait is how long the server waits for an ack before redelivering (default 30 s); BackOff
	// lengthens it for later deliveries of a message whose consumer crashed.
	AckWait time.Duration
	// HandleTimeout bounds one handler call (default AckWait/2, so it ends before a redelivery).
	HandleTimeout time.Duration
	// Propagator extracts the trace context from headers (default propagation.TraceContext{}).
	Propagator propagation.TextMapPropagator
	// Observe turns on consumer spans and metrics.
	Observe Observe
}

// JetStream runs one instance of a durable consumer with explicit acks.
type JetStream struct {
	js  jetstream.JetStream
	cfg JetStreamConfig
	h   Handler
	log *slog.Logger
	obs *observer
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
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	obs, err := cfg.Observe.build()
	if err != nil {
		return nil, err
	}
	return &JetStream{js: js, cfg: cfg, h: h, log: log.With("stream", cfg.Stream, "durable", cfg.Durable), obs: obs}, nil
}

// ConsumerConfig is the server-side configuration Run creates or updates.
func (c *JetStream) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        c.cfg.Durable,
		FilterSubjects: c.cfg.FilterSubjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckWait:        c.cfg.AckWait,
		MaxDeliver:     c.cfg.Retry.MaxAttempts + 2,
		BackOff:        []time.Duration{c.cfg.AckWait, 2 * c.cfg.AckWait, 4 * c.cfg.AckWait},
		MaxAckPending:  1000,
	}
}

// Run consumes until ctx is cancelled, then finishes the message in hand and returns nil. Messages
// pulled but not handled are not acknowledged; the server redelivers them after AckWait.
func (c *JetStream) Run(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := c.js.CreateOrUpdateConsumer(sctx, c.cfg.Stream, c.ConsumerConfig())
	cancel()
	if err != nil {
		return fmt.Errorf("jetstream consumer %s: %w", c.cfg.Durable, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return fmt.Errorf("jetstream messages %s: %w", c.cfg.Durable, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return errors.New("jetstream iterator closed")
		}
		if err != nil {
			c.log.WarnContext(ctx, "jetstream next", "err", err)
			if !sleep(ctx, c.cfg.Retry.MinBackoff) {
				return nil
			}
			continue
		}
		c.process(ctx, msg)
	}
}

func (c *JetStream) process(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		c.log.ErrorContext(ctx, "jetstream metadata", "err", err)
		_ = msg.Term()
		return
	}
	m := Message{Topic: msg.Subject(), Payload: msg.Data(), Headers: map[string]string{}, Attempt: int(md.NumDelivered)}
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
	// Acks and naks go out even when stopping: they settle the message that was just finished.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	c.obs.setLag(c.cfg.Durable, md.Stream, "", int64(md.NumPending))
	herr := handle(ctx, c.h, c.cfg.Propagator, c.obs, "nats", md.Stream, c.cfg.Durable, c.cfg.HandleTimeout, m)
	switch {
	case herr == nil:
		c.obs.outcome(c.cfg.Durable, md.Stream, "ok")
		if err := msg.DoubleAck(actx); err != nil {
			log.WarnContext(ctx, "jetstream ack", "err", err)
		}
	case m.Attempt >= c.cfg.Retry.MaxAttempts:
		log.ErrorContext(ctx, "dead-lettering message", "err", herr)
		c.obs.outcome(c.cfg.Durable, md.Stream, "dead_lettered")
		if err := c.deadLetter(actx, m, herr, position); err != nil {
			// Not acknowledged: it comes back after AckWait and is dead-lettered then.
			log.ErrorContext(ctx, "dead-letter publish", "err", err)
			_ = msg.NakWithDelay(c.cfg.Retry.MaxBackoff)
			return
		}
		if err := msg.DoubleAck(actx); err != nil {
			log.WarnContext(ctx, "jetstream ack", "err", err)
		}
	default:
		c.obs.outcome(c.cfg.Durable, md.Stream, "retry")
		wait := c.cfg.Retry.backoff(m.Attempt)
		log.WarnContext(ctx, "handler failed", "retry_in", wait, "err", herr)
		if err := msg.NakWithDelay(wait); err != nil {
			log.WarnContext(ctx, "jetstream nak", "err", err)
		}
	}
}

func (c *JetStream) deadLetter(ctx context.Context, m Message, reason error, position string) error {
	out := nats.NewMsg(DeadLetterTopic(m.Topic))
	out.Data = m.Payload
	for k, v := range deadLetterHeaders(m, reason, m.Attempt, position) {
		out.Header.Set(k, v)
	}
	// A second dead-lettering of the same message (ack lost) is dropped by the server.
	_, err := c.js.PublishMsg(ctx, out, jetstream.WithMsgID("dlq-"+m.ID))
	return err
}
