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

// On PostgreSQL the order path's stock changes are one statement each, plus the outbox insert (and
// the inbox record for the event-driven commit): a first-time Reserve and the Commit that
// OrderConfirmed causes cost one transaction of two and three statements, whatever the number of
// SKUs; a commit repeated later (the settlement) is one statement, a release that finds no reservation
// two (the tombstone). (Before: Reserve 5 statements with one SKU, 7 with two; the commit or release 6
// with one SKU, 7 with two; the repeat 3; the tombstone 3.)
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
		{"commit once", func(c context.Context) error { return s.CommitOnce(c, "inventory", "ev-1", orderID(1)) }, 3, 1},
		{"reserve other", func(c context.Context) error { _, err := s.Reserve(c, orderID(2), items[:1]); return err }, 2, 1},
		{"release once", func(c context.Context) error { return s.ReleaseOnce(c, "inventory", "ev-2", orderID(2)) }, 3, 1},
		// The order service's settlement commits again later: the repeat reads what settleOne returns.
		{"commit again", func(c context.Context) error {
			r, err := s.Commit(c, orderID(1))
			if err == nil && (r.Status != domain.StatusCommitted || len(r.Lines) != 2 || r.Lines[0] != (domain.Line{SKU: "SKU-0002", Quantity: 1, UnitPriceCents: 1500})) {
				t.Errorf("commit again = %+v", r)
			}
			return err
		}, 1, 1},
		// A release that overtook its reserve (or an order never reserved) leaves a tombstone.
		{"release before reserve", func(c context.Context) error {
			r, err := s.Release(c, orderID(3))
			if err == nil && !r.Tombstone() {
				t.Errorf("release unknown = %+v, want a tombstone", r)
			}
			return err
		}, 2, 1},
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
	// A repeated event is one statement (the inbox record that conflicts), rolled back.
	st, tx := rt.count(t, func(c context.Context) {
		if err := s.CommitOnce(c, "inventory", "ev-1", orderID(1)); !errors.Is(err, inbox.ErrAlreadyProcessed) {
			t.Errorf("repeat: %v", err)
		}
	})
	if st != 1 || tx != 1 {
		t.Errorf("repeated event: %d statements in %d transactions, want 1 in 1", st, tx)
	}
}
