package sqldb_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

func TestUnavailableTable(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("store: insert: %w", &pgconn.PgError{Code: code}) }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("boom"), false},
		{"no rows", fmt.Errorf("get: %w", sql.ErrNoRows), false},
		{"canceled", fmt.Errorf("get: %w", context.Canceled), false},
		{"deadline once connected", fmt.Errorf("get: %w", context.DeadlineExceeded), false},
		{"bad conn", fmt.Errorf("get: %w", driver.ErrBadConn), true},
		{"conn done", fmt.Errorf("get: %w", sql.ErrConnDone), true},
		{"pgx conn closed", fmt.Errorf("get: %w", pgconn.ErrConnClosed), true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, true},
		{"unique violation", pg("23505"), false},
		{"check violation", pg("23514"), false},
		{"syntax error", pg("42601"), false},
		{"serialization failure", pg("40001"), true},
		{"deadlock", pg("40P01"), true},
		{"admin shutdown", pg("57P01"), true},
		{"cannot connect now", pg("57P03"), true},
		{"connection failure", pg("08006"), true},
		{"too many connections", pg("53300"), true},
		{"read-only after fail-over", pg("25006"), true},
	}
	for _, tt := range tests {
		if got := sqldb.Unavailable(tt.err); got != tt.want {
			t.Errorf("%s: Unavailable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// A database nobody listens on (a stopped server): connecting is refused, and that is unavailability.
func TestUnavailableWhenNothingListens(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, _, err = sqldb.Open(ctx, "postgres://shopmesh@"+dead+"/shopmesh?sslmode=disable&connect_timeout=2", sqldb.Options{})
	if err == nil || !sqldb.Unavailable(err) {
		t.Fatalf("open on a dead port: %v; Unavailable = %v", err, sqldb.Unavailable(err))
	}
}

// PostgreSQL going away under an open pool (connections reset, new ones refused), then coming back.
func TestUnavailableWhenPostgresGoesAway(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	proxy := sqldbtest.NewProxy(t, dsn)
	db, _ := sqldbtest.Open(t, proxy.DSN(dsn))
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	_, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	if err == nil || sqldb.Unavailable(err) {
		t.Fatalf("a unique violation: %v; Unavailable = %v", err, sqldb.Unavailable(err))
	}

	tx, err := db.BeginTx(ctx, nil) // a transaction open when the server goes away
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	proxy.Down()
	_, err = tx.ExecContext(ctx, "INSERT INTO t VALUES (3)")
	if err == nil || !sqldb.Unavailable(err) {
		t.Fatalf("a statement on a connection the server dropped: %v; Unavailable = %v", err, sqldb.Unavailable(err))
	}
	t.Logf("on a dropped connection: %v", err)
	for i := range 3 { // the pooled connection (reset), then fresh ones (refused)
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := db.ExecContext(qctx, "INSERT INTO t VALUES (2)")
		cancel()
		if err == nil || !sqldb.Unavailable(err) {
			t.Fatalf("call %d with the server gone: %v; Unavailable = %v", i, err, sqldb.Unavailable(err))
		}
		t.Logf("call %d with the server gone: %v", i, err)
	}
	err = sqldb.InTx(ctx, db, func(tx *sql.Tx) error { _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (2)"); return err })
	if err == nil || !sqldb.Unavailable(err) {
		t.Fatalf("a transaction with the server gone: %v; Unavailable = %v", err, sqldb.Unavailable(err))
	}

	proxy.Up()
	if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatalf("after the server came back: %v", err)
	}
}

// SQLite: another process holding the write lock past the busy timeout is "database is locked".
func TestUnavailableWhenSQLiteBusy(t *testing.T) {
	t.Parallel()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "busy.db")
	ctx := t.Context()
	holder, _, err := sqldb.Open(ctx, dsn, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	waiter, _, err := sqldb.Open(ctx, dsn, sqldb.Options{BusyTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	tx, err := holder.BeginTx(ctx, nil) // BEGIN IMMEDIATE: takes the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	_, err = waiter.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	if err == nil || !sqldb.Unavailable(err) {
		t.Fatalf("write while another connection holds the lock: %v; Unavailable = %v", err, sqldb.Unavailable(err))
	}
}

// A server that accepts connections and never answers: connecting times out (pgx connect_timeout),
// which is unavailability, not the caller's deadline.
func TestUnavailableWhenPostgresHangs(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	proxy := sqldbtest.NewProxy(t, dsn)
	db, _ := sqldbtest.Open(t, withConnectTimeout(t, proxy.DSN(dsn)))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	_, err := db.ExecContext(ctx, "SELECT 1")
	if err == nil || !sqldb.Unavailable(err) || ctx.Err() != nil {
		t.Fatalf("with the server hanging: %v; Unavailable = %v", err, sqldb.Unavailable(err))
	}
	t.Logf("with the server hanging: %v", err)
}

func withConnectTimeout(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("connect_timeout", "1")
	u.RawQuery = q.Encode()
	return u.String()
}
