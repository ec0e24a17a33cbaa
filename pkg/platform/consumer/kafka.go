package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"go.opentelemetry.io/otel/propagation"

	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// KafkaConfig configures a Kafka consumer-group member.
type KafkaConfig struct {
	Brokers []string
	// SASL authenticates every connection of the member: group, fetches, dead letters (nil: none; see
	// config.Kafka.SASL). On a broker with ACLs the user needs Read on Topics and GroupID, Write on
	// their dead-letter topics.
	SASL sasl.Mechanism
	// GroupID names the consumer group; its committed offsets are where a restart resumes.
	GroupID string
	Topics  []string
	// Retry: Retry.MaxDeliveries does not apply (Kafka keeps no delivery count).
	Retry Retry
	// HandleTimeout bounds one handler call (default 30 s).
	HandleTimeout time.Duration
	// CommitTimeout bounds one offset commit or dead-letter write (default 10 s).
	CommitTimeout time.Duration
	// CommitInterval, when positive, batches offset commits: CommitMessages then only records the
	// offset of a handled message and kafka-go flushes them on this interval and on Close. Still never
	// before the effect, but a crash redelivers up to one interval of handled messages (the inbox drops
	// them). Zero commits each message synchronously, which caps a member at one round trip per message.
	CommitInterval time.Duration
	// MaxWait is how long a fetch waits for new messages (default 500 ms).
	MaxWait time.Duration
	// SessionTimeout is how long the group coordinator keeps a member that stopped heartbeating, and
	// how long a rebalance waits for the members to rejoin (default 10 s; kafka-go's own is 30 s). It
	// is the consumer's stall after a broker restart: kafka-go then rejoins under a new member id, and
	// the coordinator, which reloaded the old member from its log, waits for it first. The broker
	// accepts 6 s to 30 min (group.min/max.session.timeout.ms).
	SessionTimeout time.Duration
	// Batch, when set, applies the messages a fetch has ready (up to MaxBatch) in one call; the
	// Handler still applies what a batch refused or failed, one at a time (see BatchHandler).
	Batch BatchHandler
	// MaxBatch caps the messages of one Batch call (default 100).
	MaxBatch int
	// Propagator extracts the trace context from headers (default propagation.TraceContext{}).
	Propagator propagation.TextMapPropagator
	// Observe turns on consumer spans and metrics.
	Observe Observe
}

// Kafka is one member of a consumer group. Offsets are committed after each message's handler
// succeeded (or it was dead-lettered), or after a batch's handler succeeded, never before: kafka-go's
// ReadMessage would commit first. A message failing transiently is held: the member fetches nothing
// else until it is settled.
type Kafka struct {
	cfg KafkaConfig
	log *slog.Logger
	p   *pipeline
}

// NewKafka returns a consumer of cfg.Topics that feeds h.
func NewKafka(cfg KafkaConfig, h Handler, log *slog.Logger) (*Kafka, error) {
	if len(cfg.Brokers) == 0 || cfg.GroupID == "" || len(cfg.Topics) == 0 {
		return nil, errors.New("kafka consumer: brokers, group and topics are required")
	}
	cfg.Retry = cfg.Retry.withDefaults()
	if cfg.HandleTimeout <= 0 {
		cfg.HandleTimeout = 30 * time.Second
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 10 * time.Second
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 500 * time.Millisecond
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	obs, err := cfg.Observe.build()
	if err != nil {
		return nil, err
	}
	return &Kafka{cfg: cfg, log: log.With("group", cfg.GroupID), p: &pipeline{
		h: h, retry: cfg.Retry, prop: cfg.Propagator, obs: obs, system: "kafka", name: cfg.GroupID, timeout: cfg.HandleTimeout,
	}}, nil
}

// topicWaitInterval is how often a consumer started before its topics exist checks for them.
const topicWaitInterval = 500 * time.Millisecond

// waitTopics blocks until every topic of the group exists, and reports false if ctx ended first. Topics
// belong to their producer, which creates them with its partition count; a consumer must not create
// them. kafka-go would: its group leader reads partitions with a metadata request that allows
// auto-creation (a broker with auto.create.topics.enable then makes the topic with its default
// partition count), and without one it assigns nothing and never looks again. Client.Metadata does
// not ask for auto-creation.
func (c *Kafka) waitTopics(ctx context.Context) bool {
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Timeout: 5 * time.Second, Transport: kafkaauth.Transport(c.cfg.SASL)}
	for n := 0; ; n++ {
		missing, err := missingTopics(ctx, client, c.cfg.Topics)
		if err == nil && len(missing) == 0 {
			return true
		}
		if n%20 == 0 { // every 10 s
			c.log.WarnContext(ctx, "kafka consumer waits for its topics", "missing", missing, "err", err)
		}
		if !sleep(ctx, topicWaitInterval) {
			return false
		}
	}
}

func missingTopics(ctx context.Context, client *kafka.Client, topics []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return topics, err
	}
	ready := map[string]bool{}
	for _, t := range md.Topics {
		if t.Error == nil && len(t.Partitions) > 0 {
			ready[t.Name] = true
		}
	}
	var missing []string
	for _, t := range topics {
		if !ready[t] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// Run waits until its topics exist (their producers create them), then consumes until ctx is
// cancelled, then finishes the message (or batch call) in hand, leaves the group and returns nil.
// Messages fetched but not handled are not committed and go to the next member.
func (c *Kafka) Run(ctx context.Context) error {
	if !c.waitTopics(ctx) {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:          c.cfg.Brokers,
		Dialer:           kafkaauth.Dialer(c.cfg.SASL),
		GroupID:          c.cfg.GroupID,
		GroupTopics:      c.cfg.Topics,
		MinBytes:         1,
		MaxBytes:         10 << 20,
		MaxWait:          c.cfg.MaxWait,
		CommitInterval:   c.cfg.CommitInterval,
		StartOffset:      kafka.FirstOffset,
		SessionTimeout:   c.cfg.SessionTimeout,
		RebalanceTimeout: c.cfg.SessionTimeout,
		// kafka-go's 5 s between attempts to rejoin adds up to 5 s to the stall after an outage.
		JoinGroupBackoff: time.Second,
		// A partition added to a topic (or a topic recreated) triggers a rebalance instead of going
		// unread until the next one.
		WatchPartitionChanges: true,
		// The reader retries broker and group errors by itself; without a logger they are invisible.
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			c.log.Warn("kafka reader: " + fmt.Sprintf(msg, args...))
		}),
	})
	defer func() {
		if err := r.Close(); err != nil {
			c.log.Warn("kafka reader close", "err", err)
		}
	}()
	dlq := &kafka.Writer{
		Addr:         kafka.TCP(c.cfg.Brokers...),
		Transport:    kafkaauth.Transport(c.cfg.SASL),
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Hash{},
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  3,
	}
	defer func() { _ = dlq.Close() }()
	failures := 0
	for {
		km, err := r.FetchMessage(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return errors.New("kafka reader closed")
		}
		if err != nil {
			failures++
			wait := c.cfg.Retry.backoff(failures)
			c.log.WarnContext(ctx, "kafka fetch", "err", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return nil
			}
			continue
		}
		failures = 0
		if c.cfg.Batch != nil && c.cfg.MaxBatch > 1 {
			if kms := c.gather(ctx, r, km); len(kms) > 1 {
				if !c.processBatch(ctx, r, dlq, kms) {
					return nil
				}
				continue
			}
		}
		if !c.process(ctx, r, dlq, km) {
			return nil
		}
	}
}

// A batch is made of what kafka-go already holds: its reader fetches ahead into a queue, and
// FetchMessage selects between that queue and ctx.Done(), so a fetch whose context ends leaves the
// next message queued, not lost. Run takes the ready messages one FetchMessage at a time, each under a
// gatherWait deadline — not an already expired context, which would make that select pick at random
// between a ready message and the deadline and cut batches short for nothing. gatherMax bounds the
// whole gathering: the latency a batch adds to its first message when messages trickle in.
const (
	gatherWait = time.Millisecond
	gatherMax  = 5 * time.Millisecond
)

// gather returns first and the messages the reader has ready behind it, up to MaxBatch in all.
func (c *Kafka) gather(ctx context.Context, r *kafka.Reader, first kafka.Message) []kafka.Message {
	gctx, cancel := context.WithTimeout(ctx, gatherMax)
	defer cancel()
	kms := []kafka.Message{first}
	for len(kms) < c.cfg.MaxBatch {
		fctx, fcancel := context.WithTimeout(gctx, gatherWait)
		km, err := r.FetchMessage(fctx)
		waited := fctx.Err() != nil
		fcancel()
		if err != nil {
			// Nothing ready, or the reader failed: it retries by itself, and io.EOF (closed) comes back
			// on the next fetch. The batch is what was fetched before.
			if !waited && !errors.Is(err, io.EOF) {
				c.log.WarnContext(ctx, "kafka fetch", "err", err)
			}
			break
		}
		// Taken even if a deadline has just passed: FetchMessage returned it, so it is no longer
		// queued, and dropping it would let the commit of a later message of its partition skip it.
		kms = append(kms, km)
	}
	return kms
}

// processBatch applies kms with the batch handler, all or none, then commits them all at once. When
// the batch handler refuses or fails, each message goes through process in order, with its retries
// and dead letters. It returns false as process does; the messages not settled by then are left
// uncommitted.
func (c *Kafka) processBatch(ctx context.Context, r *kafka.Reader, dlq *kafka.Writer, kms []kafka.Message) bool {
	ms := make([]Message, len(kms))
	for i, km := range kms {
		ms[i], _ = message(km)
		c.setLag(km)
	}
	err := c.p.handleBatch(ctx, c.cfg.Batch, ms, c.log)
	if err == nil {
		for _, km := range kms {
			c.p.obs.outcome(c.cfg.GroupID, km.Topic, "ok")
		}
		c.commit(ctx, r, c.log, kms...)
		return true
	}
	if errors.Is(err, ErrNotBatched) {
		c.log.DebugContext(ctx, "batch left to the handler", "messages", len(kms))
	} else {
		c.log.WarnContext(ctx, "batch handler failed, applying its messages one at a time", "messages", len(kms), "err", err)
	}
	for _, km := range kms {
		// Stopping: the messages still in hand go to the next member, as a fetched one would.
		if ctx.Err() != nil || !c.process(ctx, r, dlq, km) {
			return false
		}
	}
	return true
}

// message is km as the handlers see it, and its position (topic/partition/offset).
func message(km kafka.Message) (Message, string) {
	m := Message{Topic: km.Topic, Key: km.Key, Payload: km.Value, Headers: make(map[string]string, len(km.Headers)), Delivery: 1}
	for _, h := range km.Headers {
		m.Headers[h.Key] = string(h.Value)
	}
	position := fmt.Sprintf("%s/%d/%d", km.Topic, km.Partition, km.Offset)
	m.ID = m.Headers[outbox.HeaderEventID]
	if m.ID == "" {
		m.ID = position
	}
	return m, position
}

func (c *Kafka) setLag(km kafka.Message) {
	if km.HighWaterMark > 0 {
		c.p.obs.setLag(c.cfg.GroupID, km.Topic, strconv.Itoa(km.Partition), km.HighWaterMark-km.Offset-1)
	}
}

// commit commits the offsets of kms, settled (applied or dead-lettered), under CommitTimeout even
// when stopping.
func (c *Kafka) commit(ctx context.Context, r *kafka.Reader, log *slog.Logger, kms ...kafka.Message) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CommitTimeout)
	defer cancel()
	if err := r.CommitMessages(cctx, kms...); err != nil {
		// The effect is done and idempotent: a redelivery is harmless.
		log.WarnContext(ctx, "kafka commit", "err", err)
	}
}

// process handles one message to its end: applied or dead-lettered, then committed. It returns false
// when asked to stop before the message was settled; the message is then left uncommitted.
func (c *Kafka) process(ctx context.Context, r *kafka.Reader, dlq *kafka.Writer, km kafka.Message) bool {
	m, position := message(km)
	log := c.log.With("event_id", m.ID, "position", position)
	c.setLag(km)
	v, ok := c.p.settle(ctx, m, km.Topic, log, nil, 0)
	if !ok {
		return false
	}
	if v.err != nil {
		log.ErrorContext(ctx, "dead-lettering message", "cause", v.cause, "attempts", v.attempts, "err", v.err)
		if !c.deadLetter(ctx, dlq, km, m, v, position) {
			return false
		}
	}
	c.commit(ctx, r, log, km)
	return true
}

// deadLetter writes the message to its dead-letter topic, retrying until it is written (the message
// is not committed before) or ctx ends.
func (c *Kafka) deadLetter(ctx context.Context, w *kafka.Writer, km kafka.Message, m Message, v verdict, position string) bool {
	headers := deadLetterHeaders(m, c.cfg.GroupID, v, position)
	out := kafka.Message{Topic: DeadLetterTopic(km.Topic), Key: km.Key, Value: km.Value}
	for k, v := range headers {
		out.Headers = append(out.Headers, kafka.Header{Key: k, Value: []byte(v)})
	}
	for try := 1; ; try++ {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CommitTimeout)
		err := w.WriteMessages(wctx, out)
		cancel()
		if err == nil {
			c.p.obs.deadLetter(c.cfg.GroupID, km.Topic, v.cause)
			return true
		}
		wait := c.cfg.Retry.backoff(try)
		c.log.ErrorContext(ctx, "dead-letter write", "topic", out.Topic, "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return false
		}
	}
}
