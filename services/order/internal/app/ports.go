package app

import (
	"context"
	"time"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// Orders stores orders. Every state change is written together with its event (outbox) in one
// transaction, and guarded by the order's version so that two writers never both finish one order.
type Orders interface {
	// Create stores a new PENDING order with its OrderCreated event, leased to the caller until
	// leaseUntil (recovery leaves it alone until then). If the customer already used the order's
	// idempotency key, nothing is stored and the existing order is returned with created == false.
	Create(ctx context.Context, o domain.Order, leaseUntil time.Time) (stored domain.Order, created bool, err error)
	// Get returns an order or domain.ErrNotFound.
	Get(ctx context.Context, id string) (domain.Order, error)
	// Update stores next, a transition of the order stored at version next.Version-1, with its event;
	// domain.ErrVersionConflict when the stored version differs. due, when not zero, records the
	// follow-up work the transition leaves — the compensation of a cancelled order that may still hold
	// stock or funds, the settlement of a confirmed one — and when the recovery worker may first claim it.
	Update(ctx context.Context, next domain.Order, due time.Time) error
	// ClaimStale leases up to limit PENDING orders whose lease ended at or before now, until
	// leaseUntil, and returns them; an order is claimed by one caller only.
	ClaimStale(ctx context.Context, now, leaseUntil time.Time, limit int) ([]domain.Order, error)
	// ClaimFollowups leases up to limit orders with pending work of kind whose next attempt is due at
	// or before now, the earliest due first, until leaseUntil (no other caller claims them until then),
	// and returns them, in one statement.
	ClaimFollowups(ctx context.Context, kind FollowupKind, now, leaseUntil time.Time, limit int) ([]Followup, error)
	// FollowupDone records that the order's work of kind is done, at at.
	FollowupDone(ctx context.Context, kind FollowupKind, id string, at time.Time) error
	// FollowupFailed records a failed attempt: one more attempt, its error, and when to try next.
	FollowupFailed(ctx context.Context, kind FollowupKind, id string, next time.Time, cause string) error
	// FollowupBacklog counts the orders with pending work of kind that changed (were cancelled or
	// confirmed) before changedBefore, or that failed at least minAttempts times (minAttempts > 0).
	FollowupBacklog(ctx context.Context, kind FollowupKind, changedBefore time.Time, minAttempts int) (int, error)
}

// FollowupKind names the work the saga leaves behind a terminal order.
type FollowupKind string

// The follow-up kinds.
const (
	// Compensation releases the stock and voids the payment of a cancelled order.
	Compensation FollowupKind = "compensation"
	// Settlement commits the stock and captures the payment of a confirmed order.
	Settlement FollowupKind = "settlement"
)

// Followup is one order's claimed follow-up work. It names the order only: the work needs no more,
// and the claim reads nothing else.
type Followup struct {
	OrderID    string
	CustomerID string
	Status     domain.Status
	// Attempts is how many attempts failed before; LastError the error of the latest.
	Attempts  int
	LastError string
}

// StockReserver holds and releases stock for orders (the inventory service). Both calls are
// idempotent per order id.
type StockReserver interface {
	// ReserveStock holds every line or none: domain.ErrOutOfStock / domain.ErrUnknownProduct for a
	// business refusal, domain.ErrStockReleased when a release for the order already ran (this reserve
	// lost the race and holds nothing), domain.ErrUnavailable when inventory could not be reached.
	ReserveStock(ctx context.Context, orderID string, lines []domain.Line) (Reservation, error)
	// ReleaseStock returns the order's held stock; releasing nothing succeeds.
	ReleaseStock(ctx context.Context, orderID string) error
	// CommitStock turns the order's held stock into a sale; committing again succeeds.
	// domain.ErrDependencyRefused when inventory refuses for good (the reservation was released or
	// never existed), domain.ErrUnavailable when inventory could not be reached.
	CommitStock(ctx context.Context, orderID string) error
}

// Reservation is the priced stock hold of an order.
type Reservation struct {
	Lines    []domain.Line
	Currency string
	// Released is true when the hold was already released (a compensation ran for this order).
	Released bool
}

// PaymentAuthorizer holds and voids funds for orders (the payment service). Both calls are idempotent
// per order id.
type PaymentAuthorizer interface {
	// AuthorizePayment returns the outcome; a decline is an outcome, not an error. domain.ErrPaymentVoided
	// when a void for the order already ran (nothing is held), domain.ErrUnavailable when payment could
	// not be reached.
	AuthorizePayment(ctx context.Context, req AuthorizeRequest) (Authorization, error)
	// VoidPayment releases held funds; voiding nothing succeeds. domain.ErrDependencyRefused when
	// payment refuses for good (the payment was captured), domain.ErrUnavailable when it could not be
	// reached.
	VoidPayment(ctx context.Context, orderID string) error
	// CapturePayment takes the order's held funds; capturing again succeeds. domain.ErrDependencyRefused
	// when payment refuses for good (voided, declined, no authorization), domain.ErrUnavailable when it
	// could not be reached.
	CapturePayment(ctx context.Context, orderID string) error
}

// AuthorizeRequest asks to hold an order's total.
type AuthorizeRequest struct {
	OrderID     string
	CustomerID  string
	AmountCents int64
	Currency    string
}

// Authorization is the outcome of AuthorizePayment.
type Authorization struct {
	Approved bool
	// Voided is true when a compensation already voided this order's authorization.
	Voided bool
	// Detail explains a decline ("INSUFFICIENT_FUNDS").
	Detail string
}

// Catalog reads products and stock levels (the inventory service) for quotes.
type Catalog interface {
	// Product returns one product, domain.ErrUnknownProduct or domain.ErrUnavailable.
	Product(ctx context.Context, sku string) (Product, error)
}

// Product is what a quote needs of a catalogue entry.
type Product struct {
	SKU        string
	Name       string
	PriceCents int64
	Currency   string
	Available  int64
}

// StatusFeed tells watchers that an order changed, from any instance.
type StatusFeed interface {
	// Subscribe delivers the version of each change of the order until stop is called. Deliveries may
	// be lost or repeated; watchers re-read the store.
	Subscribe(ctx context.Context, orderID string) (versions <-chan int64, stop func(), err error)
}
