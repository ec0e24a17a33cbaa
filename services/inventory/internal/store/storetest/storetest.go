// Package storetest opens migrated inventory databases for tests, on every backend.
package storetest

import (
	"context"
	"database/sql"
	"log/slog"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/migrations"
)

// Open migrates the database dsn names and opens it until the test ends.
func Open(t testing.TB, dsn string) (*sql.DB, sqldb.Dialect) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := migrate.UpAll(ctx, dsn, migrations.FS, migrate.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	return sqldbtest.Open(t, dsn)
}

// Ledger is one SKU's stock as stored and as its reservations account for it.
type Ledger struct {
	OnHand, Reserved int64
	// Held sums the lines of HELD reservations; Sold those of COMMITTED ones.
	Held, Sold int64
}

// Ledgers reads every SKU's ledger.
func Ledgers(t testing.TB, db *sql.DB) map[string]Ledger {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT p.sku, p.on_hand, p.reserved,
		COALESCE(SUM(CASE WHEN r.status = 'HELD' THEN l.quantity ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN r.status = 'COMMITTED' THEN l.quantity ELSE 0 END), 0)
		FROM products p
		LEFT JOIN reservation_lines l ON l.sku = p.sku
		LEFT JOIN reservations r ON r.order_id = l.order_id
		GROUP BY p.sku, p.on_hand, p.reserved`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]Ledger{}
	for rows.Next() {
		var sku string
		var l Ledger
		if err := rows.Scan(&sku, &l.OnHand, &l.Reserved, &l.Held, &l.Sold); err != nil {
			t.Fatal(err)
		}
		out[sku] = l
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// CheckConserved asserts, for every SKU, received = on_hand + sold (received: initial plus imported
// units), reserved = the sum of HELD reservation lines, and 0 <= reserved <= on_hand.
func CheckConserved(t testing.TB, db *sql.DB, received map[string]int64) {
	t.Helper()
	ls := Ledgers(t, db)
	if len(ls) != len(received) {
		t.Errorf("%d SKUs stored, %d expected", len(ls), len(received))
	}
	for sku, l := range ls {
		if got := l.OnHand + l.Sold; got != received[sku] {
			t.Errorf("%s: on_hand %d + sold %d = %d, want received %d", sku, l.OnHand, l.Sold, got, received[sku])
		}
		if l.Reserved != l.Held {
			t.Errorf("%s: reserved %d, but held reservations sum to %d", sku, l.Reserved, l.Held)
		}
		if l.Reserved < 0 || l.Reserved > l.OnHand {
			t.Errorf("%s: reserved %d outside [0, on_hand %d]", sku, l.Reserved, l.OnHand)
		}
	}
}

// OutboxCount counts the outbox rows of topic.
func OutboxCount(t testing.TB, db *sql.DB, d sqldb.Dialect, topic string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(d.Rebind("SELECT count(*) FROM outbox WHERE topic = ?"), topic).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
