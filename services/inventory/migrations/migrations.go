// Package migrations embeds the inventory schema, the same SQL for SQLite and PostgreSQL, and applies
// it together with the platform's outbox and inbox schemas.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// FS holds NNNN_name.up.sql / .down.sql at its root.
//
//go:embed *.sql
var FS embed.FS

// Up applies the outbox, inbox and inventory schemas, each with its own migrations table.
func Up(ctx context.Context, dsn string, logger *slog.Logger) error {
	d, err := sqldb.ParseDialect(dsn)
	if err != nil {
		return err
	}
	ob, err := outbox.Migrations(d)
	if err != nil {
		return err
	}
	ib, err := inbox.Migrations(d)
	if err != nil {
		return err
	}
	sets := []struct {
		src   fs.FS
		table string
	}{
		{ob, outbox.MigrationsTable},
		{ib, inbox.MigrationsTable},
		{FS, migrate.DefaultTable},
	}
	for _, s := range sets {
		if err := migrate.Up(ctx, dsn, s.src, migrate.Options{Table: s.table, Logger: logger}); err != nil {
			return fmt.Errorf("migrate %s: %w", s.table, err)
		}
	}
	return nil
}
