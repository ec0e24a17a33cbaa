package app

import (
	"context"
	"errors"
	"time"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// The ports the use cases run on; the adapter (package store) asserts at compile time that it
// implements them.

// ErrDuplicateEvent is returned by Store.ProcessEvent for an event already processed.
var ErrDuplicateEvent = errors.New("event already processed")

// Store persists accounts and authorizations. Every state change runs in one transaction that also
// writes its event (outbox), so the event is published exactly when the change commits.
type Store interface {
	// Update runs fn in a transaction, retrying it from the start when the database asks (deadlock,
	// serialization failure, a concurrent insert of the same order).
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// ProcessEvent runs fn in a transaction that also records (consumer, eventID), and skips it when
	// that pair is already recorded (ErrDuplicateEvent is returned then).
	ProcessEvent(ctx context.Context, consumer, eventID string, fn func(ctx context.Context, tx Tx) error) error
	// AuthorizeAtOnce writes the first authorization of req.OrderID as domain.Authorize decides it on the
	// customer's account at that moment, with its hold, ledger entry and event, in one step without a
	// transaction of the use case. done is false, and nothing is written, when the order already has an
	// authorization or a tombstone, or when the store has no such step: the use case runs its
	// transaction then.
	AuthorizeAtOnce(ctx context.Context, req domain.AuthorizeRequest, now time.Time) (a domain.Authorization, done bool, err error)
	// CaptureConfirmed captures a — the AUTHORIZED authorization as an order event describes it — and
	// records (consumer, eventID) as processed, in one step. done is false, and nothing is written, when
	// the stored authorization is not that one, the event is already recorded, or the store has no such
	// step: the use case runs ProcessEvent then, which tells those cases apart.
	CaptureConfirmed(ctx context.Context, consumer, eventID string, a domain.Authorization, now time.Time) (done bool, err error)
	// CaptureConfirmedBatch is CaptureConfirmed for several events (of different orders) in one
	// transaction, all or none: done is false, and nothing of them is written, when any of them is not
	// the plain capture CaptureConfirmed does, or when the store has no such step. The caller then
	// applies them one at a time.
	CaptureConfirmedBatch(ctx context.Context, consumer string, cs []ConfirmedCapture, now time.Time) (done bool, err error)
	// Authorization reads the order's authorization as last committed, without locking it
	// (domain.ErrAuthorizationNotFound if none): final once it left AUTHORIZED.
	Authorization(ctx context.Context, orderID string) (domain.Authorization, error)
	// Account reads an account without locking it.
	Account(ctx context.Context, customerID string) (domain.Account, error)
	// SeedAccounts inserts the accounts that do not exist yet and reports how many it inserted.
	SeedAccounts(ctx context.Context, accounts []domain.Account) (int, error)
}

// ConfirmedCapture is one capture of CaptureConfirmedBatch: the event's id and the AUTHORIZED
// authorization the event describes.
type ConfirmedCapture struct {
	EventID       string
	Authorization domain.Authorization
}

// Tx is the view of one transaction. Reads lock the row until the transaction ends; use cases lock the
// authorization before its account, always in that order. Authorization locks the order id even when
// no row exists yet, so a void and an authorize of one order never interleave (a tombstone and an
// authorization cannot both be written).
type Tx interface {
	// Authorization returns the order's authorization (domain.ErrAuthorizationNotFound if none).
	Authorization(ctx context.Context, orderID string) (domain.Authorization, error)
	// Account returns the customer's account (domain.ErrAccountNotFound if none).
	Account(ctx context.Context, customerID string) (domain.Account, error)
	// Voided reports whether a void arrived for the order while it had no authorization (a tombstone).
	Voided(ctx context.Context, orderID string) (bool, error)
	// MarkVoided records that tombstone; recording it again changes nothing. Use cases call it only
	// after Authorization found nothing, in the same transaction.
	MarkVoided(ctx context.Context, orderID string, at time.Time) error
	// Apply persists a change: the authorization, the account, the ledger entry and the event.
	Apply(ctx context.Context, c domain.Change) error
}
