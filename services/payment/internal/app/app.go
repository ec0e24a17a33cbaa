// Package app holds the payment use cases: authorize, capture and void an order's payment, read an
// account, react to order events and seed development accounts. Each use case is one transaction
// through the Store port; the decisions themselves are the domain's.
package app

import (
	"context"
	"errors"
	"time"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// Deps are the adapters the use cases run on.
type Deps struct {
	// Store persists accounts and authorizations with their events (required).
	Store Store
	// Clock stamps authorizations and tombstones; nil is time.Now (tests set it).
	Clock func() time.Time
}

// Settings tune the use cases; payment has none yet (the shape every service's app has).
type Settings struct{}

// App runs the use cases.
type App struct {
	store Store
	now   func() time.Time
}

// New checks the dependencies and returns the use cases over them.
func New(d Deps, _ Settings) (*App, error) {
	if d.Store == nil {
		return nil, errors.New("app: store is required")
	}
	clock := d.Clock
	if clock == nil {
		clock = time.Now
	}
	// Microseconds: what PostgreSQL stores, so a first answer and its retry carry the same times.
	now := func() time.Time { return clock().UTC().Truncate(time.Microsecond) }
	return &App{store: d.Store, now: now}, nil
}

// GetAccount returns a customer's account.
func (s *App) GetAccount(ctx context.Context, customerID string) (domain.Account, error) {
	return s.store.Account(ctx, customerID)
}

// accountFor locks the account of a, when a still holds money; a settled authorization needs none.
func accountFor(ctx context.Context, tx Tx, a domain.Authorization) (*domain.Account, error) {
	if a.Status != domain.StatusAuthorized {
		return nil, nil
	}
	acct, err := tx.Account(ctx, a.CustomerID)
	if errors.Is(err, domain.ErrAccountNotFound) {
		return nil, nil // domain reports the inconsistency
	}
	if err != nil {
		return nil, err
	}
	return &acct, nil
}
