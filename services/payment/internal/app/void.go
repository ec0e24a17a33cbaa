package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// Void releases an order's hold. It succeeds without a change when there is nothing to release (no
// authorization — found is then false —, a declined or an already voided one), so compensation always
// completes; voiding a captured authorization is domain.ErrInvalidTransition.
func (s *Service) Void(ctx context.Context, orderID string) (a domain.Authorization, found bool, err error) {
	err = s.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		var err error
		a, err = s.void(ctx, tx, orderID)
		return err
	})
	switch {
	case errors.Is(err, domain.ErrAuthorizationNotFound):
		return domain.Authorization{}, false, nil
	case err != nil:
		return domain.Authorization{}, false, fmt.Errorf("void: %w", err)
	}
	return a, true, nil
}

func (s *Service) void(ctx context.Context, tx Tx, orderID string) (domain.Authorization, error) {
	a, err := tx.Authorization(ctx, orderID)
	if err != nil {
		return domain.Authorization{}, err
	}
	acct, err := accountFor(ctx, tx, a)
	if err != nil {
		return domain.Authorization{}, err
	}
	c, changed, err := domain.Void(a, acct, s.now())
	if err != nil || !changed {
		return c.Authorization, err
	}
	if err := tx.Apply(ctx, c); err != nil {
		return domain.Authorization{}, err
	}
	return c.Authorization, nil
}
