// Package sqldbtest gives tests a fresh database per test on every backend: an SQLite file in
// t.TempDir() always, and a throw-away PostgreSQL schema when DATABASE_URL names a server.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// Backend is one database a contract test runs against.
type Backend struct {
	Name string
	// DSN returns a DSN for a fresh, empty database; it skips (or fails under REQUIRE_INFRA=1) when the
	// server is not available. Called inside the subtest so the skip belongs to it.
	DSN func(t testing.TB) string
}

// Backends lists SQLite first, then PostgreSQL.
func Backends() []Backend {
	return []Backend{
		{Name: "sqlite", DSN: SQLite},
		{Name: "postgres", DSN: Postgres},
	}
}

// SQLite returns the DSN of a new database file in t.TempDir().
func SQLite(t testing.TB) string {
	t.Helper()
	return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
}

// Postgres creates a schema t_<random> on the server DATABASE_URL names and returns a DSN whose
// search_path is that schema; the schema is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	base := infratest.Require(t, infratest.DatabaseURL)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	admin, _, err := sqldb.Open(ctx, base, sqldb.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatalf("open %s: %v", infratest.DatabaseURL, err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		_ = admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		_ = admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", infratest.DatabaseURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Open opens dsn for a test and closes it when the test ends.
func Open(t testing.TB, dsn string) (*sql.DB, sqldb.Dialect) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	db, d, err := sqldb.Open(ctx, dsn, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, d
}
