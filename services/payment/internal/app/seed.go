package app

import (
	"context"
	"fmt"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// Development accounts: cust-0001 … cust-1000 with DevBalance each, and cust-broke with nothing.
const (
	DevAccounts = 1000
	DevBalance  = 10_000_000
	DevCurrency = "EUR"
	BrokeID     = "cust-broke"
)

// DevAccountSet returns the development accounts.
func DevAccountSet() []domain.Account {
	out := make([]domain.Account, 0, DevAccounts+1)
	for i := 1; i <= DevAccounts; i++ {
		out = append(out, domain.Account{CustomerID: fmt.Sprintf("cust-%04d", i), Balance: DevBalance, Currency: DevCurrency})
	}
	return append(out, domain.Account{CustomerID: BrokeID, Currency: DevCurrency})
}

// SeedDev creates the development accounts that do not exist yet; existing ones keep their balances,
// so a restart changes nothing. It reports how many it created.
func (s *App) SeedDev(ctx context.Context) (int, error) {
	n, err := s.store.SeedAccounts(ctx, DevAccountSet())
	if err != nil {
		return 0, fmt.Errorf("seed: %w", err)
	}
	return n, nil
}
