// Package app holds the order use cases: placing an order drives the checkout saga (reserve stock,
// authorize payment, confirm; or cancel and compensate), a recovery worker finishes sagas that an
// outage or a crash left PENDING, retries compensations and settles confirmed orders (commit stock,
// capture payment) whose OrderConfirmed may never have arrived, and watchers and checkout sessions
// read orders and quotes.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// Settings tune the saga and the recovery worker.
type Settings struct {
	// SagaTimeout bounds one attempt to drive an order (all calls of one pass).
	SagaTimeout time.Duration
	// RecoveryAfter is how long an order stays leased to the instance that created or claimed it;
	// after that the recovery worker may drive it. Must exceed SagaTimeout.
	RecoveryAfter time.Duration
	// GiveUpAfter is the age at which a still PENDING order is cancelled with DEPENDENCY_FAILED.
	GiveUpAfter time.Duration
	// RecoveryBatch is how many orders one recovery pass claims.
	RecoveryBatch int
	// WatchPoll is how often a watcher re-reads the order when no notification arrives (NATS core
	// delivery is at most once).
	WatchPoll time.Duration
	// SettleAfter is how long after its confirmation an order is settled by the recovery worker
	// (CommitStock and CapturePayment, both idempotent), in case OrderConfirmed never reached inventory
	// or payment. It must exceed the normal latency of that event.
	SettleAfter time.Duration
	// RetryMin and RetryMax bound the per-order backoff of failed compensations and settlements: the
	// n-th failure waits RetryMin·2^(n-1), at most RetryMax; a permanent refusal waits RetryMax.
	RetryMin, RetryMax time.Duration
	// StuckAfter and StuckAttempts say when a pending compensation counts as stuck (gauge, WARN log):
	// pending longer than StuckAfter, or failed StuckAttempts times.
	StuckAfter    time.Duration
	StuckAttempts int
}

// Validate names what is wrong.
func (s Settings) Validate() error {
	var errs []error
	if s.SagaTimeout <= 0 {
		errs = append(errs, fmt.Errorf("saga_timeout: must be > 0, got %v", s.SagaTimeout))
	}
	if s.RecoveryAfter <= s.SagaTimeout {
		errs = append(errs, fmt.Errorf("recovery_after: must be > saga_timeout (%v), got %v", s.SagaTimeout, s.RecoveryAfter))
	}
	if s.GiveUpAfter <= s.RecoveryAfter {
		errs = append(errs, fmt.Errorf("give_up_after: must be > recovery_after (%v), got %v", s.RecoveryAfter, s.GiveUpAfter))
	}
	if s.RecoveryBatch <= 0 {
		errs = append(errs, fmt.Errorf("recovery_batch: must be > 0, got %d", s.RecoveryBatch))
	}
	if s.WatchPoll <= 0 {
		errs = append(errs, fmt.Errorf("watch_poll: must be > 0, got %v", s.WatchPoll))
	}
	if s.SettleAfter <= 0 {
		errs = append(errs, fmt.Errorf("settle_after: must be > 0, got %v", s.SettleAfter))
	}
	if s.RetryMin <= 0 {
		errs = append(errs, fmt.Errorf("retry_min: must be > 0, got %v", s.RetryMin))
	}
	if s.RetryMax < s.RetryMin {
		errs = append(errs, fmt.Errorf("retry_max: must be >= retry_min (%v), got %v", s.RetryMin, s.RetryMax))
	}
	if s.StuckAfter <= 0 {
		errs = append(errs, fmt.Errorf("stuck_after: must be > 0, got %v", s.StuckAfter))
	}
	if s.StuckAttempts <= 0 {
		errs = append(errs, fmt.Errorf("stuck_attempts: must be > 0, got %d", s.StuckAttempts))
	}
	return errors.Join(errs...)
}

// Deps are the adapters the use cases run on.
type Deps struct {
	Orders  Orders
	Stock   StockReserver
	Payment PaymentAuthorizer
	Catalog Catalog
	Feed    StatusFeed
	// Logger receives what background work cannot return (recovery failures).
	Logger *slog.Logger
	// Now and NewID default to time.Now and random UUIDs.
	Now   func() time.Time
	NewID func() string
	// Outcome, when set, is told how each saga run ended: the terminal status and cancel reason it
	// committed, or PENDING with reason RETRY_LATER when a dependency failed and recovery takes over
	// (metrics; called after the state is stored).
	Outcome func(status domain.Status, reason string)
	// Recovered, when set, is told what each pass of the recovery worker did (metrics).
	Recovered func(RecoveryStats)
}

// App is the order application.
type App struct {
	orders  Orders
	stock   StockReserver
	payment PaymentAuthorizer
	catalog Catalog
	feed    StatusFeed
	log     *slog.Logger
	now     func() time.Time
	newID   func() string
	outcome func(domain.Status, string)
	passes  func(RecoveryStats)
	cfg     Settings
}

// New checks the settings and dependencies and returns the application.
func New(d Deps, s Settings) (*App, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("app settings: %w", err)
	}
	if d.Orders == nil || d.Stock == nil || d.Payment == nil || d.Catalog == nil || d.Feed == nil || d.Logger == nil {
		return nil, errors.New("app: orders, stock, payment, catalog, feed and logger are required")
	}
	a := &App{
		orders: d.Orders, stock: d.Stock, payment: d.Payment, catalog: d.Catalog, feed: d.Feed,
		log: d.Logger, now: d.Now, newID: d.NewID, cfg: s, outcome: d.Outcome, passes: d.Recovered,
	}
	if a.passes == nil {
		a.passes = func(RecoveryStats) {}
	}
	if a.outcome == nil {
		a.outcome = func(domain.Status, string) {}
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.newID == nil {
		a.newID = uuid.NewString
	}
	return a, nil
}

// Get returns one order.
func (a *App) Get(ctx context.Context, id string) (domain.Order, error) {
	o, err := a.orders.Get(ctx, id)
	if err != nil {
		return domain.Order{}, fmt.Errorf("get order: %w", err)
	}
	return o, nil
}
