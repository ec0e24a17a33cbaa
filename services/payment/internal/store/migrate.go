package store

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/payment/migrations"
)

// Migrate applies every schema the store needs: the platform's outbox and inbox (each with its own
// migrations table) and the payment tables. logger may be nil.
func Migrate(ctx context.Context, dsn string, logger *slog.Logger) error {
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
	if err := migrate.Up(ctx, dsn, ob, migrate.Options{Table: outbox.MigrationsTable, Logger: logger}); err != nil {
		return fmt.Errorf("outbox schema: %w", err)
	}
	if err := migrate.Up(ctx, dsn, ib, migrate.Options{Table: inbox.MigrationsTable, Logger: logger}); err != nil {
		return fmt.Errorf("inbox schema: %w", err)
	}
	if err := migrate.Up(ctx, dsn, migrations.FS, migrate.Options{Logger: logger}); err != nil {
		return fmt.Errorf("payment schema: %w", err)
	}
	return nil
}
