package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// Capture takes an order's held funds, once: capturing a captured authorization returns it unchanged.
// Capturing an order voided before it was authorized is domain.ErrAuthorizationVoided.
func (s *App) Capture(ctx context.Context, orderID string) (domain.Authorization, error) {
	// A repeat (the settlement's capture of an order the event already captured) is answered by one
	// read: an authorization that left AUTHORIZED never changes again.
	if a, err := s.store.Authorization(ctx, orderID); err == nil && a.Status != domain.StatusAuthorized {
		c, _, err := domain.Capture(a, nil, s.now())
		if err != nil {
			return domain.Authorization{}, fmt.Errorf("capture: %w", err)
		}
		return c.Authorization, nil
	}
	var out domain.Authorization
	err := s.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		var err error
		out, err = s.capture(ctx, tx, orderID)
		return err
	})
	if err != nil {
		return domain.Authorization{}, fmt.Errorf("capture: %w", err)
	}
	return out, nil
}

func (s *App) capture(ctx context.Context, tx Tx, orderID string) (domain.Authorization, error) {
	a, err := tx.Authorization(ctx, orderID)
	if errors.Is(err, domain.ErrAuthorizationNotFound) {
		if voided, verr := tx.Voided(ctx, orderID); verr != nil {
			return domain.Authorization{}, verr
		} else if voided {
			return domain.Authorization{}, fmt.Errorf("capture order %s: %w", orderID, domain.ErrAuthorizationVoided)
		}
	}
	if err != nil {
		return domain.Authorization{}, err
	}
	acct, err := accountFor(ctx, tx, a)
	if err != nil {
		return domain.Authorization{}, err
	}
	c, changed, err := domain.Capture(a, acct, s.now())
	if err != nil || !changed {
		return c.Authorization, err
	}
	if err := tx.Apply(ctx, c); err != nil {
		return domain.Authorization{}, err
	}
	return c.Authorization, nil
}
