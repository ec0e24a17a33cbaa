package store_test

import (
	"context"
	"errors"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// roundTrips counts the statements (sql.exec, sql.query) and transactions (sql.begin) fn sends, from
// the spans of a traced connection pool.
type roundTrips struct {
	spans *tracetest.InMemoryExporter
	tp    *sdktrace.TracerProvider
}

func (r roundTrips) count(t *testing.T, fn func(ctx context.Context)) (statements, transactions int) {
	t.Helper()
	r.spans.Reset()
	c, root := r.tp.Tracer("test").Start(ctx(t), "op")
	fn(c)
	root.End()
	for _, s := range r.spans.GetSpans() {
		switch s.Name {
		case "sql.exec", "sql.query":
			statements++
		case "sql.begin":
			transactions++
		}
	}
	return statements, transactions
}

// On PostgreSQL the order path's stock changes are one statement each, plus the outbox insert: a
// first-time Reserve and the Commit that OrderConfirmed causes (its inbox record is part of the
// settling statement) cost one transaction of two statements each, whatever the number of SKUs. The
// StockChanged events carry the levels after the change, which only the database knows when it makes
// it, so their insert stays a second statement of the transaction. Settlements that find the work done
// — the order service's later commit of every confirmed order, an OrderCancelled whose stock the
// compensation released already — are one statement outside any transaction (no BEGIN/COMMIT), and so
// is the OrderCancelled of an order never reserved (its tombstone); a redelivered event is one
// statement, the order service's release of an order never reserved two in a transaction.
// (Before issue 20's second round: the event-driven commit 3 statements; the settlement's repeat 1
// statement in a transaction; the OrderCancelled after the compensation 2 in a transaction, before the
// reserve 3. Before its
// first round: Reserve 5 statements with one SKU, 7 with two; the commit or release 6 with one SKU, 7
// with two; the repeat 3; the tombstone 3.)
// The statement counts are the figures docs/BENCHMARKS.md reports per order.
func TestOrderPathStatementsOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	_, _ = storetest.Open(t, dsn) // migrates
	rt := roundTrips{spans: tracetest.NewInMemoryExporter()}
	rt.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(rt.spans))
	db, d, err := sqldb.Open(ctx(t), dsn, sqldb.Options{TracerProvider: rt.tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
	if _, err := s.Seed(ctx(t), []domain.Product{
		{SKU: "SKU-0001", Name: "Cup", PriceCents: 199, Currency: "EUR", OnHand: 10},
		{SKU: "SKU-0002", Name: "Mug", PriceCents: 1500, Currency: "EUR", OnHand: 5},
	}); err != nil {
		t.Fatal(err)
	}
	items := []domain.Item{{SKU: "SKU-0002", Quantity: 1}, {SKU: "SKU-0001", Quantity: 2}}
	for _, step := range []struct {
		name           string
		fn             func(ctx context.Context) error
		statements, tx int
	}{
		{"reserve", func(c context.Context) error { _, err := s.Reserve(c, orderID(1), items); return err }, 2, 1},
		{"commit once", func(c context.Context) error { return s.CommitOnce(c, "inventory", "ev-1", orderID(1)) }, 2, 1},
		{"reserve other", func(c context.Context) error { _, err := s.Reserve(c, orderID(2), items[:1]); return err }, 2, 1},
		// OrderCancelled before the compensation: the look that finds the reservation HELD, then the
		// transaction.
		{"release once", func(c context.Context) error { return s.ReleaseOnce(c, "inventory", "ev-2", orderID(2)) }, 3, 1},
		// The compensation released first (payment declined), then OrderCancelled comes.
		{"reserve third", func(c context.Context) error { _, err := s.Reserve(c, orderID(4), items[:1]); return err }, 2, 1},
		{"release", func(c context.Context) error { _, err := s.Release(c, orderID(4)); return err }, 2, 1},
		{"release once after release", func(c context.Context) error {
			return s.ReleaseOnce(c, "inventory", "ev-4", orderID(4))
		}, 1, 0},
		// The order service's settlement commits again later: the repeat reads what settleOne returns.
		{"commit again", func(c context.Context) error {
			r, err := s.Commit(c, orderID(1))
			if err == nil && (r.Status != domain.StatusCommitted || len(r.Lines) != 2 || r.Lines[0] != (domain.Line{SKU: "SKU-0002", Quantity: 1, UnitPriceCents: 1500})) {
				t.Errorf("commit again = %+v", r)
			}
			return err
		}, 1, 0},
		// A release that overtook its reserve (or an order never reserved) leaves a tombstone.
		{"release before reserve", func(c context.Context) error {
			r, err := s.Release(c, orderID(3))
			if err == nil && !r.Tombstone() {
				t.Errorf("release unknown = %+v, want a tombstone", r)
			}
			return err
		}, 2, 1},
		// OrderCancelled of an order never reserved (out of stock): the tombstone and the inbox record
		// in the look's statement.
		{"release once before reserve", func(c context.Context) error {
			return s.ReleaseOnce(c, "inventory", "ev-5", orderID(5))
		}, 1, 0},
	} {
		var err error
		st, tx := rt.count(t, func(c context.Context) { err = step.fn(c) })
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if st != step.statements || tx != step.tx {
			t.Errorf("%s: %d statements in %d transactions, want %d in %d", step.name, st, tx, step.statements, step.tx)
		}
	}
	// A repeated event is one statement: the settling statement, whose inbox record conflicts, rolled
	// back; or the look, when it finds the work done.
	for _, repeat := range []struct {
		name string
		fn   func(c context.Context) error
		tx   int
	}{
		{"OrderConfirmed", func(c context.Context) error { return s.CommitOnce(c, "inventory", "ev-1", orderID(1)) }, 1},
		{"OrderCancelled", func(c context.Context) error { return s.ReleaseOnce(c, "inventory", "ev-4", orderID(4)) }, 0},
	} {
		st, tx := rt.count(t, func(c context.Context) {
			if err := repeat.fn(c); !errors.Is(err, inbox.ErrAlreadyProcessed) {
				t.Errorf("repeated %s: %v", repeat.name, err)
			}
		})
		if st != 1 || tx != repeat.tx {
			t.Errorf("repeated %s: %d statements in %d transactions, want 1 in %d", repeat.name, st, tx, repeat.tx)
		}
	}
}
