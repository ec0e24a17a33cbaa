// Package sqldb opens the one *sql.DB a service uses, on PostgreSQL (pgx's database/sql driver) or on an
// embedded SQLite file (modernc, pure Go), so that stores, the outbox and the inbox have a single code path
// and differ only by the Dialect they ask for.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/trace"
	"modernc.org/sqlite"
)

// Dialect names the SQL flavour behind a *sql.DB.
type Dialect string

// The dialects Open knows.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// SkipLocked reports whether SELECT ... FOR UPDATE SKIP LOCKED exists, which is what lets several
// workers claim rows of one table at once.
func (d Dialect) SkipLocked() bool { return d == Postgres }

// Placeholder returns the n-th (1-based) bind parameter: $n on PostgreSQL, ? on SQLite.
func (d Dialect) Placeholder(n int) string {
	if d == Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// Rebind turns a query written with ? placeholders into the dialect's own. Queries are written once with
// ?, which must therefore not appear in literals.
func (d Dialect) Rebind(query string) string {
	if d != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ErrUnknownDSN is returned for a DSN that is neither postgres:// nor sqlite:/file:.
var ErrUnknownDSN = errors.New("sqldb: unknown DSN scheme (want postgres://, sqlite: or file:)")

// Options tune the pool. The zero value is usable.
type Options struct {
	// MaxOpenConns caps PostgreSQL connections (default 10). SQLite always uses one: a single writer
	// makes SQLITE_BUSY impossible inside the process, and WAL keeps other processes' readers going.
	MaxOpenConns int
	// BusyTimeout is how long an SQLite connection waits for another process's lock (default 10 s).
	BusyTimeout time.Duration
	// CheckpointInterval is how often an SQLite database's write-ahead log is copied into the database
	// file by a connection of its own, so that no commit of the serving connection does it (default
	// 250 ms; see checkpoint.go). Negative: no such connection, SQLite's automatic checkpoints (every
	// 1000 pages of log, inside the commit that crosses them).
	CheckpointInterval time.Duration
	// TracerProvider, when set, gives statements and transactions run inside a trace a client span
	// (sql.exec, sql.query, sql.begin, sql.commit, sql.rollback; sql.batch for a pipelined round trip of
	// WithPgx); work outside any trace gets none.
	TracerProvider trace.TracerProvider
}

// ParseDialect tells which dialect a DSN selects, without opening anything.
func ParseDialect(dsn string) (Dialect, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return Postgres, nil
	case strings.HasPrefix(dsn, "sqlite:"), strings.HasPrefix(dsn, "file:"):
		return SQLite, nil
	}
	return "", ErrUnknownDSN
}

// Open opens and pings the database a DSN names: postgres://... or sqlite:<path> / file:<path>. SQLite
// files get WAL, a busy timeout, foreign keys, BEGIN IMMEDIATE transactions and checkpoints in the
// background (Options.CheckpointInterval), stopped by the *sql.DB's Close.
func Open(ctx context.Context, dsn string, opts Options) (*sql.DB, Dialect, error) {
	d, err := ParseDialect(dsn)
	if err != nil {
		return nil, "", err
	}
	var db *sql.DB
	switch d {
	case Postgres:
		db, err = sql.Open("pgx", dsn)
		if err != nil {
			return nil, "", fmt.Errorf("open postgres: %w", err)
		}
		if opts.TracerProvider != nil {
			db = traced(db, dsn, d, opts.TracerProvider, nil)
		}
		n := opts.MaxOpenConns
		if n <= 0 {
			n = 10
		}
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
		db.SetConnMaxIdleTime(5 * time.Minute)
	case SQLite:
		every := opts.CheckpointInterval
		if every == 0 {
			every = defaultCheckpointInterval
		}
		autoCheckpoint := 0 // SQLite's default
		if every > 0 {
			autoCheckpoint = walSafetyPages
		}
		name, err := sqliteName(dsn, opts.BusyTimeout, autoCheckpoint)
		if err != nil {
			return nil, "", err
		}
		db, err = sql.Open("sqlite", name)
		if err != nil {
			return nil, "", fmt.Errorf("open sqlite: %w", err)
		}
		var ck io.Closer
		if every > 0 {
			// After a first connection, which creates the file and turns WAL on.
			if err := db.PingContext(ctx); err != nil {
				_ = db.Close()
				return nil, "", fmt.Errorf("ping %s: %w", d, err)
			}
			if ck, err = startCheckpointer(ctx, name, every); err != nil {
				_ = db.Close()
				return nil, "", err
			}
		}
		// Always wrapped: the wrapper also keeps prepared statements (tracing stays off without a
		// TracerProvider); its Close stops the checkpointer.
		db = traced(db, name, d, opts.TracerProvider, ck)
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, "", fmt.Errorf("ping %s: %w", d, err)
	}
	return db, d, nil
}

func sqliteName(dsn string, busy time.Duration, autoCheckpoint int) (string, error) {
	rest := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	rest = strings.TrimPrefix(rest, "//")
	path, rawQuery, _ := strings.Cut(rest, "?")
	if path == "" {
		return "", fmt.Errorf("sqlite DSN %q: %w", dsn, errors.New("no file path"))
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("sqlite DSN %q: %w", dsn, err)
	}
	if busy <= 0 {
		busy = 10 * time.Second
	}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if autoCheckpoint > 0 {
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", autoCheckpoint))
	}
	if q.Get("_txlock") == "" {
		// A deferred transaction that reads then writes can fail with SQLITE_BUSY when another process
		// wrote in between; taking the write lock at BEGIN makes it wait instead.
		q.Set("_txlock", "immediate")
	}
	if q.Get("_time_format") == "" {
		q.Set("_time_format", "sqlite")
	}
	return "file:" + path + "?" + q.Encode(), nil
}

// DialectOf tells which dialect an open *sql.DB speaks, from its driver.
func DialectOf(db *sql.DB) (Dialect, error) {
	drv := db.Driver()
	if t, ok := drv.(*tracedDriver); ok {
		drv = t.inner
	}
	switch drv.(type) {
	case *stdlib.Driver:
		return Postgres, nil
	case *sqlite.Driver:
		return SQLite, nil
	}
	return "", fmt.Errorf("sqldb: driver %T: %w", drv, ErrUnknownDSN)
}

// InTx runs fn in a transaction, committing when it returns nil and rolling back otherwise (and on
// panic, which is re-raised). The error fn returns is passed back unwrapped so callers can errors.Is it.
func InTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
