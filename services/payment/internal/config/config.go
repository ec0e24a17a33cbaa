// Package config is the payment service's typed configuration: the platform's plus the database, the
// Kafka brokers and its own settings (seeding, topics, relay, consumer, inbox), with per-profile
// defaults and Validate. The service command loads it from PAYMENT_* variables (KAFKA_BROKERS fills
// the brokers when PAYMENT_KAFKA_BROKERS is unset); `payment -h` lists every one.
package config

import (
	"errors"
	"fmt"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// Config is the payment service's configuration. Payment publishes and consumes through Kafka only.
type Config struct {
	platformcfg.Config
	platformcfg.Database
	platformcfg.Kafka

	// TopicPartitions is the partition count of topics this service creates if missing.
	TopicPartitions int `help:"partitions of the Kafka topics payment creates when they do not exist yet"`
	// ConsumerGroup is the Kafka group consuming order events.
	ConsumerGroup string `help:"Kafka consumer group of the order events"`
	// Seed creates the development accounts at start (existing ones are left alone).
	Seed bool `help:"create the development accounts at start (cust-0001..cust-1000, cust-broke; existing ones are left alone)"`
	// RelayPollInterval is how often the outbox is polled besides the commit notifications.
	RelayPollInterval time.Duration `help:"how often the outbox relay polls when no commit notified it"`
	// ConsumerMaxWait is how long one Kafka fetch waits for new messages.
	ConsumerMaxWait time.Duration `help:"how long one Kafka fetch of the order-event consumer waits for new messages"`
	// ConsumerCommitInterval batches the consumer's Kafka offset commits (0 commits every message
	// synchronously: one broker round trip each). Handled events are deduplicated by the inbox, so a
	// crash redelivering up to one interval of them changes nothing.
	ConsumerCommitInterval time.Duration `help:"how often the order-event consumer commits its Kafka offsets; 0 commits each message synchronously"`
	// InboxRetention is how long processed event ids are kept for de-duplication (0: 7 days). Keep it
	// above the order topic's retention and any dead-letter replay.
	InboxRetention time.Duration `help:"how long processed order-event ids are kept for de-duplication (0: 7 days); keep it above the order topic's retention"`
}

// Default returns the defaults of a profile: development seeds accounts into a local SQLite file.
func Default(profile platformcfg.Profile) Config {
	c := Config{
		Config:            platformcfg.Default(profile),
		Kafka:             platformcfg.Kafka{KafkaBrokers: []string{"127.0.0.1:9092"}},
		TopicPartitions:   8,
		ConsumerGroup:     "payment",
		RelayPollInterval: 200 * time.Millisecond,
		ConsumerMaxWait:   500 * time.Millisecond,
		// One commit per second instead of one per event.
		ConsumerCommitInterval: time.Second,
		InboxRetention:         7 * 24 * time.Hour,
	}
	c.Service = "payment"
	if profile == platformcfg.Dev {
		c.DSN = "sqlite:payment.db"
		c.Seed = true
	}
	return c
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	if _, err := sqldb.ParseDialect(c.DSN); err != nil {
		errs = append(errs, fmt.Errorf("dsn: %w", err))
	}
	if len(c.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("kafka_brokers: at least one host:port is needed"))
	}
	if c.TopicPartitions <= 0 {
		errs = append(errs, fmt.Errorf("topic_partitions: must be > 0, got %d", c.TopicPartitions))
	}
	if c.ConsumerGroup == "" {
		errs = append(errs, errors.New("consumer_group: must be set"))
	}
	if c.RelayPollInterval <= 0 {
		errs = append(errs, fmt.Errorf("relay_poll_interval: must be > 0, got %v", c.RelayPollInterval))
	}
	if c.ConsumerMaxWait <= 0 {
		errs = append(errs, fmt.Errorf("consumer_max_wait: must be > 0, got %v", c.ConsumerMaxWait))
	}
	return errors.Join(errs...)
}
