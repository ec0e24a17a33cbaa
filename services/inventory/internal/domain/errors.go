package domain

import (
	"errors"
	"fmt"
)

// Domain errors. Adapters map them to transport codes once (rpc/errors.go).
var (
	ErrInvalid              = errors.New("invalid request")
	ErrUnknownProduct       = errors.New("unknown product")
	ErrOutOfStock           = errors.New("insufficient stock")
	ErrMixedCurrency        = errors.New("items priced in different currencies")
	ErrReservationNotFound  = errors.New("reservation not found")
	ErrReservationReleased  = errors.New("reservation was released")
	ErrReservationCommitted = errors.New("reservation was committed")
	ErrReservationMismatch  = errors.New("order already has a different reservation")
)

// StockError says which SKU made a reservation fail; it unwraps to ErrUnknownProduct or ErrOutOfStock.
type StockError struct {
	SKU       string
	Requested int64
	Available int64
	Err       error
}

func (e *StockError) Error() string {
	if errors.Is(e.Err, ErrOutOfStock) {
		return fmt.Sprintf("%s: %v (requested %d, available %d)", e.SKU, e.Err, e.Requested, e.Available)
	}
	return fmt.Sprintf("%s: %v", e.SKU, e.Err)
}

func (e *StockError) Unwrap() error { return e.Err }

// InvalidError names the field a request got wrong; it unwraps to ErrInvalid.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, reason string) error { return &InvalidError{Field: field, Reason: reason} }
