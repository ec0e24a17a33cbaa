package smoke_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

func TestPostgres(t *testing.T) {
	t.Parallel()
	url := infratest.Require(t, infratest.DatabaseURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // rollback after commit is a no-op
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE smoke (id bigint PRIMARY KEY, note text NOT NULL) ON COMMIT DROP`); err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO smoke (id, note) SELECT g, 'row ' || g FROM generate_series(1, 100) g`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var n int
	var version string
	if err := tx.QueryRow(ctx, `SELECT count(*), current_setting('server_version') FROM smoke`).Scan(&n, &version); err != nil {
		t.Fatalf("query: %v", err)
	}
	if n != 100 {
		t.Fatalf("rows = %d, want 100", n)
	}
	t.Logf("PostgreSQL %s: inserted and read back %d rows", version, n)
}
