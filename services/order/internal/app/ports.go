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
	// Status returns an order's status (cheaper than Get) or domain.ErrNotFound.
	Status(ctx context.Context, id string) (domain.Status, error)
	// Update stores next, a transition of the order stored at version next.Version-1, with its event;
	// domain.ErrVersionConflict when the stored version differs. compensate records that a cancelled
	// order may still hold stock or funds that must be released.
	Update(ctx context.Context, next domain.Order, compensate bool) error
	// ClaimStale leases up to limit PENDING orders whose lease ended at or before now, until
	// leaseUntil, and returns them; an order is claimed by one caller only.
	ClaimStale(ctx context.Context, now, leaseUntil time.Time, limit int) ([]domain.Order, error)
	// PendingCompensation returns up to limit cancelled orders whose compensation is not known to be
	// done and that last changed before before.
	PendingCompensation(ctx context.Context, before time.Time, limit int) ([]domain.Order, error)
	// CompensationDone records that an order's stock and funds are released.
	CompensationDone(ctx context.Context, id string) error
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
	// VoidPayment releases held funds; voiding nothing succeeds.
	VoidPayment(ctx context.Context, orderID string) error
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
