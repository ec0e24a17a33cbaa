package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// Authorize holds funds for an order, or declines. A repeat of the same request returns the stored
// authorization in whatever state it is now, never holding twice; a repeat with a different customer,
// amount or currency is domain.ErrIdempotencyConflict. An order voided before it was authorized is
// domain.ErrAuthorizationVoided, and nothing is held.
func (s *App) Authorize(ctx context.Context, req domain.AuthorizeRequest) (domain.Authorization, error) {
	if err := req.Validate(); err != nil {
		return domain.Authorization{}, fmt.Errorf("authorize: %w", err)
	}
	// The common case, a new order, in one step; a repeat, a tombstoned order or a store without that
	// step run the transaction below.
	if a, done, err := s.store.AuthorizeAtOnce(ctx, req, s.now()); err != nil {
		return domain.Authorization{}, fmt.Errorf("authorize: %w", err)
	} else if done {
		return a, nil
	}
	var out domain.Authorization
	err := s.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		existing, err := tx.Authorization(ctx, req.OrderID)
		switch {
		case err == nil:
			if !existing.Matches(req) {
				return fmt.Errorf("order %s: %w", req.OrderID, domain.ErrIdempotencyConflict)
			}
			out = existing
			return nil
		case !errors.Is(err, domain.ErrAuthorizationNotFound):
			return err
		}
		// Compensation may overtake the action: a void that found nothing left a tombstone, and a
		// delayed or retried authorize must not hold money that nothing would ever release.
		if voided, err := tx.Voided(ctx, req.OrderID); err != nil {
			return err
		} else if voided {
			return fmt.Errorf("order %s: %w", req.OrderID, domain.ErrAuthorizationVoided)
		}
		var acct *domain.Account
		switch a, err := tx.Account(ctx, req.CustomerID); {
		case err == nil:
			acct = &a
		case !errors.Is(err, domain.ErrAccountNotFound):
			return err
		}
		c, err := domain.Authorize(req, acct, s.now())
		if err != nil {
			return err
		}
		if err := tx.Apply(ctx, c); err != nil {
			return err
		}
		out = c.Authorization
		return nil
	})
	if err != nil {
		return domain.Authorization{}, fmt.Errorf("authorize: %w", err)
	}
	return out, nil
}
