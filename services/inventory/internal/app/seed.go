package app

import (
	"context"
	"fmt"

	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

var devNames = []string{
	"Espresso Cup", "Latte Mug", "French Press", "Pour-Over Kettle", "Burr Grinder", "Milk Frother",
	"Tea Infuser", "Travel Tumbler", "Coffee Scale", "Filter Papers", "Cold Brew Jar", "Moka Pot",
	"Tamper", "Knock Box", "Barista Apron", "Cleaning Tablets", "Descaler", "Bean Canister",
	"Cup Warmer", "Drip Tray", "Portafilter", "Steam Pitcher", "Espresso Machine", "Roaster Kit",
}

// DevCatalog is the dev seed: n SKUs SKU-0001.. with readable names, prices spread over 1.99–99.99 EUR
// and stock units each.
func DevCatalog(n int, stock int64) []domain.Product {
	out := make([]domain.Product, n)
	for i := range n {
		name := devNames[i%len(devNames)]
		if i >= len(devNames) {
			name = fmt.Sprintf("%s %d", name, i/len(devNames)+1)
		}
		price := int64(199)
		if n > 1 {
			price = 199 + int64(i)*(9999-199)/int64(n-1)
		}
		out[i] = domain.Product{
			SKU: fmt.Sprintf("SKU-%04d", i+1), Name: name, PriceCents: price, Currency: "EUR", OnHand: stock,
		}
	}
	return out
}

// Seed inserts the products that are missing and reports how many it inserted; existing SKUs keep
// their stock, so seeding on every start is safe.
func (s *App) Seed(ctx context.Context, products []domain.Product) (int, error) {
	return s.stock.Seed(ctx, products)
}
