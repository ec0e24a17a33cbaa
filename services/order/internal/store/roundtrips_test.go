package store_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
)

// On PostgreSQL creating an order and confirming it are one statement each plus the outbox insert,
// whatever the number of lines (before: 2 + one per line each). Both lines are stored, and priced by
// the update. The statement counts are the figures docs/BENCHMARKS.md reports per order.
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
	}); st != 2 || tx != 1 {
		t.Errorf("create: %d statements in %d transactions, want 2 in 1", st, tx)
	}
	c := confirmed(t, o)
	if st, tx := count(func(ctx context.Context) error { return s.Update(ctx, c, t0.Add(time.Hour)) }); st != 2 || tx != 1 {
		t.Errorf("confirm: %d statements in %d transactions, want 2 in 1", st, tx)
	}
	got, err := s.Get(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Lines) != 2 || got.Lines[0] != c.Lines[0] || got.Lines[1] != c.Lines[1] || got.TotalCents != c.TotalCents {
		t.Errorf("stored %+v, want the lines and total of %+v", got, c)
	}
}
