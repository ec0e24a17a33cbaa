// Package inbox makes an event consumer's effect happen once although brokers deliver at least once: the
// event id is recorded in the same transaction as the effect, so a redelivery finds it and commits
// nothing.
package inbox

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// MigrationsTable is the migrations table the inbox schema is applied with, apart from the service's.
const MigrationsTable = "inbox_schema_migrations"

// ErrAlreadyProcessed is returned by Process for an event the consumer has already handled: the caller
// acknowledges the message and moves on.
var ErrAlreadyProcessed = errors.New("inbox: event already processed")

//go:embed migrations
var migrations embed.FS

// Migrations returns the inbox schema for a dialect, to apply with migrate.Up and MigrationsTable.
func Migrations(d sqldb.Dialect) (fs.FS, error) {
	sub, err := fs.Sub(migrations, "migrations/"+string(d))
	if err != nil {
		return nil, fmt.Errorf("inbox migrations %s: %w", d, err)
	}
	return sub, nil
}

// Process runs effect in a transaction that also records (consumer, eventID). If that pair is already
// recorded, effect is not run and ErrAlreadyProcessed is returned. An error from effect rolls everything
// back, so the event stays unprocessed and its redelivery runs effect again.
//
// On PostgreSQL two concurrent deliveries of one event serialize on the primary key: the second waits
// for the first to commit and then sees it as processed (or runs, if the first rolled back).
func Process(ctx context.Context, db *sql.DB, consumer, eventID string, effect func(tx *sql.Tx) error) error {
	if consumer == "" || eventID == "" {
		return fmt.Errorf("inbox: consumer %q event %q: %w", consumer, eventID, errors.New("empty name or id"))
	}
	d, err := sqldb.DialectOf(db)
	if err != nil {
		return err
	}
	q := d.Rebind("INSERT INTO inbox (consumer, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
	return sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q, consumer, eventID, time.Now().UTC())
		if err != nil {
			return fmt.Errorf("inbox record %s: %w", eventID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("inbox record %s: %w", eventID, err)
		}
		if n == 0 {
			return ErrAlreadyProcessed
		}
		return effect(tx)
	})
}

// Purge deletes records older than before. Keep them longer than any redelivery can arrive (the
// broker's retention), or an old event replayed later would run again.
func Purge(ctx context.Context, db *sql.DB, before time.Time) (int64, error) {
	d, err := sqldb.DialectOf(db)
	if err != nil {
		return 0, err
	}
	res, err := db.ExecContext(ctx, d.Rebind("DELETE FROM inbox WHERE processed_at < ?"), before.UTC())
	if err != nil {
		return 0, fmt.Errorf("inbox purge: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("inbox purge: %w", err)
	}
	return n, nil
}

// PurgeBatch deletes at most limit records older than before, oldest first, and returns how many it
// deleted: a purge in bounded batches holds no long lock and writes no huge transaction.
func PurgeBatch(ctx context.Context, db *sql.DB, before time.Time, limit int) (int64, error) {
	d, err := sqldb.DialectOf(db)
	if err != nil {
		return 0, err
	}
	res, err := db.ExecContext(ctx, d.Rebind(`DELETE FROM inbox WHERE (consumer, event_id) IN (
		SELECT consumer, event_id FROM inbox WHERE processed_at < ? ORDER BY processed_at LIMIT ?)`), before.UTC(), limit)
	if err != nil {
		return 0, fmt.Errorf("inbox purge: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("inbox purge: %w", err)
	}
	return n, nil
}

// PurgerConfig configures RunPurger; the zero value gets the defaults.
type PurgerConfig struct {
	// Retention is how long a record is kept (default 7 days). It must exceed any redelivery: the
	// broker's retention of the consumed topics and any dead-letter replay, or a replayed event would
	// be applied again.
	Retention time.Duration
	// Interval is the time between purges (default 1 h).
	Interval time.Duration
	// BatchSize bounds one DELETE (default 1000).
	BatchSize int
	// Timeout bounds one batch (default 30 s).
	Timeout time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

func (c PurgerConfig) withDefaults() PurgerConfig {
	if c.Retention <= 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.Interval <= 0 {
		c.Interval = time.Hour
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// RunPurger deletes the records older than cfg.Retention now and then every cfg.Interval, in batches,
// until ctx ends; then it returns nil. A failed purge is logged and tried again at the next interval.
// Several instances of a service may run it at once: deleting is idempotent.
func RunPurger(ctx context.Context, db *sql.DB, cfg PurgerConfig, log *slog.Logger) error {
	cfg = cfg.withDefaults()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		before := cfg.Now().Add(-cfg.Retention)
		var total int64
		for ctx.Err() == nil {
			bctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			n, err := PurgeBatch(bctx, db, before, cfg.BatchSize)
			cancel()
			total += n
			if err != nil {
				if ctx.Err() == nil {
					log.WarnContext(ctx, "inbox purge", "deleted", total, "err", err)
				}
				break
			}
			if n < int64(cfg.BatchSize) {
				if total > 0 {
					log.InfoContext(ctx, "inbox purged", "deleted", total, "older_than", before)
				}
				break
			}
		}
		t.Reset(cfg.Interval)
	}
}
