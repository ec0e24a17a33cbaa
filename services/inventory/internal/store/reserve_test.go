package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// Orders naming the same SKUs in opposite orders, reserved, committed and released at once: the
// product rows are always locked in SKU order, so no transaction deadlocks (PostgreSQL would abort one
// with 40P01, which Reserve reports), and stock is conserved (checked by forEachBackend).
func TestConcurrentReservesInAnyItemOrder(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		const workers = 40
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for i := range workers {
			wg.Go(func() {
				id := orderID(2000 + i)
				items := []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "SKU-0002", Quantity: 1}}
				if i%2 == 1 {
					items[0], items[1] = items[1], items[0]
				}
				_, err := s.Reserve(ctx(t), id, items)
				switch {
				case errors.Is(err, domain.ErrOutOfStock):
					return
				case err != nil:
					errs <- err
					return
				}
				if i%3 == 0 {
					_, err = s.Commit(ctx(t), id)
				} else {
					_, err = s.Release(ctx(t), id)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// The stored reservation carries the priced total and currency of its lines, and each line the price
// of its SKU, on every backend.
func TestReservationIsStoredPriced(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		items := []domain.Item{{SKU: "SKU-0002", Quantity: 2}, {SKU: "SKU-0001", Quantity: 3}, {SKU: "SKU-0002", Quantity: 1}}
		r, err := e.store.Reserve(ctx(t), orderID(1), items)
		if err != nil {
			t.Fatal(err)
		}
		var (
			currency string
			total    int64
		)
		if err := e.db.QueryRowContext(ctx(t), e.d.Rebind(`SELECT currency, total_cents FROM reservations WHERE order_id = ?`),
			orderID(1)).Scan(&currency, &total); err != nil {
			t.Fatal(err)
		}
		if currency != "EUR" || total != 3*1500+3*199 || total != r.Total() {
			t.Fatalf("stored %s %d, returned %s %d; want EUR %d", currency, total, r.Currency, r.Total(), 3*1500+3*199)
		}
		stored, err := e.store.Reservation(ctx(t), orderID(1))
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range stored.Lines {
			if l != r.Lines[i] || l.SKU != items[i].SKU || l.Quantity != items[i].Quantity {
				t.Fatalf("line %d stored %+v, returned %+v, asked %+v", i, l, r.Lines[i], items[i])
			}
		}
	})
}

// A transaction that has only referenced a product (a reservation line inserted, not yet committed:
// its foreign key check holds a key-share lock on the product row) must not block other orders'
// reserve and commit of that product: they lock the row the way a plain UPDATE does (FOR NO KEY
// UPDATE), which that lock allows. With FOR UPDATE both calls would wait until the other transaction
// ends; here it ends only after them, so they would run into their deadline.
func TestStockChangesAreNotBlockedByLineInserts(t *testing.T) {
	t.Parallel()
	db, d := storetest.Open(t, sqldbtest.Postgres(t))
	s := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
	if _, err := s.Seed(ctx(t), []domain.Product{{SKU: "SKU-0001", Name: "Cup", PriceCents: 199, Currency: "EUR", OnHand: 10}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(ctx(t), orderID(1), []domain.Item{{SKU: "SKU-0001", Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	other, err := db.BeginTx(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback() }()
	now := time.Now().UTC()
	if _, err := other.ExecContext(ctx(t), `INSERT INTO reservations (order_id, status, currency, total_cents, created_at, updated_at)
		VALUES ($1, 'HELD', 'EUR', 199, $2, $2)`, orderID(9), now); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx(t), `INSERT INTO reservation_lines (order_id, line_no, sku, quantity, unit_price_cents)
		VALUES ($1, 1, 'SKU-0001', 1, 199)`, orderID(9)); err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(ctx(t), 10*time.Second)
	defer cancel()
	if _, err := s.Reserve(c, orderID(2), []domain.Item{{SKU: "SKU-0001", Quantity: 1}}); err != nil {
		t.Fatalf("reserve beside an open line insert: %v", err)
	}
	if _, err := s.Commit(c, orderID(1)); err != nil {
		t.Fatalf("commit beside an open line insert: %v", err)
	}
}
