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
