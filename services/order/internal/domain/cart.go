package domain

import (
	"fmt"
	"sort"
)

// MaxCartLines is the most SKUs a checkout cart holds.
const MaxCartLines = 50

// Cart is a checkout session's cart: absolute quantities per SKU and a revision bumped by every edit.
type Cart struct {
	items    map[string]int32
	Revision int64
}

// NewCart returns an empty cart.
func NewCart() *Cart { return &Cart{items: map[string]int32{}} }

// Set sets the quantity of sku; 0 removes it.
func (c *Cart) Set(sku string, qty int32) error {
	if qty < 0 || qty > MaxQuantity || sku == "" {
		return fmt.Errorf("%w: sku %q quantity %d", ErrInvalidOrder, sku, qty)
	}
	if qty == 0 {
		delete(c.items, sku)
	} else {
		if _, ok := c.items[sku]; !ok && len(c.items) >= MaxCartLines {
			return fmt.Errorf("%w: at most %d SKUs", ErrCartFull, MaxCartLines)
		}
		c.items[sku] = qty
	}
	c.Revision++
	return nil
}

// Clear empties the cart.
func (c *Cart) Clear() {
	clear(c.items)
	c.Revision++
}

// Lines returns the cart's lines sorted by SKU.
func (c *Cart) Lines() []Line {
	out := make([]Line, 0, len(c.items))
	for sku, q := range c.items {
		out = append(out, Line{SKU: sku, Quantity: q})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SKU < out[j].SKU })
	return out
}
