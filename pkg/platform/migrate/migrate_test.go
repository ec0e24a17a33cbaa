package migrate_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

func good() fstest.MapFS {
	return fstest.MapFS{
		"0001_items.up.sql":        {Data: []byte("CREATE TABLE items (id TEXT PRIMARY KEY, qty INTEGER NOT NULL);")},
		"0001_items.down.sql":      {Data: []byte("DROP TABLE items;")},
		"0002_items_name.up.sql":   {Data: []byte("ALTER TABLE items ADD COLUMN name TEXT;")},
		"0002_items_name.down.sql": {Data: []byte("ALTER TABLE items DROP COLUMN name;")},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func version(t *testing.T, dsn string, fsys fstest.MapFS, opts migrate.Options) string {
	t.Helper()
	var out bytes.Buffer
	if err := migrate.Command(ctx(t), dsn, fsys, opts, []string{"version"}, &out); err != nil {
		t.Fatalf("version: %v", err)
	}
	return strings.TrimSpace(out.String())
}

func TestUpIsIdempotent(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			if got := version(t, dsn, good(), migrate.Options{}); got != "version: none" {
				t.Fatalf("fresh database: %q", got)
			}
			for i := range 2 {
				if err := migrate.Up(ctx(t), dsn, good(), migrate.Options{}); err != nil {
					t.Fatalf("up #%d: %v", i+1, err)
				}
				if got := version(t, dsn, good(), migrate.Options{}); got != "version: 2 dirty: false" {
					t.Fatalf("after up #%d: %q", i+1, got)
				}
			}
			db, _ := sqldbtest.Open(t, dsn)
			if _, err := db.ExecContext(ctx(t), "INSERT INTO items (id, qty, name) VALUES ('a', 1, 'x')"); err != nil {
				t.Fatalf("schema not applied: %v", err)
			}
		})
	}
}

func TestBrokenMigrationNamesFile(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			fsys := good()
			fsys["0003_broken.up.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLEX nope (;")}
			fsys["0003_broken.down.sql"] = &fstest.MapFile{Data: []byte("SELECT 1;")}
			err := migrate.Up(ctx(t), dsn, fsys, migrate.Options{})
			if err == nil || !strings.Contains(err.Error(), "0003_broken.up.sql") {
				t.Fatalf("Up error = %v, want it to name 0003_broken.up.sql", err)
			}
			// The next start-up still refuses, naming the file, until someone forces the version.
			err = migrate.Up(ctx(t), dsn, fsys, migrate.Options{})
			if err == nil || !strings.Contains(err.Error(), "0003_broken.up.sql") {
				t.Fatalf("second Up error = %v, want it to name 0003_broken.up.sql", err)
			}
			var out bytes.Buffer
			if err := migrate.Command(ctx(t), dsn, good(), migrate.Options{}, []string{"force", "2"}, &out); err != nil {
				t.Fatalf("force: %v", err)
			}
			if err := migrate.Up(ctx(t), dsn, good(), migrate.Options{}); err != nil {
				t.Fatalf("Up after force: %v", err)
			}
		})
	}
}

func TestCommandDownAndTables(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			var out bytes.Buffer
			if err := migrate.Command(ctx(t), dsn, good(), migrate.Options{}, []string{"up"}, &out); err != nil {
				t.Fatal(err)
			}
			out.Reset()
			if err := migrate.Command(ctx(t), dsn, good(), migrate.Options{}, []string{"down", "1"}, &out); err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out.String()); got != "version: 1 dirty: false" {
				t.Fatalf("after down 1: %q", got)
			}
			// A second set of migrations with its own table does not see the first one's version.
			other := fstest.MapFS{"0001_other.up.sql": {Data: []byte("CREATE TABLE other (id TEXT);")}}
			opts := migrate.Options{Table: "other_schema_migrations"}
			if err := migrate.Up(ctx(t), dsn, other, opts); err != nil {
				t.Fatal(err)
			}
			if got := version(t, dsn, good(), migrate.Options{}); got != "version: 1 dirty: false" {
				t.Fatalf("service version changed: %q", got)
			}
			for _, args := range [][]string{{}, {"down"}, {"down", "x"}, {"sideways"}} {
				if err := migrate.Command(ctx(t), dsn, good(), migrate.Options{}, args, &out); err == nil {
					t.Errorf("Command(%q) succeeded", args)
				}
			}
		})
	}
}

// Replicas starting together: the advisory lock makes each file run once.
func TestConcurrentUpPostgres(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- migrate.Up(ctx(t), dsn, good(), migrate.Options{}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := version(t, dsn, good(), migrate.Options{}); got != "version: 2 dirty: false" {
		t.Fatalf("after concurrent up: %q", got)
	}
}
