package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// Consumer is the inbox name under which order events are de-duplicated.
const Consumer = "payment"

// Outcome says what an order event did to the payment.
type Outcome string

// The outcomes. Skipped events are recorded as processed all the same: redelivering them would not
// change the answer.
const (
	OutcomeApplied   Outcome = "applied"   // the status changed
	OutcomeUnchanged Outcome = "unchanged" // already in the wanted state
	OutcomeNoPayment Outcome = "no_payment"
	OutcomeConflict  Outcome = "conflict" // e.g. a confirmed order whose payment was voided
	OutcomeDuplicate Outcome = "duplicate"
)

// OrderConfirmed captures the order's payment, once per event id. The saga confirms after authorizing
// and leaves the capture to this event; the order service's settlement worker calls CapturePayment
// itself for a confirmed order still unsettled after a bound, so a lost or dead-lettered event cannot
// leave the money held.
func (s *App) OrderConfirmed(ctx context.Context, eventID, orderID string) (Outcome, error) {
	return s.onOrderEvent(ctx, eventID, orderID, false, s.capture)
}

// OrderCancelled voids the order's payment once per event id. An order without a payment gets a
// tombstone, so an authorize still in flight for the cancelled order is refused when it lands.
func (s *App) OrderCancelled(ctx context.Context, eventID, orderID string) (Outcome, error) {
	return s.onOrderEvent(ctx, eventID, orderID, true, func(ctx context.Context, tx Tx, orderID string) (domain.Authorization, error) {
		a, _, err := s.void(ctx, tx, orderID)
		return a, err
	})
}

// onOrderEvent applies op to the order's authorization; tombstone says whether an order without one
// is marked voided.
func (s *App) onOrderEvent(ctx context.Context, eventID, orderID string, tombstone bool,
	op func(context.Context, Tx, string) (domain.Authorization, error)) (Outcome, error) {
	var outcome Outcome
	err := s.store.ProcessEvent(ctx, Consumer, eventID, func(ctx context.Context, tx Tx) error {
		before, err := tx.Authorization(ctx, orderID)
		if errors.Is(err, domain.ErrAuthorizationNotFound) {
			outcome = OutcomeNoPayment
			if tombstone && orderID != "" {
				return tx.MarkVoided(ctx, orderID, s.now())
			}
			return nil
		}
		if err != nil {
			return err
		}
		after, err := op(ctx, tx, orderID)
		switch {
		case errors.Is(err, domain.ErrInvalidTransition):
			// Retrying cannot fix it; the event is settled and the conflict reported.
			outcome = OutcomeConflict
			return nil
		case err != nil:
			return err
		case after.Version != before.Version:
			outcome = OutcomeApplied
		default:
			outcome = OutcomeUnchanged
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrDuplicateEvent):
		return OutcomeDuplicate, nil
	case err != nil:
		return "", fmt.Errorf("order event %s for %s: %w", eventID, orderID, err)
	}
	return outcome, nil
}
