// Package domain is the order aggregate and its state machine: PENDING is the only state that changes,
// CONFIRMED and CANCELLED are final, and every change bumps the version by one. Standard library only.
package domain

import (
	"fmt"
	"time"
)

// Status is the lifecycle state of an order.
type Status string

// The statuses. Pending is the only non-terminal one.
const (
	Pending   Status = "PENDING"
	Confirmed Status = "CONFIRMED"
	Cancelled Status = "CANCELLED"
)

// Terminal reports whether s never changes again.
func (s Status) Terminal() bool { return s == Confirmed || s == Cancelled }

// CancelReason says why an order was cancelled.
type CancelReason string

// The cancel reasons; NoReason unless the order is cancelled.
const (
	NoReason          CancelReason = ""
	OutOfStock        CancelReason = "OUT_OF_STOCK"
	UnknownProduct    CancelReason = "UNKNOWN_PRODUCT"
	PaymentDeclined   CancelReason = "PAYMENT_DECLINED"
	CustomerRequested CancelReason = "CUSTOMER_REQUESTED"
	DependencyFailed  CancelReason = "DEPENDENCY_FAILED"
)

// Limits of one order.
const (
	MaxLines       = 50
	MaxQuantity    = 1000
	MaxCustomerLen = 64
)

// Line is one order line; prices are 0 until inventory priced the reservation.
type Line struct {
	SKU            string
	Quantity       int32
	UnitPriceCents int64
	LineTotalCents int64
}

// Order is the order aggregate.
type Order struct {
	ID             string
	CustomerID     string
	IdempotencyKey string
	Status         Status
	CancelReason   CancelReason
	CancelDetail   string
	Lines          []Line
	TotalCents     int64
	Currency       string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// Version starts at 1 and grows by one on every change; it equals the aggregate_version of the
	// order's latest event.
	Version int64
}

// NewOrder returns a PENDING order at version 1.
func NewOrder(id, customerID, idempotencyKey string, lines []Line, now time.Time) (Order, error) {
	if id == "" || customerID == "" {
		return Order{}, fmt.Errorf("%w: id and customer are required", ErrInvalidOrder)
	}
	if len(lines) == 0 || len(lines) > MaxLines {
		return Order{}, fmt.Errorf("%w: %d lines, want 1..%d", ErrInvalidOrder, len(lines), MaxLines)
	}
	seen := make(map[string]bool, len(lines))
	out := make([]Line, len(lines))
	for i, l := range lines {
		if l.SKU == "" || l.Quantity < 1 || l.Quantity > MaxQuantity {
			return Order{}, fmt.Errorf("%w: line %d: sku %q quantity %d", ErrInvalidOrder, i, l.SKU, l.Quantity)
		}
		if seen[l.SKU] {
			return Order{}, fmt.Errorf("%w: sku %s appears twice", ErrInvalidOrder, l.SKU)
		}
		seen[l.SKU] = true
		out[i] = Line{SKU: l.SKU, Quantity: l.Quantity}
	}
	return Order{
		ID: id, CustomerID: customerID, IdempotencyKey: idempotencyKey,
		Status: Pending, Lines: out, CreatedAt: now, UpdatedAt: now, Version: 1,
	}, nil
}

// SameRequest reports whether lines ask for what o asked for (same SKUs and quantities, same order),
// which is what an idempotent retry must do.
func (o Order) SameRequest(lines []Line) bool {
	if len(lines) != len(o.Lines) {
		return false
	}
	for i, l := range lines {
		if l.SKU != o.Lines[i].SKU || l.Quantity != o.Lines[i].Quantity {
			return false
		}
	}
	return true
}

// Priced returns o with the prices of a reservation: lines must match o's SKUs and quantities.
func (o Order) Priced(lines []Line, currency string) (Order, error) {
	if !o.SameRequest(lines) {
		return Order{}, fmt.Errorf("%w: reservation lines do not match the order", ErrInvalidOrder)
	}
	next := o
	next.Lines = make([]Line, len(lines))
	next.TotalCents = 0
	for i, l := range lines {
		if l.UnitPriceCents < 0 {
			return Order{}, fmt.Errorf("%w: negative price for %s", ErrInvalidOrder, l.SKU)
		}
		l.LineTotalCents = int64(l.Quantity) * l.UnitPriceCents
		next.Lines[i] = l
		next.TotalCents += l.LineTotalCents
	}
	next.Currency = currency
	return next, nil
}

// Confirm moves a PENDING order to CONFIRMED. The order must be priced (see Priced).
func (o Order) Confirm(now time.Time) (Order, error) {
	if err := o.mustBePending(); err != nil {
		return Order{}, err
	}
	if o.TotalCents <= 0 || o.Currency == "" {
		return Order{}, fmt.Errorf("%w: confirming an unpriced order", ErrInvalidOrder)
	}
	next := o
	next.Status = Confirmed
	next.UpdatedAt = now
	next.Version++
	return next, nil
}

// Cancel moves a PENDING order to CANCELLED with a reason.
func (o Order) Cancel(reason CancelReason, detail string, now time.Time) (Order, error) {
	if err := o.mustBePending(); err != nil {
		return Order{}, err
	}
	switch reason {
	case OutOfStock, UnknownProduct, PaymentDeclined, CustomerRequested, DependencyFailed:
	default:
		return Order{}, fmt.Errorf("%w: cancel reason %q", ErrInvalidOrder, reason)
	}
	next := o
	next.Status = Cancelled
	next.CancelReason = reason
	next.CancelDetail = detail
	next.UpdatedAt = now
	next.Version++
	return next, nil
}

func (o Order) mustBePending() error {
	switch o.Status {
	case Pending:
		return nil
	case Confirmed:
		return fmt.Errorf("%w: %w", ErrNotPending, ErrOrderConfirmed)
	default:
		return fmt.Errorf("%w: order is %s", ErrNotPending, o.Status)
	}
}
