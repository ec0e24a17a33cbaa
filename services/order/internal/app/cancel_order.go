package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// cancelAttempts bounds the retries of a cancel that keeps losing version races.
const cancelAttempts = 5

// CancelOrder cancels a PENDING order on the customer's behalf (CUSTOMER_REQUESTED), then releases its
// stock and voids its payment. A cancelled order is returned as it is; a confirmed one is refused with
// domain.ErrOrderConfirmed.
func (a *App) CancelOrder(ctx context.Context, id, note string) (domain.Order, error) {
	for range cancelAttempts {
		o, err := a.orders.Get(ctx, id)
		if err != nil {
			return domain.Order{}, fmt.Errorf("cancel order: %w", err)
		}
		switch o.Status {
		case domain.Cancelled:
			return o, nil
		case domain.Confirmed:
			return domain.Order{}, fmt.Errorf("cancel order %s: %w", id, domain.ErrOrderConfirmed)
		}
		next, err := o.Cancel(domain.CustomerRequested, note, a.now())
		if err != nil {
			return domain.Order{}, fmt.Errorf("cancel order %s: %w", id, err)
		}
		err = a.orders.Update(ctx, next, a.followupDue(next, true))
		if errors.Is(err, domain.ErrVersionConflict) {
			continue // the saga moved it; look again
		}
		if err != nil {
			return domain.Order{}, fmt.Errorf("cancel order %s: %w", id, err)
		}
		// The cancellation is committed; compensation must finish even if the caller leaves now.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.SagaTimeout)
		a.compensate(cctx, next)
		cancel()
		return next, nil
	}
	return domain.Order{}, fmt.Errorf("cancel order %s: %w", id, domain.ErrVersionConflict)
}
