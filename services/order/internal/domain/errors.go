package domain

import "errors"

// Domain errors. The rpc layer maps each to a gRPC status once (rpc/errors.go).
var (
	// ErrNotFound: no order with that id.
	ErrNotFound = errors.New("order not found")
	// ErrInvalidOrder: the request cannot become an order (no lines, bad quantity, ...).
	ErrInvalidOrder = errors.New("invalid order")
	// ErrOrderConfirmed: the order is CONFIRMED, which is final (e.g. it cannot be cancelled).
	ErrOrderConfirmed = errors.New("order is confirmed")
	// ErrNotPending: a transition was asked of an order that is already terminal.
	ErrNotPending = errors.New("order is not pending")
	// ErrVersionConflict: another writer changed the order first (optimistic concurrency).
	ErrVersionConflict = errors.New("order version conflict")
	// ErrIdempotencyKeyReused: the idempotency key was used before for a different request.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused with a different request")
	// ErrOutOfStock: inventory could not hold every line.
	ErrOutOfStock = errors.New("out of stock")
	// ErrUnknownProduct: a SKU is not in the catalogue.
	ErrUnknownProduct = errors.New("unknown product")
	// ErrUnavailable: a dependency did not answer (down, timed out, breaker open); try again later.
	ErrUnavailable = errors.New("dependency unavailable")
	// ErrCartFull: a checkout cart may hold at most MaxCartLines SKUs.
	ErrCartFull = errors.New("cart is full")
	// ErrStockReleased: inventory refuses to reserve stock for the order because a release (a
	// compensation) already ran for it; a reserve that raced the release lost. Final: the order must not
	// go on, and retrying cannot change the answer.
	ErrStockReleased = errors.New("stock was already released for this order")
	// ErrPaymentVoided: payment refuses to authorize the order because a void (a compensation) already
	// ran for it; an authorize that raced the void lost. Final, like ErrStockReleased.
	ErrPaymentVoided = errors.New("payment was already voided for this order")
	// ErrDependencyRefused: inventory or payment refused the request for a reason retrying cannot change
	// (items in several currencies, an order id already used with other items or another amount, a
	// request it found invalid). Final: the order fails with the dependency's explanation.
	ErrDependencyRefused = errors.New("a dependency refused the request")
)
