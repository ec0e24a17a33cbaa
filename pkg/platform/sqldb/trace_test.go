package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

// Inside a trace, statements and transactions get client spans under the caller's span; outside any
// trace nothing is recorded; the wrapped *sql.DB still reports its dialect and works as before.
func TestSQLSpans(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			spans := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			db, d, err := sqldb.Open(ctx, dsn, sqldb.Options{TracerProvider: tp})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got, err := sqldb.DialectOf(db); err != nil || got != d {
				t.Fatalf("DialectOf = %q, %v; want %q", got, err, d)
			}
			// Outside a trace: no span.
			if _, err := db.ExecContext(ctx, "CREATE TABLE traced (id INTEGER PRIMARY KEY, v TEXT)"); err != nil {
				t.Fatal(err)
			}
			if n := len(spans.GetSpans()); n != 0 {
				t.Fatalf("%d spans outside any trace", n)
			}

			rctx, req := tp.Tracer("test").Start(ctx, "request")
			if err := sqldb.InTx(rctx, db, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(rctx, d.Rebind("INSERT INTO traced (id, v) VALUES (?, ?)"), 1, "a")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			var v string
			if err := db.QueryRowContext(rctx, d.Rebind("SELECT v FROM traced WHERE id = ?"), 1).Scan(&v); err != nil || v != "a" {
				t.Fatalf("select: %q %v", v, err)
			}
			boom := errors.New("boom")
			if err := sqldb.InTx(rctx, db, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(rctx, "INSERT INTO missing_table VALUES (1)"); err == nil {
					t.Error("insert into a missing table succeeded")
				}
				return boom
			}); !errors.Is(err, boom) {
				t.Fatalf("InTx: %v", err)
			}
			req.End()

			names := map[string]int{}
			var failed int
			for _, s := range spans.GetSpans() {
				if s.Name == "request" {
					continue
				}
				names[s.Name]++
				if s.SpanKind != trace.SpanKindClient || s.Parent.SpanID() != req.SpanContext().SpanID() {
					t.Errorf("span %s: kind %v parent %v, want a client child of the request", s.Name, s.SpanKind, s.Parent.SpanID())
				}
				if s.Status.Code.String() == "Error" {
					failed++
				}
			}
			want := map[string]int{"sql.begin": 2, "sql.exec": 2, "sql.commit": 1, "sql.query": 1, "sql.rollback": 1}
			for k, n := range want {
				if names[k] != n {
					t.Errorf("%s spans: %d, want %d (all %v)", k, names[k], n, names)
				}
			}
			if failed != 1 {
				t.Errorf("%d failed spans, want 1 (the insert into a missing table)", failed)
			}
		})
	}
}
