// Package config is inventory's typed configuration: the platform's plus the database, the brokers
// and its own settings (seeding, topics, relay, consumer, inbox), with per-profile defaults and
// Validate. The service command loads it from INVENTORY_* variables (KAFKA_BROKERS and NATS_URL fill
// the broker addresses when INVENTORY_KAFKA_BROKERS / INVENTORY_NATS_URL are unset).
package config

import (
	"errors"
	"fmt"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
)

// Config is inventory's configuration.
type Config struct {
	platformcfg.Config
	platformcfg.Database
	platformcfg.Brokers

	Seed            bool  `help:"insert the dev catalogue at start (only SKUs that do not exist yet)"`
	SeedProducts    int   `help:"number of SKUs in the dev catalogue (SKU-0001..)"`
	SeedStock       int64 `help:"units on hand of each seeded SKU"`
	TopicPartitions int   `help:"partitions of the Kafka topics inventory creates when they do not exist yet"`
	// RelayPollInterval is how often the outbox is polled when nothing notified the relay.
	RelayPollInterval time.Duration `help:"how often the outbox relay polls when no commit notified it"`
	// ConsumerCommitInterval batches the order-event consumer's Kafka offset commits (0 commits every
	// message synchronously: one broker round trip each). Handled events are deduplicated by the
	// inbox, so a crash redelivering up to one interval of them changes nothing.
	ConsumerCommitInterval time.Duration `help:"how often the order-event consumer commits its Kafka offsets; 0 commits each message synchronously"`
	// InboxRetention is how long processed event ids are kept for de-duplication (0: 7 days). Keep it
	// above the order topic's retention and any dead-letter replay.
	InboxRetention time.Duration `help:"how long processed order-event ids are kept for de-duplication (0: 7 days); keep it above the order topic's retention"`
}

// Default returns the defaults for a profile.
func Default(profile platformcfg.Profile) Config {
	c := Config{
		Config:            platformcfg.Default(profile),
		SeedProducts:      24,
		SeedStock:         10_000,
		TopicPartitions:   6,
		RelayPollInterval: 200 * time.Millisecond,
		// One commit per second instead of one per event.
		ConsumerCommitInterval: time.Second,
		InboxRetention:         7 * 24 * time.Hour,
	}
	c.Service = "inventory"
	c.ListenAddr = ":50052"
	if profile == platformcfg.Dev {
		c.DSN = "sqlite:inventory.db"
		c.KafkaBrokers = []string{"127.0.0.1:9092"}
		c.NatsURL = "nats://127.0.0.1:4222"
		c.Seed = true
	}
	return c
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.DSN == "" {
		errs = append(errs, errors.New("dsn: must be set (postgres://... or sqlite:<path>)"))
	}
	if len(c.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("kafka_brokers: at least one host:port is needed"))
	}
	if c.NatsURL == "" {
		errs = append(errs, errors.New("nats_url: must be set"))
	}
	if c.Seed && (c.SeedProducts <= 0 || c.SeedStock <= 0) {
		errs = append(errs, fmt.Errorf("seed_products, seed_stock: must be > 0, got %d, %d", c.SeedProducts, c.SeedStock))
	}
	if c.TopicPartitions <= 0 {
		errs = append(errs, fmt.Errorf("topic_partitions: must be > 0, got %d", c.TopicPartitions))
	}
	if c.RelayPollInterval <= 0 {
		errs = append(errs, fmt.Errorf("relay_poll_interval: must be > 0, got %v", c.RelayPollInterval))
	}
	return errors.Join(errs...)
}
