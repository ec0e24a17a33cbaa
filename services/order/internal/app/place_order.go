package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// PlaceOrder is a CreateOrder request; CustomerID is the authenticated customer.
type PlaceOrder struct {
	CustomerID     string
	IdempotencyKey string
	Lines          []domain.Line
}

// PlaceOrder records a PENDING order (and OrderCreated) and drives the saga once. It returns the order
// as it stands: CONFIRMED, CANCELLED, or still PENDING when a dependency is unavailable — the recovery
// worker finishes those. A retry with the same customer and idempotency key returns the original order
// and reserves or charges nothing again.
func (a *App) PlaceOrder(ctx context.Context, req PlaceOrder) (domain.Order, error) {
	now := a.now()
	o, err := domain.NewOrder(a.newID(), req.CustomerID, req.IdempotencyKey, req.Lines, now)
	if err != nil {
		return domain.Order{}, fmt.Errorf("place order: %w", err)
	}
	stored, created, err := a.orders.Create(ctx, o, now.Add(a.cfg.RecoveryAfter))
	if err != nil {
		return domain.Order{}, fmt.Errorf("place order: %w", err)
	}
	if !created {
		if !stored.SameRequest(o.Lines) {
			return domain.Order{}, fmt.Errorf("place order %s: %w", req.IdempotencyKey, domain.ErrIdempotencyKeyReused)
		}
		return stored, nil
	}
	// The order is accepted: the saga must not stop because the caller gave up waiting.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.SagaTimeout)
	defer cancel()
	return a.drive(sctx, stored)
}

// drive runs the saga for a PENDING order as far as the dependencies allow. Every step is idempotent per
// order id, so it may run again for the same order (after an outage, a crash, or on another instance);
// the version check in Orders.Update lets exactly one run finish the order. It returns the order as it
// stands; an error only when the store failed.
func (a *App) drive(ctx context.Context, o domain.Order) (domain.Order, error) {
	res, err := a.stock.ReserveStock(ctx, o.ID, o.Lines)
	switch {
	case errors.Is(err, domain.ErrOutOfStock):
		return a.settle(ctx, o, domain.OutOfStock, err, false)
	case errors.Is(err, domain.ErrUnknownProduct):
		return a.settle(ctx, o, domain.UnknownProduct, err, false)
	case errors.Is(err, domain.ErrStockReleased), errors.Is(err, domain.ErrDependencyRefused):
		// A compensation already ran for this order and this reserve lost the race, or inventory refused
		// the order for good: fail it, no retry. Compensate again (both calls idempotent) in case an
		// earlier run reserved or authorized something.
		return a.settle(ctx, o, domain.DependencyFailed, err, true)
	case err != nil:
		a.outcome(domain.Pending, RetryLater)
		return o, nil //nolint:nilerr // stays PENDING; recovery re-drives it
	}

	// No re-read of the order between the steps: a cancel (or another run) that finished the order
	// meanwhile is found by the version check of the final Update, and lostRace gives back what this
	// run holds. An authorize landing after the cancel's void is refused by payment's tombstone; one
	// landing before it is voided by it or by lostRace — a hold that lives for one round trip, in a rare
	// race, instead of a read on every order (TestCancelWhileReserving).
	priced, err := o.Priced(res.Lines, res.Currency)
	if err == nil && priced.TotalCents <= 0 {
		err = fmt.Errorf("total %d is not positive", priced.TotalCents)
	}
	if err != nil {
		// Inventory answered with something that does not fit the order: no safe way forward.
		return a.settle(ctx, o, domain.DependencyFailed, fmt.Errorf("reservation does not match the order: %w", err), true)
	}
	auth, err := a.payment.AuthorizePayment(ctx, AuthorizeRequest{
		OrderID: o.ID, CustomerID: o.CustomerID, AmountCents: priced.TotalCents, Currency: priced.Currency,
	})
	if errors.Is(err, domain.ErrPaymentVoided) || errors.Is(err, domain.ErrDependencyRefused) {
		// A void already ran for this order and this authorize lost the race, or payment refused it for
		// good: fail it, no retry, and give the stock this run holds back.
		return a.settle(ctx, priced, domain.DependencyFailed, err, true)
	}
	if err != nil {
		a.outcome(domain.Pending, RetryLater)
		return o, nil //nolint:nilerr // stays PENDING with stock held; recovery re-drives it
	}
	if auth.Voided || res.Released {
		// A compensation already ran for this order: it must not be confirmed.
		return a.settle(ctx, priced, domain.DependencyFailed, errors.New("stock or payment was already given back"), true)
	}
	if !auth.Approved {
		// Release first so that a client seeing CANCELLED also sees the stock back; if inventory is
		// unreachable now the order still ends, and compensation is retried (and OrderCancelled makes
		// inventory release too).
		relErr := a.stock.ReleaseStock(ctx, o.ID)
		next, err := priced.Cancel(domain.PaymentDeclined, auth.Detail, a.now())
		if err != nil {
			return o, fmt.Errorf("drive %s: %w", o.ID, err)
		}
		return a.commit(ctx, next, relErr != nil, true)
	}
	next, err := priced.Confirm(a.now())
	if err != nil {
		return o, fmt.Errorf("drive %s: %w", o.ID, err)
	}
	return a.commit(ctx, next, false, true)
}

// RetryLater is the Outcome reason of a saga run left PENDING for the recovery worker.
const RetryLater = "RETRY_LATER"

// settle cancels o for reason; compensate says whether stock or funds may be held.
func (a *App) settle(ctx context.Context, o domain.Order, reason domain.CancelReason, cause error, compensate bool) (domain.Order, error) {
	next, err := o.Cancel(reason, detail(cause), a.now())
	if err != nil {
		return o, fmt.Errorf("cancel %s: %w", o.ID, err)
	}
	return a.commit(ctx, next, compensate, compensate)
}

// commit stores a terminal transition. pending says the compensation is not done yet (and is run now
// for a cancellation); held says this run may hold stock or funds for the order, which must be given
// back if another writer cancelled the order first.
func (a *App) commit(ctx context.Context, next domain.Order, pending, held bool) (domain.Order, error) {
	err := a.orders.Update(ctx, next, a.followupDue(next, pending))
	switch {
	case err == nil:
		a.outcome(next.Status, string(next.CancelReason))
		if next.Status == domain.Cancelled && pending {
			a.compensate(ctx, next)
		}
		return next, nil
	case errors.Is(err, domain.ErrVersionConflict):
		cur, gerr := a.orders.Get(ctx, next.ID)
		if gerr != nil {
			return next, fmt.Errorf("reload %s: %w", next.ID, gerr)
		}
		if !held {
			return cur, nil
		}
		return a.lostRace(ctx, cur)
	default:
		return next, fmt.Errorf("store %s: %w", next.ID, err)
	}
}

// lostRace handles an order that another writer finished while this run held stock (and maybe funds)
// for it: a cancelled order gets them back, whatever order the calls landed in.
func (a *App) lostRace(ctx context.Context, cur domain.Order) (domain.Order, error) {
	if cur.Status == domain.Cancelled {
		a.compensate(ctx, cur)
	}
	return cur, nil
}

// compensate releases the order's stock and voids its payment. Both are idempotent; if either fails
// the order stays marked and the recovery worker tries again (see followups.go).
func (a *App) compensate(ctx context.Context, o domain.Order) {
	if err := a.undo(ctx, o.ID); err != nil {
		return
	}
	if err := a.orders.FollowupDone(ctx, Compensation, o.ID, a.now()); err != nil {
		a.log.WarnContext(ctx, "mark compensation done", "order_id", o.ID, "err", err)
	}
}

// followupDue says when the recovery worker may first take up the work a terminal transition leaves:
// the settlement of a confirmed order once OrderConfirmed had every chance to reach inventory and
// payment, the compensation of a cancelled one (compensate) once the saga's own attempt is over.
func (a *App) followupDue(next domain.Order, compensate bool) time.Time {
	switch {
	case next.Status == domain.Confirmed:
		return next.UpdatedAt.Add(a.cfg.SettleAfter)
	case next.Status == domain.Cancelled && compensate:
		return next.UpdatedAt.Add(a.cfg.RecoveryAfter)
	}
	return time.Time{}
}

func detail(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
