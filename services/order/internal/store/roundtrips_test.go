package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
)

// On PostgreSQL each step of the order store on an order's path is ONE statement in autocommit (no
// BEGIN/COMMIT), whatever the number of lines: creating (order, lines and event; before: BEGIN, the
// order and lines, the outbox insert, COMMIT), confirming (order, lines'
// prices, event and the settlement bookkeeping; before: the same four), a refused update telling a lost
// race from a missing order (before: BEGIN, update, probe, ROLLBACK), and the settlement's claim
// (before: in BEGIN/COMMIT) and done. Both lines are stored, and priced by the update. The statement
// counts are the figures docs/BENCHMARKS.md reports per order.
func TestOrderPathStatementsOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	migrateAll(ctx, t, dsn)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	db, d, err := sqldb.Open(ctx, dsn, sqldb.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s := store.New(db, d, outbox.New(d, nil))
	count := func(fn func(ctx context.Context) error) (statements, transactions int) {
		t.Helper()
		spans.Reset()
		c, root := tp.Tracer("test").Start(ctx, "op")
		if err := fn(c); err != nil {
			t.Fatal(err)
		}
		root.End()
		for _, s := range spans.GetSpans() {
			switch s.Name {
			case "sql.exec", "sql.query":
				statements++
			case "sql.begin":
				transactions++
			}
		}
		return statements, transactions
	}
	o := newOrder(t, "o-1", "key-1")
	if st, tx := count(func(c context.Context) error {
		_, created, err := s.Create(c, o, t0.Add(time.Minute))
		if err == nil && !created {
			t.Error("not created")
		}
		return err
	}); st != 1 || tx != 0 {
		t.Errorf("create: %d statements in %d transactions, want 1 in autocommit", st, tx)
	}
	c := confirmed(t, o)
	if st, tx := count(func(ctx context.Context) error { return s.Update(ctx, c, t0.Add(time.Hour)) }); st != 1 || tx != 0 {
		t.Errorf("confirm: %d statements in %d transactions, want 1 in autocommit", st, tx)
	}
	stale, err := o.Cancel(domain.CustomerRequested, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	ghost := newOrder(t, "o-missing", "")
	ghost.Version = 2
	for _, r := range []struct {
		name string
		next domain.Order
		want error
	}{{"stale update", stale, domain.ErrVersionConflict}, {"update of a missing order", ghost, domain.ErrNotFound}} {
		if st, tx := count(func(ctx context.Context) error {
			if err := s.Update(ctx, r.next, time.Time{}); !errors.Is(err, r.want) {
				t.Errorf("%s: %v, want %v", r.name, err, r.want)
			}
			return nil
		}); st != 1 || tx != 0 {
			t.Errorf("%s: %d statements in %d transactions, want 1 in autocommit", r.name, st, tx)
		}
	}
	if st, tx := count(func(ctx context.Context) error {
		got, err := s.ClaimFollowups(ctx, app.Settlement, t0.Add(2*time.Hour), t0.Add(3*time.Hour), 10)
		if err == nil && (len(got) != 1 || got[0].OrderID != o.ID) {
			t.Errorf("claimed %+v, want the settlement of %s", got, o.ID)
		}
		return err
	}); st != 1 || tx != 0 {
		t.Errorf("claim settlements: %d statements in %d transactions, want 1 in autocommit", st, tx)
	}
	if st, tx := count(func(ctx context.Context) error {
		return s.FollowupDone(ctx, app.Settlement, o.ID, t0.Add(2*time.Hour))
	}); st != 1 || tx != 0 {
		t.Errorf("settlement done: %d statements in %d transactions, want 1 in autocommit", st, tx)
	}
	got, err := s.Get(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Lines) != 2 || got.Lines[0] != c.Lines[0] || got.Lines[1] != c.Lines[1] || got.TotalCents != c.TotalCents {
		t.Errorf("stored %+v, want the lines and total of %+v", got, c)
	}
}
