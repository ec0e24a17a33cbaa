// Package app holds inventory's use cases: reserve, commit and release stock for orders, read the
// catalogue, watch levels, import deliveries, apply order events exactly once, and seed a dev catalogue.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// Deps are the adapters the use cases run on.
type Deps struct {
	Stock   Stock
	Effects EventEffects
	Feed    StockFeed
	// Logger receives what an event handler acknowledges without applying it.
	Logger *slog.Logger
}

// Settings name what the application records under.
type Settings struct {
	// Consumer names the inbox of the order events (the Kafka consumer group).
	Consumer string
}

// App is the inventory application.
type App struct {
	stock    Stock
	effects  EventEffects
	feed     StockFeed
	consumer string
	log      *slog.Logger
}

// New checks the dependencies and settings and returns the application.
func New(d Deps, s Settings) (*App, error) {
	if d.Stock == nil || d.Effects == nil || d.Feed == nil || d.Logger == nil {
		return nil, errors.New("app: stock, effects, feed and logger are required")
	}
	if s.Consumer == "" {
		return nil, errors.New("app settings: consumer: must be set")
	}
	return &App{stock: d.Stock, effects: d.Effects, feed: d.Feed, consumer: s.Consumer, log: d.Logger}, nil
}

// ReserveStock holds and prices every item of an order, all or none; idempotent per order.
func (s *App) ReserveStock(ctx context.Context, orderID string, items []domain.Item) (domain.Reservation, error) {
	return s.stock.Reserve(ctx, orderID, items)
}

// CommitStock turns an order's hold into a sale; idempotent.
func (s *App) CommitStock(ctx context.Context, orderID string) (domain.Reservation, error) {
	if !domain.ValidOrderID(orderID) {
		return domain.Reservation{}, &domain.InvalidError{Field: "order_id", Reason: "must be a canonical lowercase UUID"}
	}
	return s.stock.Commit(ctx, orderID)
}

// ReleaseStock returns an order's hold to available. An unknown order succeeds with found=false, so
// compensation can always run to completion; the store leaves a tombstone, so a reserve of that order
// landing later is refused (domain.ErrReservationReleased).
func (s *App) ReleaseStock(ctx context.Context, orderID string) (r domain.Reservation, found bool, err error) {
	if !domain.ValidOrderID(orderID) {
		return domain.Reservation{}, false, &domain.InvalidError{Field: "order_id", Reason: "must be a canonical lowercase UUID"}
	}
	r, err = s.stock.Release(ctx, orderID)
	if errors.Is(err, domain.ErrReservationNotFound) {
		return domain.Reservation{}, false, nil
	}
	if err != nil {
		return domain.Reservation{}, false, err
	}
	if r.Tombstone() {
		return domain.Reservation{}, false, nil
	}
	return r, true, nil
}

// GetProduct returns one product.
func (s *App) GetProduct(ctx context.Context, sku string) (domain.Product, error) {
	return s.stock.Product(ctx, sku)
}

// Page sizes of ListProducts.
const (
	DefaultPageSize = 50
	MaxPageSize     = 100
)

// ListProducts returns the page of products after afterSKU, in SKU order, and whether more follow.
func (s *App) ListProducts(ctx context.Context, afterSKU string, pageSize int) ([]domain.Product, bool, error) {
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	pageSize = min(pageSize, MaxPageSize)
	ps, err := s.stock.Products(ctx, afterSKU, pageSize+1)
	if err != nil {
		return nil, false, err
	}
	if len(ps) > pageSize {
		return ps[:pageSize], true, nil
	}
	return ps, false, nil
}

// ImportLine applies one import line, unless an earlier stream of its import applied it already
// (ImportResult.Skipped).
func (s *App) ImportLine(ctx context.Context, line domain.ImportLine) (domain.ImportResult, error) {
	return s.stock.Import(ctx, line)
}

// WatchStock sends the current level of every watched SKU (every product when skus is empty), then
// each later change, until ctx ends. Unknown SKUs fail with ErrUnknownProduct before anything is
// sent. Levels not newer than the last one sent for their SKU are dropped, so the subscription may
// start before the snapshot (nothing is missed) without sending stale levels.
func (s *App) WatchStock(ctx context.Context, skus []string, send func(domain.StockLevel) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := s.feed.Watch(ctx, skus)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	products, err := s.stock.ProductsBySKU(ctx, skus)
	if err != nil {
		return err
	}
	last := make(map[string]int64, len(products))
	for _, p := range products {
		last[p.SKU] = p.Version
	}
	for _, sku := range skus {
		if _, ok := last[sku]; !ok {
			return &domain.StockError{SKU: sku, Err: domain.ErrUnknownProduct}
		}
	}
	for _, p := range products {
		if err := send(p.Level()); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case lvl, ok := <-changes:
			if !ok {
				return nil
			}
			if lvl.Version <= last[lvl.SKU] {
				continue
			}
			last[lvl.SKU] = lvl.Version
			if err := send(lvl); err != nil {
				return err
			}
		}
	}
}

// OnOrderConfirmed commits the order's stock once per event. A reservation that does not exist or was
// released cannot be committed however often the event comes back: it is logged and acknowledged.
func (s *App) OnOrderConfirmed(ctx context.Context, eventID, orderID string) error {
	err := s.effects.CommitOnce(ctx, s.consumer, eventID, orderID)
	if errors.Is(err, domain.ErrReservationNotFound) || errors.Is(err, domain.ErrReservationReleased) {
		s.log.WarnContext(ctx, "order confirmed without a held reservation", "order_id", orderID, "event_id", eventID, "err", err)
		return nil
	}
	return err
}

// OnOrderConfirmedBatch applies several OrderConfirmed events, of different orders, at once: their
// commits in one transaction (EventEffects.CommitBatchOnce); done means each committed its
// reservation. It does so only when every one is the plain commit, all or none: done is false, with
// nothing applied, when one of them is not (a reservation not HELD or missing, a repeat of a recorded
// event) or when the store has no such step (SQLite); the caller then applies each with
// OnOrderConfirmed, which tells those cases apart.
func (s *App) OnOrderConfirmedBatch(ctx context.Context, es []Confirmation) (done bool, err error) {
	if len(es) == 0 {
		return true, nil
	}
	done, err = s.effects.CommitBatchOnce(ctx, s.consumer, es)
	if err != nil {
		return false, fmt.Errorf("%d order events from %s: %w", len(es), es[0].EventID, err)
	}
	return done, nil
}

// OnOrderCancelled releases the order's stock once per event. Nothing to release, or stock already
// sold, are acknowledged: retrying cannot change them.
func (s *App) OnOrderCancelled(ctx context.Context, eventID, orderID string) error {
	err := s.effects.ReleaseOnce(ctx, s.consumer, eventID, orderID)
	if errors.Is(err, domain.ErrReservationNotFound) {
		return nil
	}
	if errors.Is(err, domain.ErrReservationCommitted) {
		s.log.WarnContext(ctx, "order cancelled after its stock was committed", "order_id", orderID, "event_id", eventID)
		return nil
	}
	return err
}
