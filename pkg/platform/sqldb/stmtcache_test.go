package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// The SQLite statement cache must be invisible: same results, errors and transactions as unprepared
// statements, including a statement run again while its earlier rows are still open.
func TestSQLiteStatementCacheBehavesLikeUnprepared(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, d, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "c.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if d != sqldb.SQLite {
		t.Fatalf("dialect %s", d)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const insert = `INSERT INTO kv (k, v) VALUES (?, ?)`
	// The same statement many times, in a transaction and outside one.
	if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		for i := range 300 {
			if _, err := tx.ExecContext(ctx, insert, fmt.Sprintf("k%03d", i), i); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A rolled-back transaction leaves nothing, through the cached statement too.
	_ = sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, insert, "rolled-back", 1); err != nil {
			return err
		}
		return fmt.Errorf("abort")
	})
	// Constraint errors surface as before, and the statement stays usable after one.
	if _, err := db.ExecContext(ctx, insert, "k001", 1); err == nil {
		t.Fatal("duplicate key: no error")
	}
	if _, err := db.ExecContext(ctx, insert, "k300", 300); err != nil {
		t.Fatalf("insert after a failed one: %v", err)
	}
	// The same query again while its first rows are open (the nested run cannot share the prepared
	// statement): on the same connection, so inside a transaction (SQLite has one connection).
	const sel = `SELECT k, v FROM kv WHERE v >= ? ORDER BY v LIMIT ?`
	n := 0
	if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, sel, 0, 1000)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var (
				k string
				v int
			)
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			if k != fmt.Sprintf("k%03d", v) || v != n {
				return fmt.Errorf("row %d = %s %d", n, k, v)
			}
			if n%100 == 0 {
				var k2 string
				if err := tx.QueryRowContext(ctx, sel, v, 1).Scan(&k2, new(int)); err != nil {
					return fmt.Errorf("nested query at %d: %w", v, err)
				}
				if k2 != k {
					return fmt.Errorf("nested query at %d = %q, want %q", v, k2, k)
				}
			}
			n++
		}
		return rows.Err()
	}); err != nil {
		t.Fatal(err)
	}
	if n != 301 {
		t.Fatalf("read %d rows, want 301 (rolled-back row must be absent)", n)
	}
	// RETURNING through Exec and QueryRow, and column types through the wrapper.
	var v int
	if err := db.QueryRowContext(ctx, `UPDATE kv SET v = v + 1000 WHERE k = ? RETURNING v`, "k007").Scan(&v); err != nil || v != 1007 {
		t.Fatalf("update returning = %d, %v", v, err)
	}
	rows, err := db.QueryContext(ctx, sel, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	cts, err := rows.ColumnTypes()
	if err != nil || len(cts) != 2 || cts[0].Name() != "k" {
		t.Fatalf("column types = %v, %v", cts, err)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	// A cancelled context fails the call and leaves the connection usable.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := db.ExecContext(cctx, insert, "cancelled", 1); err == nil {
		t.Fatal("cancelled exec: no error")
	}
	var count int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM kv`).Scan(&count); err != nil || count != 301 {
		t.Fatalf("count = %d, %v", count, err)
	}
}

// BenchmarkSQLiteInsert is one INSERT per transaction (the services' pattern), with the statement
// cache that sqldb.Open installs.
func BenchmarkSQLiteInsert(b *testing.B) {
	ctx := context.Background()
	db, _, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "b.db"), sqldb.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL, note TEXT)`); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO kv (k, v, note) VALUES (?, ?, ?)`, fmt.Sprint(i), i, "x")
			if err != nil {
				return err
			}
			var v int
			return tx.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = ?`, fmt.Sprint(i)).Scan(&v)
		}); err != nil {
			b.Fatal(err)
		}
	}
}
