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

// Service runs the use cases.
type Service struct {
	store Store
	now   func() time.Time
}

// Option customizes New.
type Option func(*Service)

// WithClock sets the clock that stamps authorizations (for tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// New returns the use cases over store.
func New(store Store, opts ...Option) *Service {
	s := &Service{store: store, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	clock := s.now
	// Microseconds: what PostgreSQL stores, so a first answer and its retry carry the same times.
	s.now = func() time.Time { return clock().UTC().Truncate(time.Microsecond) }
	return s
}

// GetAccount returns a customer's account.
func (s *Service) GetAccount(ctx context.Context, customerID string) (domain.Account, error) {
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
