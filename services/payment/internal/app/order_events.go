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

// Confirmation is an OrderConfirmed event: its id, the order, and the payment the order expects (the
// customer, total and currency of the authorization; empty when unknown).
type Confirmation struct {
	EventID, OrderID, CustomerID string
	Amount                       int64
	Currency                     string
}

// OrderConfirmed captures the order's payment, once per event id. The saga confirms after authorizing
// and leaves the capture to this event; the order service's settlement worker calls CapturePayment
// itself for a confirmed order still unsettled after a bound, so a lost or dead-lettered event cannot
// leave the money held. The common case — the authorization the event describes, still AUTHORIZED —
// is one step (Store.CaptureConfirmed); every other case runs the inbox transaction.
func (s *App) OrderConfirmed(ctx context.Context, e Confirmation) (Outcome, error) {
	if expect, ok := e.expected(); ok {
		done, err := s.store.CaptureConfirmed(ctx, Consumer, e.EventID, expect, s.now())
		if err != nil {
			return "", fmt.Errorf("order event %s for %s: %w", e.EventID, e.OrderID, err)
		}
		if done {
			return OutcomeApplied, nil
		}
	}
	return s.onOrderEvent(ctx, e.EventID, e.OrderID, false, s.capture)
}

// OrderConfirmedBatch applies several OrderConfirmed events, of different orders, at once: their
// captures in one transaction (Store.CaptureConfirmedBatch); done means each was OutcomeApplied. It
// does so only when every one is the common case OrderConfirmed does in one step, all or none: done
// is false, with nothing applied, when one of them lacks the payment it expects, when one is not the
// plain capture (already captured or voided, a repeat of a recorded event, another payment), or when
// the store has no such step (SQLite); the caller then applies each with OrderConfirmed, which tells
// those cases apart.
func (s *App) OrderConfirmedBatch(ctx context.Context, es []Confirmation) (done bool, err error) {
	if len(es) == 0 {
		return true, nil
	}
	cs := make([]ConfirmedCapture, len(es))
	for i, e := range es {
		expect, ok := e.expected()
		if !ok || e.EventID == "" {
			return false, nil
		}
		cs[i] = ConfirmedCapture{EventID: e.EventID, Authorization: expect}
	}
	done, err = s.store.CaptureConfirmedBatch(ctx, Consumer, cs, s.now())
	if err != nil {
		return false, fmt.Errorf("%d order events from %s: %w", len(es), es[0].EventID, err)
	}
	return done, nil
}

// expected is the authorization e expects to capture, when e says which: ok is false when it lacks
// the customer, amount or currency (only the inbox transaction handles that).
func (e Confirmation) expected() (domain.Authorization, bool) {
	if e.OrderID == "" || e.CustomerID == "" || e.Amount <= 0 || e.Currency == "" {
		return domain.Authorization{}, false
	}
	// Created at version 1; AUTHORIZED is left for good at the next change.
	return domain.Authorization{OrderID: e.OrderID, CustomerID: e.CustomerID, Amount: e.Amount, Currency: e.Currency,
		Status: domain.StatusAuthorized, Version: 1}, true
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
