package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// LineStatus says whether a quoted line could be ordered now.
type LineStatus int

// The line statuses.
const (
	LineAvailable LineStatus = iota + 1
	LineInsufficientStock
	LineUnknownProduct
)

// QuoteLine is one priced cart line.
type QuoteLine struct {
	SKU            string
	Name           string
	Quantity       int32
	UnitPriceCents int64
	LineTotalCents int64
	Status         LineStatus
	Available      int64
}

// Quote prices a cart with current prices and stock. Nothing is reserved.
type Quote struct {
	Lines      []QuoteLine
	TotalCents int64
	Currency   string
	Orderable  bool
}

// QuoteCart prices lines (sorted by SKU, as a domain.Cart returns them) from the catalogue.
func (a *App) QuoteCart(ctx context.Context, lines []domain.Line) (Quote, error) {
	q := Quote{Lines: make([]QuoteLine, 0, len(lines)), Orderable: len(lines) > 0}
	for _, l := range lines {
		ql := QuoteLine{SKU: l.SKU, Quantity: l.Quantity}
		p, err := a.catalog.Product(ctx, l.SKU)
		switch {
		case errors.Is(err, domain.ErrUnknownProduct):
			ql.Status = LineUnknownProduct
		case err != nil:
			return Quote{}, fmt.Errorf("quote %s: %w", l.SKU, err)
		default:
			ql.Name, ql.UnitPriceCents, ql.Available = p.Name, p.PriceCents, p.Available
			ql.LineTotalCents = int64(l.Quantity) * p.PriceCents
			ql.Status = LineAvailable
			if p.Available < int64(l.Quantity) {
				ql.Status = LineInsufficientStock
			}
			if q.Currency == "" {
				q.Currency = p.Currency
			}
			q.TotalCents += ql.LineTotalCents
		}
		if ql.Status != LineAvailable {
			q.Orderable = false
		}
		q.Lines = append(q.Lines, ql)
	}
	return q, nil
}
