package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// Kafka is the shared Kafka setting a service embeds: ORDER_KAFKA_BROKERS or, when unset, KAFKA_BROKERS,
// and the service's own SASL/SCRAM-SHA-512 credential, ORDER_KAFKA_USERNAME and ORDER_KAFKA_PASSWORD
// (no unprefixed alias: a service never falls back to another user's credential, such as the admin's
// KAFKA_USERNAME of infra.env). Without a user name the clients do not authenticate.
type Kafka struct {
	KafkaBrokers  []string `alias:"KAFKA_BROKERS" help:"Kafka bootstrap brokers, host:port, comma-separated"`
	KafkaUsername string   `help:"the service's Kafka user (SASL SCRAM-SHA-512); empty: no authentication"`
	KafkaPassword Secret   `help:"the Kafka user's password (SASL SCRAM-SHA-512); set with kafka_username"`
}

// Validate reports a missing broker list and a user name without a password or the reverse.
func (k Kafka) Validate() error {
	var errs []error
	if len(k.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("kafka_brokers: at least one host:port is needed"))
	}
	if _, err := kafkaauth.Mechanism(k.KafkaUsername, k.KafkaPassword.Reveal()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// SASL returns the mechanism every Kafka client of the service authenticates with (kafkaauth), nil
// when no user name is set. Call it on a validated setting: a credential Validate refuses gives nil,
// which an authenticating broker refuses.
func (k Kafka) SASL() sasl.Mechanism {
	m, err := kafkaauth.Mechanism(k.KafkaUsername, k.KafkaPassword.Reveal())
	if err != nil {
		return nil
	}
	return m
}

// NATS is the shared NATS setting a service embeds: ORDER_NATS_URL or, when unset, NATS_URL, and the
// service's own NATS user, ORDER_NATS_USER and ORDER_NATS_PASSWORD (no unprefixed alias: a service
// never falls back to another user's credential, such as the admin's NATS_USER of infra.env). Without
// a user the connections do not authenticate.
type NATS struct {
	NatsURL      string `alias:"NATS_URL" help:"NATS server URL(s) for JetStream"`
	NatsUser     string `help:"the service's NATS user; empty: no authentication"`
	NatsPassword Secret `help:"the NATS user's password; set with nats_user"`
}

// Validate reports a missing URL and a user without a password or the reverse.
func (n NATS) Validate() error {
	var errs []error
	if n.NatsURL == "" {
		errs = append(errs, errors.New("nats_url: must be set (nats://host:4222)"))
	}
	if n.NatsUser != "" && n.NatsPassword == "" {
		errs = append(errs, errors.New("nats_password: must be set with nats_user"))
	}
	if n.NatsUser == "" && n.NatsPassword != "" {
		errs = append(errs, errors.New("nats_user: must be set with nats_password"))
	}
	return errors.Join(errs...)
}

// Auth is the option every NATS connection of the service is made with: the user and password when
// a user is set, else an option that changes nothing.
func (n NATS) Auth() nats.Option {
	if n.NatsUser == "" {
		return func(*nats.Options) error { return nil }
	}
	return nats.UserInfo(n.NatsUser, n.NatsPassword.Reveal())
}

// Brokers is both shared broker settings, for a service that uses Kafka and NATS; one that uses only
// one of them embeds Kafka or NATS, so that it lists (and -h shows) only what it reads.
type Brokers struct {
	Kafka
	NATS
}

// Validate reports the problems of both settings.
func (b Brokers) Validate() error { return errors.Join(b.Kafka.Validate(), b.NATS.Validate()) }

// Outbox is the setting of a service that publishes through the transactional outbox: how its relay
// polls and how the Kafka topics it creates are partitioned (<P>_RELAY_POLL_INTERVAL,
// <P>_TOPIC_PARTITIONS). A service embeds it and may change the defaults DefaultOutbox gives.
type Outbox struct {
	// RelayPollInterval bounds the delay of an event whose commit notification was lost (another
	// instance committed it, or the process restarted); committed events are relayed at once.
	RelayPollInterval time.Duration `help:"how often the outbox relay looks for events no commit announced"`
	// RelayMinInterval is the least time between two batches of a busy relay destination: while rows
	// keep coming, each batch waits for more of them instead of sending one or two (fewer statements
	// and publishes per event), for up to this much more commit-to-publish latency. 0 sends each
	// batch at once.
	RelayMinInterval time.Duration `help:"least time between two batches of a busy outbox relay destination (fewer statements per event, up to this much more publish latency); 0 sends each batch at once"`
	// TopicPartitions only applies when the service creates a missing topic; an existing topic keeps its own.
	TopicPartitions int `help:"partitions of the Kafka topics the service creates when they do not exist yet"`
}

// DefaultOutbox returns the outbox defaults: a 200ms poll, batches of a busy destination at least 25ms
// apart, topics of 3 partitions.
func DefaultOutbox() Outbox {
	return Outbox{RelayPollInterval: 200 * time.Millisecond, RelayMinInterval: 25 * time.Millisecond, TopicPartitions: 3}
}

// RelayMinIntervalOption is RelayMinInterval as outbox.RelayConfig.MinInterval takes it, where 0
// means the relay's default and a negative value none.
func (o Outbox) RelayMinIntervalOption() time.Duration {
	if o.RelayMinInterval == 0 {
		return -1
	}
	return o.RelayMinInterval
}

// Validate reports every problem, each naming its field.
func (o Outbox) Validate() error {
	var errs []error
	if o.RelayPollInterval <= 0 {
		errs = append(errs, fmt.Errorf("relay_poll_interval: must be > 0, got %v", o.RelayPollInterval))
	}
	if o.RelayMinInterval < 0 {
		errs = append(errs, fmt.Errorf("relay_min_interval: must be >= 0, got %v", o.RelayMinInterval))
	}
	if o.TopicPartitions <= 0 {
		errs = append(errs, fmt.Errorf("topic_partitions: must be > 0, got %d", o.TopicPartitions))
	}
	return errors.Join(errs...)
}

// Consumer is the setting of a service that consumes events through an inbox: how often its Kafka
// consumers commit offsets, how many events they apply in one batch, and how long the inbox remembers
// handled events (<P>_CONSUMER_COMMIT_INTERVAL, <P>_CONSUMER_MAX_BATCH, <P>_INBOX_RETENTION).
type Consumer struct {
	// ConsumerCommitInterval batches the consumers' Kafka offset commits (0 commits every message
	// synchronously: one broker round trip each). Handled events are deduplicated by the inbox, so a
	// crash redelivering up to one interval of them changes nothing.
	ConsumerCommitInterval time.Duration `help:"how often the event consumers commit their Kafka offsets; 0 commits each message synchronously"`
	// ConsumerMaxBatch caps the events a Kafka consumer with a batch handler applies in one call (one
	// transaction): those its fetch has ready. 0 or 1 applies them one at a time. A batch is all or
	// none and falls back to one at a time when it fails, so the setting changes cost, not outcome.
	ConsumerMaxBatch int `help:"most events a Kafka consumer applies in one transaction, from those already fetched; 0 or 1 applies them one at a time"`
	// InboxRetention is how long processed event ids are kept for de-duplication (0: 7 days). Keep it
	// above the consumed topics' retention and any dead-letter replay.
	InboxRetention time.Duration `help:"how long processed event ids are kept for de-duplication (0: 7 days); keep it above the consumed topics' retention"`
}

// DefaultConsumer returns the consumer defaults: one offset commit a second instead of one per
// event, batches of up to 100 events, handled event ids kept 7 days.
func DefaultConsumer() Consumer {
	return Consumer{ConsumerCommitInterval: time.Second, ConsumerMaxBatch: 100, InboxRetention: 7 * 24 * time.Hour}
}

// ConsumerMaxBatchOption is ConsumerMaxBatch as consumer.KafkaConfig.MaxBatch takes it, where 0 means
// the consumer's default and 1 one at a time.
func (c Consumer) ConsumerMaxBatchOption() int {
	return max(c.ConsumerMaxBatch, 1)
}

// maxConsumerBatch bounds ConsumerMaxBatch: a batch is one transaction under one handler deadline,
// and kafka-go holds only so many fetched messages ready.
const maxConsumerBatch = 10000

// Validate reports every problem, each naming its field. Zero is allowed for all: it means a
// synchronous commit per message, one event at a time and the inbox's default retention.
func (c Consumer) Validate() error {
	var errs []error
	if c.ConsumerCommitInterval < 0 {
		errs = append(errs, fmt.Errorf("consumer_commit_interval: must be >= 0 (0 commits each message), got %v", c.ConsumerCommitInterval))
	}
	if c.ConsumerMaxBatch < 0 || c.ConsumerMaxBatch > maxConsumerBatch {
		errs = append(errs, fmt.Errorf("consumer_max_batch: must be between 0 and %d (0 or 1: one at a time), got %d", maxConsumerBatch, c.ConsumerMaxBatch))
	}
	if c.InboxRetention < 0 {
		errs = append(errs, fmt.Errorf("inbox_retention: must be >= 0 (0: 7 days), got %v", c.InboxRetention))
	}
	return errors.Join(errs...)
}
