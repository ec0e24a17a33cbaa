// Package config is inventory's typed configuration: the platform's plus the database, brokers and
// seeding, with per-profile defaults, environment overrides (INVENTORY_*) and Validate.
package config

import (
	"errors"
	"fmt"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
)

// Prefix of inventory's environment variables.
const Prefix = "INVENTORY"

// Config is inventory's configuration.
type Config struct {
	platformcfg.Config
	// DSN is postgres://... or sqlite:<path>.
	DSN string
	// KafkaBrokers are "host:port" addresses; KAFKA_BROKERS is used when INVENTORY_KAFKA_BROKERS is unset.
	KafkaBrokers []string
	// NatsURL is the NATS server; NATS_URL is used when INVENTORY_NATS_URL is unset.
	NatsURL string
	// Seed inserts the dev catalogue at start (only SKUs that do not exist yet).
	Seed bool
	// SeedProducts and SeedStock size the dev catalogue.
	SeedProducts int
	SeedStock    int64
	// TopicPartitions is used when inventory creates a Kafka topic that does not exist yet.
	TopicPartitions int
	// RelayPollInterval is how often the outbox is polled when nothing notified the relay.
	RelayPollInterval time.Duration
	// ConsumerCommitInterval batches the order-event consumer's Kafka offset commits (0 commits every
	// message synchronously: one broker round trip each). Handled events are deduplicated by the
	// inbox, so a crash redelivering up to one interval of them changes nothing.
	ConsumerCommitInterval time.Duration
	// InboxRetention is how long processed event ids are kept for de-duplication (0: 7 days). Keep it
	// above the order topic's retention and any dead-letter replay.
	InboxRetention time.Duration
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

// Load builds the configuration from the environment: INVENTORY_PROFILE selects the defaults, then
// INVENTORY_* variables override fields (INVENTORY_DSN, INVENTORY_LISTEN_ADDR, INVENTORY_SEED, ...), and
// the shared KAFKA_BROKERS and NATS_URL fill the broker addresses when no INVENTORY_ one is set.
func Load(lookup platformcfg.Lookup) (Config, error) {
	profile := platformcfg.Dev
	if p, ok := lookup(Prefix + "_PROFILE"); ok && p != "" {
		profile = platformcfg.Profile(p)
	}
	c := Default(profile)
	shared := func(key string) (string, bool) {
		if v, ok := lookup(key); ok {
			return v, true
		}
		switch key {
		case Prefix + "_KAFKA_BROKERS":
			return lookup("KAFKA_BROKERS")
		case Prefix + "_NATS_URL":
			return lookup("NATS_URL")
		}
		return "", false
	}
	if err := platformcfg.FromEnv(&c, Prefix, shared); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
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
