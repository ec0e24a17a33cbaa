// Package config is the payment service's typed configuration: the platform's plus the database, the
// Kafka brokers, the outbox and the consumer, and its own settings (seeding, consumer group and wait),
// with per-profile defaults and Validate. The service command loads it from PAYMENT_* variables
// (KAFKA_BROKERS fills the brokers when PAYMENT_KAFKA_BROKERS is unset); `payment -h` lists every one.
package config

import (
	"errors"
	"fmt"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
)

// Config is the payment service's configuration. Payment publishes and consumes through Kafka only.
type Config struct {
	platformcfg.Config
	platformcfg.Database
	platformcfg.Kafka
	platformcfg.Outbox
	platformcfg.Consumer

	// ConsumerGroup is the Kafka group consuming order events.
	ConsumerGroup string `help:"Kafka consumer group of the order events"`
	// Seed creates the development accounts at start (existing ones are left alone).
	Seed bool `help:"create the development accounts at start (cust-0001..cust-1000, cust-broke; existing ones are left alone)"`
	// ConsumerMaxWait is how long one Kafka fetch waits for new messages.
	ConsumerMaxWait time.Duration `help:"how long one Kafka fetch of the order-event consumer waits for new messages"`
}

// Default returns the defaults of a profile: development seeds accounts into a local SQLite file.
func Default(profile platformcfg.Profile) Config {
	c := Config{
		Config:          platformcfg.Default(profile),
		Kafka:           platformcfg.Kafka{KafkaBrokers: []string{"127.0.0.1:9092"}},
		Outbox:          platformcfg.DefaultOutbox(),
		Consumer:        platformcfg.DefaultConsumer(),
		ConsumerGroup:   "payment",
		ConsumerMaxWait: 500 * time.Millisecond,
	}
	c.TopicPartitions = 8
	c.Service = "payment"
	if profile == platformcfg.Dev {
		c.DSN = "sqlite:payment.db"
		c.Seed = true
	}
	return c
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate(), c.Database.Validate(), c.Kafka.Validate(), c.Outbox.Validate(), c.Consumer.Validate()}
	if c.ConsumerGroup == "" {
		errs = append(errs, errors.New("consumer_group: must be set"))
	}
	if c.ConsumerMaxWait <= 0 {
		errs = append(errs, fmt.Errorf("consumer_max_wait: must be > 0, got %v", c.ConsumerMaxWait))
	}
	return errors.Join(errs...)
}
