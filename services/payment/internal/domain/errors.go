package domain

import "errors"

// The domain errors. Adapters map them to transport codes once (rpc/errors.go); wrap them with %w.
var (
	// ErrInvalidRequest is a request no state could accept (empty ids, non-positive amount).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrAccountNotFound means no account exists for the customer.
	ErrAccountNotFound = errors.New("account not found")
	// ErrAuthorizationNotFound means no authorization exists for the order.
	ErrAuthorizationNotFound = errors.New("authorization not found")
	// ErrAuthorizationVoided means the order was voided before any authorization existed (the void
	// left a tombstone): a late or retried authorize must not hold money for a compensated order, and
	// there is nothing to capture.
	ErrAuthorizationVoided = errors.New("order was voided before it was authorized")
	// ErrIdempotencyConflict is a repeated order id carrying a different customer, amount or currency.
	ErrIdempotencyConflict = errors.New("order already has a different authorization")
	// ErrInvalidTransition is an operation the authorization's status forbids (capturing a voided one,
	// voiding a captured one).
	ErrInvalidTransition = errors.New("operation not allowed in the authorization's status")
	// ErrInconsistent means stored figures would break an invariant (a hold larger than the account's
	// held funds): a bug or a corrupted row, never a caller's mistake.
	ErrInconsistent = errors.New("inconsistent payment state")
)
