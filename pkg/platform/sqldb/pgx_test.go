package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

// pool1 opens a traced pool of one connection, so that the next statement runs on the connection
// WithPgx lent.
func pool1(t *testing.T, dsn string) (*sql.DB, *tracetest.InMemoryExporter, *sdktrace.TracerProvider) {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, _, err := sqldb.Open(ctx, dsn, sqldb.Options{MaxOpenConns: 1, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, spans, tp
}

// poolAndOther opens a pool of one connection (pool1, untraced) and another pool on the same
// database, to look from outside, with a context for the test.
func poolAndOther(t *testing.T) (context.Context, *sql.DB, *sql.DB) {
	t.Helper()
	dsn := sqldbtest.Postgres(t)
	db, _, _ := pool1(t, dsn)
	other, _ := sqldbtest.Open(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx, db, other
}

// lockFree reports whether the transaction-level advisory lock key is free, asked on a connection of
// its own.
func lockFree(ctx context.Context, t *testing.T, other *sql.DB, key int64) bool {
	t.Helper()
	var free bool
	if err := other.QueryRowContext(ctx, "SELECT pg_try_advisory_xact_lock($1)", key).Scan(&free); err != nil {
		t.Fatal(err)
	}
	return free
}

// commits reports whether an insert on db (the pool's next statement) is visible on other at once,
// that is, ran outside any transaction left open.
func commits(ctx context.Context, t *testing.T, db, other *sql.DB, id int) bool {
	t.Helper()
	if _, err := other.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS marks (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO marks VALUES ($1)", id); err != nil {
		t.Fatalf("the pool's next statement: %v", err)
	}
	var n int
	if err := other.QueryRowContext(ctx, "SELECT count(*) FROM marks WHERE id = $1", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// A callback that fails inside a transaction — open, or aborted by a failed statement — returns its
// error, and its connection goes back to the pool outside any transaction: the locks the transaction
// took are released at once (not at the connection's next use), and the pool's next statement runs.
// A callback that leaves a transaction open without failing is an error too.
func TestWithPgxLeavesNoTransactionOpen(t *testing.T) {
	t.Parallel()
	ctx, db, other := poolAndOther(t)
	boom := errors.New("boom")
	for i, tc := range []struct {
		name string
		last string // the statement after the lock
		fail error  // fn's own error (nil: the batch's)
	}{
		{"open", "SELECT 1", boom},
		{"aborted", "SELECT 1/0", nil},
		{"left open", "SELECT 1", nil},
	} {
		key := int64(7_000_000 + i)
		err := sqldb.WithPgx(ctx, db, func(ctx context.Context, p *sqldb.Pipeline) error {
			b := &pgx.Batch{}
			b.Queue("BEGIN")
			b.Queue("SELECT pg_advisory_xact_lock($1)", key)
			b.Queue(tc.last)
			if err := p.Send(ctx, b).Close(); err != nil {
				return err
			}
			return tc.fail
		})
		switch {
		case err == nil:
			t.Errorf("%s: WithPgx succeeded", tc.name)
		case tc.fail != nil && !errors.Is(err, tc.fail):
			t.Errorf("%s: WithPgx = %v, want %v", tc.name, err, tc.fail)
		}
		if !lockFree(ctx, t, other, key) {
			t.Errorf("%s: the transaction's lock is still held after WithPgx returned", tc.name)
		}
		if !commits(ctx, t, db, other, i) {
			t.Errorf("%s: the pool's next statement ran inside a transaction", tc.name)
		}
	}
}

// A context cancelled while a pipeline runs (the transaction open, a statement still running) fails
// the callback, and the pool's next statement, on the same pool of one connection, runs outside any
// transaction, the locks released.
func TestWithPgxCancelledMidPipeline(t *testing.T) {
	t.Parallel()
	ctx, db, other := poolAndOther(t)
	const key = 7_100_000
	cctx, stop := context.WithCancel(ctx)
	err := sqldb.WithPgx(cctx, db, func(ctx context.Context, p *sqldb.Pipeline) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue("SELECT pg_advisory_xact_lock($1)", int64(key))
		b.Queue("SELECT pg_sleep(20)")
		br := p.Send(ctx, b)
		defer func() { _ = br.Close() }()
		// The server sends a pipeline's results when it reaches its end (the Sync), so the first
		// result is the one that waits.
		time.AfterFunc(200*time.Millisecond, stop)
		for range 3 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		t.Fatal("WithPgx succeeded with its context cancelled")
	}
	if !commits(ctx, t, db, other, 1) {
		t.Error("the pool's next statement ran inside a transaction")
	}
	// pgx closes a connection whose context was cancelled mid-statement after a cancel request, which
	// ends the server's side asynchronously.
	for !lockFree(ctx, t, other, key) {
		if ctx.Err() != nil {
			t.Fatal("the cancelled transaction's lock is still held")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Inside a trace each Send is one sql.batch span with its statements; the round trip's work commits,
// and the connection is reused.
func TestWithPgxSpans(t *testing.T) {
	t.Parallel()
	db, spans, tp := pool1(t, sqldbtest.Postgres(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rctx, req := tp.Tracer("test").Start(ctx, "request")
	var got int
	err := sqldb.WithPgx(rctx, db, func(ctx context.Context, p *sqldb.Pipeline) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue("SELECT 41 + 1").QueryRow(func(r pgx.Row) error { return r.Scan(&got) })
		b.Queue("COMMIT")
		return p.Send(ctx, b).Close()
	})
	req.End()
	if err != nil || got != 42 {
		t.Fatalf("WithPgx = %d, %v", got, err)
	}
	var batches []sdktrace.ReadOnlySpan
	for _, s := range spans.GetSpans().Snapshots() {
		if s.Name() == "sql.batch" {
			batches = append(batches, s)
		}
	}
	if len(batches) != 1 {
		t.Fatalf("%d sql.batch spans, want 1", len(batches))
	}
	attrs := map[string]string{}
	for _, a := range batches[0].Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["db.query.text"] != "BEGIN;\nSELECT 41 + 1;\nCOMMIT" || attrs["db.operation.batch.size"] != "3" {
		t.Errorf("sql.batch attributes = %v", attrs)
	}
	if batches[0].Parent().SpanID() != req.SpanContext().SpanID() {
		t.Error("sql.batch is not a child of the request's span")
	}
}

// A connection the server ended while it sat in the pool (a restart, an idle timeout, an
// administrator) fails at most the one call that finds it — as a database/sql statement does, when
// the pool used the connection less than a second before (pgx's reset check pings only connections
// idle for longer) — and never goes back to the pool: the next call runs on a new connection.
func TestWithPgxDropsAConnectionTheServerEnded(t *testing.T) {
	t.Parallel()
	ctx, db, other := poolAndOther(t)
	backend := func() (int, error) {
		var pid int
		err := sqldb.WithPgx(ctx, db, func(ctx context.Context, p *sqldb.Pipeline) error {
			b := &pgx.Batch{}
			b.Queue("SELECT pg_backend_pid()")
			br := p.Send(ctx, b)
			if err := br.QueryRow().Scan(&pid); err != nil {
				_ = br.Close()
				return err
			}
			return br.Close()
		})
		return pid, err
	}
	for i := range 3 {
		pid, err := backend()
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		var ended bool
		if err := other.QueryRowContext(ctx, "SELECT pg_terminate_backend($1, 5000)", pid).Scan(&ended); err != nil || !ended {
			t.Fatalf("terminate %d: %v, %v", pid, ended, err)
		}
		if _, err := backend(); err != nil && !strings.Contains(err.Error(), "57P01") {
			t.Fatalf("round %d: the call that found the ended connection: %v, want nil or 57P01", i, err)
		}
		next, err := backend()
		if err != nil {
			t.Fatalf("round %d: the call after it: %v", i, err)
		}
		if next == pid {
			t.Fatalf("round %d: ran on the ended backend %d", i, pid)
		}
	}
}
