package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	inventorymigrations "github.com/shopmesh/shopmesh/services/inventory/migrations"
	ordermigrations "github.com/shopmesh/shopmesh/services/order/migrations"
	paymentmigrations "github.com/shopmesh/shopmesh/services/payment/migrations"
)

// emptyStack writes a stack.json whose data directory holds the three services' SQLite databases,
// migrated and empty, as a fresh make run leaves them before seeding.
func emptyStack(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	dsn := func(svc string) string { return "sqlite:" + filepath.Join(dir, svc+".db") }
	ob, err := outbox.Migrations(sqldb.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := inbox.Migrations(sqldb.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		migrate.Up(ctx, dsn("order"), ordermigrations.FS, migrate.Options{}),
		migrate.Up(ctx, dsn("order"), ob, migrate.Options{Table: outbox.MigrationsTable}),
		migrate.UpAll(ctx, dsn("inventory"), inventorymigrations.FS, migrate.Options{}),
		migrate.Up(ctx, dsn("payment"), ob, migrate.Options{Table: outbox.MigrationsTable}),
		migrate.Up(ctx, dsn("payment"), ib, migrate.Options{Table: inbox.MigrationsTable}),
		migrate.Up(ctx, dsn("payment"), paymentmigrations.FS, migrate.Options{}),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	b, err := json.Marshal(map[string]any{"data_dir": dir, "kafka_brokers": []string{}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "stack.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExitStatus(t *testing.T) {
	t.Parallel()
	stack := emptyStack(t)
	keys := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(keys, []byte("# accepted\nk-1\n\nk-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"nothing to find", []string{"-stack", stack}, 0, "audit: 0 orders (0 confirmed, 0 cancelled, 0 pending); lost 0, duplicated 0, stuck 0; DLQ 0 (0 unaccounted)\n"},
		{"accepted orders missing", []string{"-stack", stack, "-keys", keys}, 1, `violation: lost: accepted idempotency key "k-2" has no order`},
		{"dev accounts missing", []string{"-stack", stack, "-dev-seed"}, 1, "violation: money: account cust-0001 with an opening balance is missing"},
		{"no databases", []string{"-order", filepath.Join(t.TempDir(), "nope.db"), "-inventory", "x", "-payment", "y"}, 2, ""},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String(), tc.out) {
				t.Fatalf("exit %d, want %d; output:\n%s\nstderr: %s\nwant it to contain %q", code, tc.code, out.String(), errOut.String(), tc.out)
			}
		})
	}
}
