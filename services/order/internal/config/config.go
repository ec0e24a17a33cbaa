// Package config is the order service's configuration: the platform's Config, the database, the
// brokers and the outbox, plus the saga settings, with per-profile defaults and Validate. The service command reads
// it from the ORDER_* variables (KAFKA_BROKERS and NATS_URL when ORDER_KAFKA_BROKERS and
// ORDER_NATS_URL are unset).
package config

import (
	"errors"
	"fmt"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
)

// Config is the whole configuration of the order service.
type Config struct {
	platformcfg.Config
	platformcfg.Database
	platformcfg.Brokers
	platformcfg.Outbox

	CallTimeout      time.Duration `help:"deadline of every call to inventory and payment; below saga_timeout"`
	RecoveryInterval time.Duration `help:"how often the recovery worker looks for interrupted sagas and due follow-ups"`
	// The saga and recovery settings, see app.Settings.
	SagaTimeout   time.Duration `help:"bound on one attempt to drive an order through the saga (all its calls)"`
	RecoveryAfter time.Duration `help:"lease of a pending order to the instance driving it; after it recovery takes over (> saga_timeout)"`
	GiveUpAfter   time.Duration `help:"age at which a still pending order is cancelled with DEPENDENCY_FAILED (> recovery_after)"`
	RecoveryBatch int           `help:"orders one recovery pass claims"`
	WatchPoll     time.Duration `help:"how often WatchOrder re-reads the order when no NATS notification arrives"`
	// SettleAfter: the recovery worker commits the stock and captures the payment of a confirmed order
	// that long after the confirmation, in case OrderConfirmed never reached inventory or payment; keep
	// it above the normal event latency.
	SettleAfter time.Duration `help:"age of a confirmed order at which recovery commits its stock and captures its payment (above the event latency)"`
	RetryMin    time.Duration `help:"first backoff of a failed compensation or settlement, doubled per failure"`
	RetryMax    time.Duration `help:"longest backoff of a failed compensation or settlement; a refused one waits this long"`
	// StuckAfter and StuckAttempts say when a pending compensation counts as stuck
	// (shopmesh_order_stuck_compensations, logged at WARN).
	StuckAfter    time.Duration `help:"a compensation pending longer than this counts as stuck (metric, WARN log)"`
	StuckAttempts int           `help:"a compensation that failed this many times counts as stuck (metric, WARN log)"`
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
		Database:         platformcfg.Database{DSN: "sqlite:order.db"},
		Outbox:           platformcfg.DefaultOutbox(),
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
	}
}

// Settings returns the application's settings.
func (c Config) Settings() app.Settings {
	return app.Settings{
		SagaTimeout: c.SagaTimeout, RecoveryAfter: c.RecoveryAfter, GiveUpAfter: c.GiveUpAfter,
		RecoveryBatch: c.RecoveryBatch, WatchPoll: c.WatchPoll, SettleAfter: c.SettleAfter,
		RetryMin: c.RetryMin, RetryMax: c.RetryMax, StuckAfter: c.StuckAfter, StuckAttempts: c.StuckAttempts,
	}
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate(), c.Database.Validate(), c.Brokers.Validate(), c.Outbox.Validate(), c.Settings().Validate()}
	if c.CallTimeout <= 0 || c.CallTimeout >= c.SagaTimeout {
		errs = append(errs, fmt.Errorf("call_timeout: must be > 0 and < saga_timeout (%v), got %v", c.SagaTimeout, c.CallTimeout))
	}
	if c.RecoveryInterval <= 0 {
		errs = append(errs, fmt.Errorf("recovery_interval: must be > 0, got %v", c.RecoveryInterval))
	}
	for _, t := range []string{"inventory", "payment"} {
		if _, ok := c.Targets[t]; !ok {
			errs = append(errs, fmt.Errorf("targets[%q]: must be set", t))
		}
	}
	return errors.Join(errs...)
}
