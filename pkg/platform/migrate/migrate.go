// Package migrate applies a service's embedded SQL migrations (golang-migrate, iofs source) at start-up
// and backs the `migrate` subcommand (up, down N, version, force V). On PostgreSQL the run holds the
// driver's advisory lock, so replicas starting together apply each file once; on SQLite the database
// belongs to one process and the driver's in-process lock is enough.
//
// Platform tables (outbox, inbox) ship their own migrations and are applied with their own migrations
// table (Options.Table), so their versions never mix with the service's.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"

	gomigrate "github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	sqlitemigrate "github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// DefaultTable is the migrations table of a service's own schema.
const DefaultTable = "schema_migrations"

// ErrUsage is returned by Command for arguments it does not understand.
var ErrUsage = errors.New("usage: migrate up | down N | version | force V")

// Options tune a run. The zero value applies a service's migrations with the defaults.
type Options struct {
	// Table holds the applied version (default DefaultTable). Each set of migrations needs its own.
	Table string
	// LockTimeout bounds the wait for another instance's run (default 1 min).
	LockTimeout time.Duration
	// StatementTimeout bounds each PostgreSQL statement (default: none, an index build may be long).
	StatementTimeout time.Duration
	// Logger receives one line per applied file; nil discards.
	Logger *slog.Logger
}

// Up applies every pending migration of src (files NNNN_name.up.sql / .down.sql at its root).
// Nothing pending is success. A failing file stops the run with an error naming it; the database is
// then marked dirty at that version and every later Up fails the same way until the file is fixed and
// `migrate force <previous version>` is run.
func Up(ctx context.Context, dsn string, src fs.FS, opts Options) error {
	m, err := open(ctx, dsn, src, opts)
	if err != nil {
		return err
	}
	defer m.close()
	return m.up()
}

// Command runs the `migrate` subcommand: args is what follows it on the command line. It writes the
// resulting version to out.
func Command(ctx context.Context, dsn string, src fs.FS, opts Options, args []string, out io.Writer) error {
	if len(args) == 0 {
		return ErrUsage
	}
	m, err := open(ctx, dsn, src, opts)
	if err != nil {
		return err
	}
	defer m.close()
	switch {
	case args[0] == "up" && len(args) == 1:
		err = m.up()
	case args[0] == "down" && len(args) == 2:
		n, perr := strconv.Atoi(args[1])
		if perr != nil || n <= 0 {
			return fmt.Errorf("down %q: %w", args[1], ErrUsage)
		}
		err = m.explain(m.m.Steps(-n))
		if errors.Is(err, gomigrate.ErrNoChange) {
			err = nil
		}
	case args[0] == "force" && len(args) == 2:
		v, perr := strconv.Atoi(args[1])
		if perr != nil || v < -1 {
			return fmt.Errorf("force %q: %w", args[1], ErrUsage)
		}
		err = m.m.Force(v)
	case args[0] == "version" && len(args) == 1:
	default:
		return ErrUsage
	}
	if err != nil {
		return err
	}
	v, dirty, err := m.m.Version()
	switch {
	case errors.Is(err, gomigrate.ErrNilVersion):
		_, err = fmt.Fprintln(out, "version: none")
	case err != nil:
		return fmt.Errorf("version: %w", err)
	default:
		_, err = fmt.Fprintf(out, "version: %d dirty: %t\n", v, dirty)
	}
	return err
}

type runner struct {
	m    *gomigrate.Migrate
	src  fs.FS
	stop func() bool
}

func open(ctx context.Context, dsn string, src fs.FS, opts Options) (*runner, error) {
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Minute
	}
	srcDrv, err := iofs.New(src, ".")
	if err != nil {
		return nil, fmt.Errorf("migrations source: %w", err)
	}
	// A pool of its own: the drivers close the *sql.DB they are given.
	db, d, err := sqldb.Open(ctx, dsn, sqldb.Options{MaxOpenConns: 2})
	if err != nil {
		_ = srcDrv.Close()
		return nil, err
	}
	var dbDrv database.Driver
	switch d {
	case sqldb.Postgres:
		dbDrv, err = pgxmigrate.WithInstance(db, &pgxmigrate.Config{
			MigrationsTable:  opts.Table,
			StatementTimeout: opts.StatementTimeout,
		})
	case sqldb.SQLite:
		dbDrv, err = sqlitemigrate.WithInstance(db, &sqlitemigrate.Config{MigrationsTable: opts.Table})
	}
	if err != nil {
		_ = db.Close()
		_ = srcDrv.Close()
		return nil, fmt.Errorf("migrations driver %s: %w", d, err)
	}
	m, err := gomigrate.NewWithInstance("iofs", srcDrv, string(d), dbDrv)
	if err != nil {
		_ = dbDrv.Close()
		_ = srcDrv.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	m.LockTimeout = opts.LockTimeout
	if opts.Logger != nil {
		m.Log = logger{log: opts.Logger.With("migrations_table", opts.Table)}
	}
	// migrate stops between files when told; cancelling ctx tells it.
	stop := context.AfterFunc(ctx, func() {
		select {
		case m.GracefulStop <- true:
		default:
		}
	})
	return &runner{m: m, src: src, stop: stop}, nil
}

func (r *runner) close() {
	r.stop()
	_, _ = r.m.Close()
}

func (r *runner) up() error {
	err := r.explain(r.m.Up())
	if errors.Is(err, gomigrate.ErrNoChange) {
		return nil
	}
	return err
}

// explain names the file a failed or dirty run stopped at: golang-migrate reports only the SQL error.
func (r *runner) explain(err error) error {
	if err == nil || errors.Is(err, gomigrate.ErrNoChange) {
		return err
	}
	var dirty gomigrate.ErrDirty
	if errors.As(err, &dirty) {
		return fmt.Errorf("migration %s (version %d) failed before; fix it, then run `migrate force %d`: %w",
			r.file(uint(dirty.Version)), dirty.Version, dirty.Version-1, err)
	}
	v, isDirty, verr := r.m.Version()
	if verr != nil || !isDirty {
		return fmt.Errorf("migrate: %w", err)
	}
	return fmt.Errorf("migration %s (version %d): %w", r.file(v), v, err)
}

func (r *runner) file(version uint) string {
	prefix := strconv.FormatUint(uint64(version), 10)
	entries, err := fs.ReadDir(r.src, ".")
	if err != nil {
		return "version " + prefix
	}
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(num, 10, 64)
		if err == nil && n == uint64(version) && strings.HasSuffix(name, ".up.sql") {
			return path.Clean(name)
		}
	}
	return "version " + prefix
}

type logger struct{ log *slog.Logger }

func (l logger) Printf(format string, v ...any) {
	l.log.Info(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l logger) Verbose() bool { return false }
