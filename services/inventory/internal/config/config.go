// Package config is inventory's typed configuration: the platform's plus the database, the brokers,
// the outbox and the consumer, and its own seeding settings, with per-profile defaults and
// Validate. The service command loads it from INVENTORY_* variables (KAFKA_BROKERS and NATS_URL fill
// the broker addresses when INVENTORY_KAFKA_BROKERS / INVENTORY_NATS_URL are unset).
package config

import (
	"errors"
	"fmt"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
)

// Config is inventory's configuration.
type Config struct {
	platformcfg.Config
	platformcfg.Database
	platformcfg.Brokers
	platformcfg.Outbox
	platformcfg.Consumer

	Seed         bool  `help:"insert the dev catalogue at start (only SKUs that do not exist yet)"`
	SeedProducts int   `help:"number of SKUs in the dev catalogue (SKU-0001..)"`
	SeedStock    int64 `help:"units on hand of each seeded SKU"`
}

// Default returns the defaults for a profile.
func Default(profile platformcfg.Profile) Config {
	c := Config{
		Config:       platformcfg.Default(profile),
		Outbox:       platformcfg.DefaultOutbox(),
		Consumer:     platformcfg.DefaultConsumer(),
		SeedProducts: 24,
		SeedStock:    10_000,
	}
	c.TopicPartitions = 6
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
	errs := []error{c.Config.Validate(), c.Database.Validate(), c.Brokers.Validate(), c.Outbox.Validate(), c.Consumer.Validate()}
	if c.Seed && (c.SeedProducts <= 0 || c.SeedStock <= 0) {
		errs = append(errs, fmt.Errorf("seed_products, seed_stock: must be > 0, got %d, %d", c.SeedProducts, c.SeedStock))
	}
	return errors.Join(errs...)
}
