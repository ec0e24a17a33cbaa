package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// Void releases an order's hold. It succeeds without a change when there is nothing to release (a
// declined or an already voided authorization), so compensation always completes; voiding a captured
// authorization is domain.ErrInvalidTransition. An order without an authorization gets a tombstone
// (found is then false): compensation may arrive before the action it undoes, and the tombstone makes a
// later authorize of the order fail with domain.ErrAuthorizationVoided instead of holding money forever.
func (s *App) Void(ctx context.Context, orderID string) (a domain.Authorization, found bool, err error) {
	if orderID == "" {
		return domain.Authorization{}, false, fmt.Errorf("void: order id is empty: %w", domain.ErrInvalidRequest)
	}
	// A repeat is answered by one read: an authorization that left AUTHORIZED never changes again.
	if a, err := s.store.Authorization(ctx, orderID); err == nil && a.Status != domain.StatusAuthorized {
		c, _, err := domain.Void(a, nil, s.now())
		if err != nil {
			return domain.Authorization{}, false, fmt.Errorf("void: %w", err)
		}
		return c.Authorization, true, nil
	}
	err = s.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		var err error
		a, found, err = s.void(ctx, tx, orderID)
		return err
	})
	if err != nil {
		return domain.Authorization{}, false, fmt.Errorf("void: %w", err)
	}
	return a, found, nil
}

// void voids the order's authorization, or leaves a tombstone when it has none (found false).
func (s *App) void(ctx context.Context, tx Tx, orderID string) (a domain.Authorization, found bool, err error) {
	a, err = tx.Authorization(ctx, orderID)
	if errors.Is(err, domain.ErrAuthorizationNotFound) {
		return domain.Authorization{}, false, tx.MarkVoided(ctx, orderID, s.now())
	}
	if err != nil {
		return domain.Authorization{}, false, err
	}
	acct, err := accountFor(ctx, tx, a)
	if err != nil {
		return domain.Authorization{}, true, err
	}
	c, changed, err := domain.Void(a, acct, s.now())
	if err != nil || !changed {
		return c.Authorization, true, err
	}
	if err := tx.Apply(ctx, c); err != nil {
		return domain.Authorization{}, true, err
	}
	return c.Authorization, true, nil
}
