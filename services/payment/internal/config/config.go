// Package config is the payment service's configuration: the platform's settings plus the database,
// Kafka and seeding, with per-profile defaults, environment overrides and validation. Only cmd/payment
// calls Load.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// Prefix starts every payment variable: PAYMENT_LISTEN_ADDR, PAYMENT_DSN, PAYMENT_SEED, ...
const Prefix = "PAYMENT"

// Config is the whole configuration.
type Config struct {
	// Platform is read from PAYMENT_<FIELD> (PAYMENT_LISTEN_ADDR, PAYMENT_SERVER_DRAIN_DELAY, ...).
	Platform config.Config `env:"-"`
	// DSN is postgres://... or sqlite:<path>; the database belongs to this service alone.
	DSN string
	// KafkaBrokers are host:port addresses; the shared KAFKA_BROKERS sets them, PAYMENT_KAFKA_BROKERS
	// overrides.
	KafkaBrokers []string
	// TopicPartitions is the partition count of topics this service creates if missing.
	TopicPartitions int
	// ConsumerGroup is the Kafka group consuming order events.
	ConsumerGroup string
	// Seed creates the development accounts at start (existing ones are left alone).
	Seed bool
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// RelayPollInterval is how often the outbox is polled besides the commit notifications.
	RelayPollInterval time.Duration
	// ConsumerMaxWait is how long one Kafka fetch waits for new messages.
	ConsumerMaxWait time.Duration
	// ConsumerCommitInterval batches the consumer's Kafka offset commits (0 commits every message
	// synchronously: one broker round trip each). Handled events are deduplicated by the inbox, so a
	// crash redelivering up to one interval of them changes nothing.
	ConsumerCommitInterval time.Duration
	// InboxRetention is how long processed event ids are kept for de-duplication (0: 7 days). Keep it
	// above the order topic's retention and any dead-letter replay.
	InboxRetention time.Duration
}

// Default returns the defaults of a profile: development seeds accounts into a local SQLite file.
func Default(profile config.Profile) Config {
	p := config.Default(profile)
	p.Service = "payment"
	c := Config{
		Platform:          p,
		KafkaBrokers:      []string{"127.0.0.1:9092"},
		TopicPartitions:   8,
		ConsumerGroup:     "payment",
		LogLevel:          "info",
		RelayPollInterval: 200 * time.Millisecond,
		ConsumerMaxWait:   500 * time.Millisecond,
		// One commit per second instead of one per event.
		ConsumerCommitInterval: time.Second,
		InboxRetention:         7 * 24 * time.Hour,
	}
	if profile == config.Dev {
		c.DSN = "sqlite:payment.db"
		c.Seed = true
	}
	return c
}

// Load builds the configuration from the environment: PAYMENT_PROFILE picks the defaults (dev when
// unset), then variables override them. It validates the result.
func Load(lookup config.Lookup) (Config, error) {
	profile := config.Dev
	if v, ok := lookup(Prefix + "_PROFILE"); ok && v != "" {
		profile = config.Profile(v)
	}
	c := Default(profile)
	if v, ok := lookup("KAFKA_BROKERS"); ok && strings.TrimSpace(v) != "" {
		c.KafkaBrokers = splitList(v)
	}
	if err := errors.Join(
		config.FromEnv(&c.Platform, Prefix, lookup),
		config.FromEnv(&c, Prefix, lookup),
	); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.Platform.Profile = profile
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Platform.Validate()}
	if _, err := sqldb.ParseDialect(c.DSN); err != nil {
		errs = append(errs, fmt.Errorf("dsn (%s_DSN): %w", Prefix, err))
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
	if _, err := c.Level(); err != nil {
		errs = append(errs, err)
	}
	if c.RelayPollInterval <= 0 || c.ConsumerMaxWait <= 0 {
		errs = append(errs, errors.New("relay_poll_interval, consumer_max_wait: must be > 0"))
	}
	return errors.Join(errs...)
}

// Level parses LogLevel.
func (c Config) Level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
