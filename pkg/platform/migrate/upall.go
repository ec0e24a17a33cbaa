package migrate

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// UpAll applies the platform's outbox and inbox schemas, then the service's own (src), each with its
// own migrations table, so every service database has the same shape: `<service> migrate up` and
// start-up both run it. opts.Table is ignored (each set has its table); the rest applies to all three.
func UpAll(ctx context.Context, dsn string, src fs.FS, opts Options) error {
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
	for _, set := range []struct {
		src   fs.FS
		table string
	}{{ob, outbox.MigrationsTable}, {ib, inbox.MigrationsTable}, {src, DefaultTable}} {
		o := opts
		o.Table = set.table
		if err := Up(ctx, dsn, set.src, o); err != nil {
			return fmt.Errorf("migrate %s: %w", set.table, err)
		}
	}
	return nil
}
