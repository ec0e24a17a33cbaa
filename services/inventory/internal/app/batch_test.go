package app_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// OnOrderConfirmedBatch commits a batch of confirmed orders under the application's inbox name on
// PostgreSQL; on SQLite it leaves the batch to OnOrderConfirmed, applying nothing.
func TestOnOrderConfirmedBatch(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			db, d := storetest.Open(t, b.DSN(t))
			st := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
			a, err := app.New(app.Deps{Stock: st, Effects: st, Feed: noFeed{}, Logger: slog.New(slog.DiscardHandler)},
				app.Settings{Consumer: "inventory"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Seed(ctx, []domain.Product{{SKU: "SKU-0001", Name: "Cup", PriceCents: 199, Currency: "EUR", OnHand: 10}}); err != nil {
				t.Fatal(err)
			}
			es := []app.Confirmation{{EventID: "evt-1", OrderID: "00000000-0000-4000-8000-000000000001"},
				{EventID: "evt-2", OrderID: "00000000-0000-4000-8000-000000000002"}}
			for _, e := range es {
				if _, err := a.ReserveStock(ctx, e.OrderID, []domain.Item{{SKU: "SKU-0001", Quantity: 2}}); err != nil {
					t.Fatal(err)
				}
			}
			done, err := a.OnOrderConfirmedBatch(ctx, es)
			if err != nil || done != (d == sqldb.Postgres) {
				t.Fatalf("batch = %v, %v; want done only on PostgreSQL", done, err)
			}
			want, recorded := domain.StatusHeld, 0
			if done {
				want, recorded = domain.StatusCommitted, len(es)
			}
			for _, e := range es {
				if r, err := st.Reservation(ctx, e.OrderID); err != nil || r.Status != want {
					t.Errorf("%s = %s, %v; want %s", e.OrderID, r.Status, err, want)
				}
			}
			var n int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM inbox WHERE consumer = 'inventory'").Scan(&n); err != nil || n != recorded {
				t.Errorf("inbox records = %d, %v; want %d", n, err, recorded)
			}
			if done, err := a.OnOrderConfirmedBatch(ctx, nil); err != nil || !done {
				t.Errorf("empty batch = %v, %v", done, err)
			}
		})
	}
}
