// Package domain holds inventory's rules — stock accounting, reservation life cycle, import lines —
// with no dependency beyond the standard library.
package domain

import (
	"regexp"
	"time"
)

var (
	skuPattern      = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{1,31}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

// Product is a catalogue entry with its stock levels. Prices are minor units of Currency.
type Product struct {
	SKU        string
	Name       string
	PriceCents int64
	Currency   string
	OnHand     int64
	Reserved   int64
	Version    int64
	UpdatedAt  time.Time
}

// Available is what a new order can get.
func (p Product) Available() int64 { return p.OnHand - p.Reserved }

// Level is the product's stock snapshot.
func (p Product) Level() StockLevel {
	return StockLevel{SKU: p.SKU, OnHand: p.OnHand, Reserved: p.Reserved, Version: p.Version, UpdatedAt: p.UpdatedAt}
}

// StockLevel is a point-in-time stock snapshot of one SKU.
type StockLevel struct {
	SKU       string
	OnHand    int64
	Reserved  int64
	Version   int64
	UpdatedAt time.Time
}

// Available is OnHand - Reserved.
func (l StockLevel) Available() int64 { return l.OnHand - l.Reserved }

// Cause says which operation moved stock.
type Cause int

// The causes, in the order of the StockChangeCause enum.
const (
	CauseReserved Cause = iota + 1
	CauseReleased
	CauseCommitted
	CauseImported
)

// StockChange is one SKU's new level after an operation; every change is published as an event.
type StockChange struct {
	Level StockLevel
	// Delta is the signed change of available.
	Delta   int64
	Cause   Cause
	OrderID string
}

// ValidSKU reports whether s has the SKU shape.
func ValidSKU(s string) bool { return skuPattern.MatchString(s) }

// ImportLine adds Quantity units to a SKU, creating or updating its catalogue entry.
type ImportLine struct {
	SKU        string
	Quantity   int64
	Name       *string
	PriceCents *int64
	Currency   *string
}

// MaxImportQuantity bounds one import line.
const MaxImportQuantity = 1_000_000

// Validate checks the line on its own; whether a new SKU has what it needs is checked by Apply.
func (l ImportLine) Validate() error {
	switch {
	case !ValidSKU(l.SKU):
		return invalid("sku", "must match ^[A-Z0-9][A-Z0-9-]{1,31}$")
	case l.Quantity < 1 || l.Quantity > MaxImportQuantity:
		return invalid("quantity", "must be between 1 and 1000000")
	case l.Name != nil && (*l.Name == "" || len(*l.Name) > 200):
		return invalid("name", "must be 1 to 200 characters")
	case l.PriceCents != nil && (*l.PriceCents <= 0 || *l.PriceCents > 100_000_000):
		return invalid("price_cents", "must be between 1 and 100000000")
	case (l.PriceCents == nil) != (l.Currency == nil):
		return invalid("currency", "required with price_cents, and only with it")
	case l.Currency != nil && !currencyPattern.MatchString(*l.Currency):
		return invalid("currency", "must be an ISO 4217 code like EUR")
	}
	return nil
}

// NewProduct builds the product a line creates for an unknown SKU.
func (l ImportLine) NewProduct(now time.Time) (Product, error) {
	if err := l.Validate(); err != nil {
		return Product{}, err
	}
	if l.Name == nil || l.PriceCents == nil {
		return Product{}, invalid("sku", "new SKU needs name and price_cents")
	}
	return Product{SKU: l.SKU, Name: *l.Name, PriceCents: *l.PriceCents, Currency: *l.Currency,
		OnHand: l.Quantity, Version: 1, UpdatedAt: now}, nil
}
