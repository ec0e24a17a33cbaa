// Package config is the order service's configuration: the platform's Config plus the database, the
// brokers and the saga settings, with per-profile defaults, environment overrides (read only through
// the lookup main passes in) and Validate.
package config

import (
	"errors"
	"fmt"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
)

// Prefix starts every variable of this service: ORDER_DSN, ORDER_LISTEN_ADDR, ...
const Prefix = "ORDER"

// Config is the whole configuration of the order service.
type Config struct {
	platformcfg.Config `env:"-"` // read with the same prefix by Load

	// DSN is postgres://... or sqlite:<path>.
	DSN string
	// KafkaBrokers ("host:port") receive shopmesh.order.events; also read from KAFKA_BROKERS.
	KafkaBrokers []string
	// KafkaPartitions is the partition count the topic is created with when missing.
	KafkaPartitions int
	// NatsURL carries the status subjects WatchOrder follows; also read from NATS_URL.
	NatsURL string
	// CallTimeout bounds every call to inventory and payment.
	CallTimeout time.Duration
	// RecoveryInterval is how often the recovery worker looks for interrupted sagas.
	RecoveryInterval time.Duration
	// Saga and recovery settings, see app.Settings: ORDER_SAGA_TIMEOUT, ORDER_RECOVERY_AFTER,
	// ORDER_GIVE_UP_AFTER, ORDER_RECOVERY_BATCH, ORDER_WATCH_POLL; ORDER_SETTLE_AFTER (default 1m: a
	// confirmed order's stock commit and payment capture are done by the recovery worker that long after
	// the confirmation, in case OrderConfirmed never reached inventory or payment; keep it above the
	// normal event latency), ORDER_RETRY_MIN / ORDER_RETRY_MAX (5s / 10m: per-order backoff of failed
	// compensations and settlements), ORDER_STUCK_AFTER / ORDER_STUCK_ATTEMPTS (10m / 5: when a pending
	// compensation counts as stuck in shopmesh_order_stuck_compensations and is logged at WARN).
	SagaTimeout   time.Duration
	RecoveryAfter time.Duration
	GiveUpAfter   time.Duration
	RecoveryBatch int
	WatchPoll     time.Duration
	SettleAfter   time.Duration
	RetryMin      time.Duration
	RetryMax      time.Duration
	StuckAfter    time.Duration
	StuckAttempts int
	// OutboxPoll is how often the outbox relay looks for events nobody announced.
	OutboxPoll time.Duration
}

// Default returns the defaults of a profile.
func Default(profile platformcfg.Profile) Config {
	p := platformcfg.Default(profile)
	p.Service = "order"
	p.ListenAddr = ":50051"
	p.Targets["inventory"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50052"}}
	p.Targets["payment"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50053"}}
	return Config{
		Config:           p,
		DSN:              "sqlite:order.db",
		KafkaPartitions:  3,
		CallTimeout:      2 * time.Second,
		RecoveryInterval: 5 * time.Second,
		SagaTimeout:      8 * time.Second,
		RecoveryAfter:    30 * time.Second,
		GiveUpAfter:      15 * time.Minute,
		RecoveryBatch:    50,
		WatchPoll:        2 * time.Second,
		SettleAfter:      time.Minute,
		RetryMin:         5 * time.Second,
		RetryMax:         10 * time.Minute,
		StuckAfter:       10 * time.Minute,
		StuckAttempts:    5,
		OutboxPoll:       200 * time.Millisecond,
	}
}

// Load returns the configuration selected by ORDER_PROFILE (default dev) with environment overrides.
func Load(lookup platformcfg.Lookup) (Config, error) {
	profile := platformcfg.Dev
	if v, ok := lookup(Prefix + "_PROFILE"); ok && v != "" {
		profile = platformcfg.Profile(v)
	}
	c := Default(profile)
	shared := struct {
		KafkaBrokers []string
		NatsURL      string
	}{}
	var errs []error
	errs = append(errs, platformcfg.FromEnv(&shared, "", lookup))
	c.KafkaBrokers, c.NatsURL = shared.KafkaBrokers, shared.NatsURL
	errs = append(errs, platformcfg.FromEnv(&c.Config, Prefix, lookup), platformcfg.FromEnv(&c, Prefix, lookup))
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.Profile = profile
	return c, c.Validate()
}

// Saga returns the application's settings.
func (c Config) Saga() app.Settings {
	return app.Settings{
		SagaTimeout: c.SagaTimeout, RecoveryAfter: c.RecoveryAfter, GiveUpAfter: c.GiveUpAfter,
		RecoveryBatch: c.RecoveryBatch, WatchPoll: c.WatchPoll, SettleAfter: c.SettleAfter,
		RetryMin: c.RetryMin, RetryMax: c.RetryMax, StuckAfter: c.StuckAfter, StuckAttempts: c.StuckAttempts,
	}
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate(), c.Saga().Validate()}
	if c.DSN == "" {
		errs = append(errs, errors.New("dsn: must be set"))
	}
	if len(c.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("kafka_brokers: at least one host:port is needed (KAFKA_BROKERS)"))
	}
	if c.KafkaPartitions <= 0 {
		errs = append(errs, fmt.Errorf("kafka_partitions: must be > 0, got %d", c.KafkaPartitions))
	}
	if c.NatsURL == "" {
		errs = append(errs, errors.New("nats_url: must be set (NATS_URL)"))
	}
	if c.CallTimeout <= 0 || c.CallTimeout >= c.SagaTimeout {
		errs = append(errs, fmt.Errorf("call_timeout: must be > 0 and < saga_timeout (%v), got %v", c.SagaTimeout, c.CallTimeout))
	}
	if c.RecoveryInterval <= 0 {
		errs = append(errs, fmt.Errorf("recovery_interval: must be > 0, got %v", c.RecoveryInterval))
	}
	if c.OutboxPoll <= 0 {
		errs = append(errs, fmt.Errorf("outbox_poll: must be > 0, got %v", c.OutboxPoll))
	}
	for _, t := range []string{"inventory", "payment"} {
		if _, ok := c.Targets[t]; !ok {
			errs = append(errs, fmt.Errorf("targets[%q]: must be set", t))
		}
	}
	return errors.Join(errs...)
}
