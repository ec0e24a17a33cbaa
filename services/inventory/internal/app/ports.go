package app

import (
	"context"

	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// The ports the use cases run on; the adapters (store, events) assert at compile time that they
// implement them.

// Stock is the store the use cases run on.
type Stock interface {
	Reserve(ctx context.Context, orderID string, items []domain.Item) (domain.Reservation, error)
	Commit(ctx context.Context, orderID string) (domain.Reservation, error)
	Release(ctx context.Context, orderID string) (domain.Reservation, error)
	Product(ctx context.Context, sku string) (domain.Product, error)
	Products(ctx context.Context, afterSKU string, limit int) ([]domain.Product, error)
	ProductsBySKU(ctx context.Context, skus []string) ([]domain.Product, error)
	// Import applies a line at most once per (ImportID, Seq); see store.Store.Import.
	Import(ctx context.Context, line domain.ImportLine) (domain.ImportResult, error)
	Seed(ctx context.Context, products []domain.Product) (int, error)
}

// EventEffects applies an event's effect together with its inbox record, so it happens once.
type EventEffects interface {
	CommitOnce(ctx context.Context, consumer, eventID, orderID string) error
	ReleaseOnce(ctx context.Context, consumer, eventID, orderID string) error
	// CommitBatchOnce is CommitOnce for several events of different orders at once, all or none: done
	// is false, with nothing written, when one of them is not the plain commit of a HELD reservation
	// by a new event, or when the store has no such step (SQLite).
	CommitBatchOnce(ctx context.Context, consumer string, es []Confirmation) (done bool, err error)
}

// Confirmation is an OrderConfirmed event: its id and the order whose stock it commits.
type Confirmation struct{ EventID, OrderID string }

// StockFeed streams the levels of changed SKUs (all when skus is empty) until ctx ends.
type StockFeed interface {
	Watch(ctx context.Context, skus []string) (<-chan domain.StockLevel, error)
}
