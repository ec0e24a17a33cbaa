package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

func TestRebind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    sqldb.Dialect
		in   string
		want string
	}{
		{sqldb.Postgres, "SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = $1 AND c = $2"},
		{sqldb.SQLite, "SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = ? AND c = ?"},
		{sqldb.Postgres, "SELECT 1", "SELECT 1"},
	}
	for _, tt := range tests {
		if got := tt.d.Rebind(tt.in); got != tt.want {
			t.Errorf("%s.Rebind(%q) = %q, want %q", tt.d, tt.in, got, tt.want)
		}
	}
}

func TestParseDialect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dsn  string
		want sqldb.Dialect
		err  bool
	}{
		{"postgres://u@localhost/db", sqldb.Postgres, false},
		{"postgresql://u@localhost/db", sqldb.Postgres, false},
		{"sqlite:/tmp/x.db", sqldb.SQLite, false},
		{"file:x.db", sqldb.SQLite, false},
		{"mysql://x", "", true},
	}
	for _, tt := range tests {
		got, err := sqldb.ParseDialect(tt.dsn)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseDialect(%q) = %q, %v", tt.dsn, got, err)
		}
	}
}

func TestOpenAndInTx(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db, d := sqldbtest.Open(t, b.DSN(t))
			if got, err := sqldb.DialectOf(db); err != nil || got != d {
				t.Fatalf("DialectOf = %q, %v; want %q", got, err, d)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := db.ExecContext(ctx, "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			ins := d.Rebind("INSERT INTO kv (k, v) VALUES (?, ?)")
			if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, ins, "a", "1")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			boom := errors.New("boom")
			err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, ins, "b", "2"); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("InTx error = %v, want boom", err)
			}
			func() {
				defer func() { _ = recover() }()
				_ = sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, ins, "c", "3"); err != nil {
						return err
					}
					panic("inside tx")
				})
			}()
			var n int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM kv").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("rows = %d, want 1 (rolled-back rows must not persist)", n)
			}
		})
	}
}

func TestSQLitePragmas(t *testing.T) {
	t.Parallel()
	db, _ := sqldbtest.Open(t, sqldbtest.SQLite(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	var fk int
	if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		t.Fatal(err)
	}
	var busy int
	if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || fk != 1 || busy != 10000 {
		t.Fatalf("journal_mode=%s foreign_keys=%d busy_timeout=%d", mode, fk, busy)
	}
}
