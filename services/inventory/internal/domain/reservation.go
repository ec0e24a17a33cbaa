package domain

import (
	"regexp"
	"slices"
	"time"
)

var orderIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Status is the life-cycle state of a reservation.
type Status string

// The statuses: HELD, then COMMITTED or RELEASED, both terminal.
const (
	StatusHeld      Status = "HELD"
	StatusCommitted Status = "COMMITTED"
	StatusReleased  Status = "RELEASED"
)

// Item is one requested line.
type Item struct {
	SKU      string
	Quantity int64
}

// Line is one reserved and priced line.
type Line struct {
	SKU            string
	Quantity       int64
	UnitPriceCents int64
}

// Total is Quantity * UnitPriceCents.
func (l Line) Total() int64 { return l.Quantity * l.UnitPriceCents }

// Reservation is the stock hold of one order.
type Reservation struct {
	OrderID   string
	Status    Status
	Lines     []Line
	Currency  string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Tombstone reports whether r records a release that arrived before any reservation of the order:
// RELEASED with no lines (a real reservation always has at least one). It makes a late reserve of the
// order fail with ErrReservationReleased instead of holding stock nothing would give back.
func (r Reservation) Tombstone() bool { return r.Status == StatusReleased && len(r.Lines) == 0 }

// Total is the sum of the line totals.
func (r Reservation) Total() int64 {
	var t int64
	for _, l := range r.Lines {
		t += l.Total()
	}
	return t
}

// Items returns what was requested, to compare a retried request with.
func (r Reservation) Items() []Item {
	items := make([]Item, len(r.Lines))
	for i, l := range r.Lines {
		items[i] = Item{SKU: l.SKU, Quantity: l.Quantity}
	}
	return items
}

// Limits of one reservation request.
const (
	MaxItems        = 50
	MaxLineQuantity = 1000
)

// ValidateReservation checks an order id and its items.
func ValidateReservation(orderID string, items []Item) error {
	if !ValidOrderID(orderID) {
		return invalid("order_id", "must be a canonical lowercase UUID")
	}
	if len(items) == 0 || len(items) > MaxItems {
		return invalid("items", "must have 1 to 50 lines")
	}
	for _, it := range items {
		if !ValidSKU(it.SKU) {
			return invalid("items.sku", "must match ^[A-Z0-9][A-Z0-9-]{1,31}$")
		}
		if it.Quantity < 1 || it.Quantity > MaxLineQuantity {
			return invalid("items.quantity", "must be between 1 and 1000")
		}
	}
	return nil
}

// ValidOrderID reports whether s is a canonical lowercase UUID.
func ValidOrderID(s string) bool { return orderIDPattern.MatchString(s) }

// Need is the total quantity of one SKU an order asks for.
type Need struct {
	SKU      string
	Quantity int64
}

// Needs sums the items per SKU, in SKU order: taking row locks in one global order is what keeps
// concurrent reservations from deadlocking.
func Needs(items []Item) []Need {
	sum := map[string]int64{}
	for _, it := range items {
		sum[it.SKU] += it.Quantity
	}
	out := make([]Need, 0, len(sum))
	for sku, q := range sum {
		out = append(out, Need{SKU: sku, Quantity: q})
	}
	slices.SortFunc(out, func(a, b Need) int {
		switch {
		case a.SKU < b.SKU:
			return -1
		case a.SKU > b.SKU:
			return 1
		}
		return 0
	})
	return out
}

// SameItems reports whether a retried request asks for what the reservation holds.
func (r Reservation) SameItems(items []Item) bool { return slices.Equal(r.Items(), items) }

// Transition is what an operation does to a reservation in a given state.
type Transition int

// Outcomes of Commit and Release.
const (
	// Apply moves the stock and the status.
	Apply Transition = iota + 1
	// NoOp returns the reservation unchanged (an idempotent repeat).
	NoOp
)

// Commit decides what committing a reservation in state s does.
func (s Status) Commit() (Transition, error) {
	switch s {
	case StatusHeld:
		return Apply, nil
	case StatusCommitted:
		return NoOp, nil
	case StatusReleased:
		return 0, ErrReservationReleased
	}
	return 0, ErrReservationNotFound
}

// Release decides what releasing a reservation in state s does. Releasing a committed reservation is
// refused (FAILED_PRECONDITION): the units are sold, and giving them back is a return, not a
// compensation — a saga that tries it has a bug worth surfacing.
func (s Status) Release() (Transition, error) {
	switch s {
	case StatusHeld:
		return Apply, nil
	case StatusReleased:
		return NoOp, nil
	case StatusCommitted:
		return 0, ErrReservationCommitted
	}
	return 0, ErrReservationNotFound
}
