package store

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

// Migrate applies the order schema and the outbox schema, each with its own migrations table.
func Migrate(ctx context.Context, dsn string, log *slog.Logger) error {
	d, err := sqldb.ParseDialect(dsn)
	if err != nil {
		return err
	}
	if err := migrate.Up(ctx, dsn, migrations.FS, migrate.Options{Logger: log}); err != nil {
		return fmt.Errorf("order migrations: %w", err)
	}
	src, err := outbox.Migrations(d)
	if err != nil {
		return err
	}
	if err := migrate.Up(ctx, dsn, src, migrate.Options{Table: outbox.MigrationsTable, Logger: log}); err != nil {
		return fmt.Errorf("outbox migrations: %w", err)
	}
	return nil
}
