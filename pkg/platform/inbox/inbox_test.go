package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

func setup(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := sqldb.ParseDialect(dsn)
	if err != nil {
		t.Fatal(err)
	}
	src, err := inbox.Migrations(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(ctx, dsn, src, migrate.Options{Table: inbox.MigrationsTable}); err != nil {
		t.Fatal(err)
	}
	db, _ := sqldbtest.Open(t, dsn)
	if _, err := db.ExecContext(ctx, "CREATE TABLE effects (event_id TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return db
}

func count(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM effects").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestProcessOnce(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := setup(t, b.DSN(t))
			d, _ := sqldb.DialectOf(db)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			effect := func(id string) func(tx *sql.Tx) error {
				return func(tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, d.Rebind("INSERT INTO effects (event_id) VALUES (?)"), id)
					return err
				}
			}
			if err := inbox.Process(ctx, db, "c1", "e1", effect("e1")); err != nil {
				t.Fatal(err)
			}
			if err := inbox.Process(ctx, db, "c1", "e1", effect("e1")); !errors.Is(err, inbox.ErrAlreadyProcessed) {
				t.Fatalf("redelivery: %v, want ErrAlreadyProcessed", err)
			}
			// Another consumer of the same event has its own record.
			if err := inbox.Process(ctx, db, "c2", "e1", effect("e1")); err != nil {
				t.Fatal(err)
			}
			// A failing effect leaves no record: the redelivery runs it.
			boom := errors.New("boom")
			if err := inbox.Process(ctx, db, "c1", "e2", func(tx *sql.Tx) error {
				if err := effect("e2")(tx); err != nil {
					return err
				}
				return boom
			}); !errors.Is(err, boom) {
				t.Fatalf("failing effect: %v", err)
			}
			if err := inbox.Process(ctx, db, "c1", "e2", effect("e2")); err != nil {
				t.Fatalf("retry after failure: %v", err)
			}
			if got := count(t, db); got != 3 {
				t.Fatalf("effects = %d, want 3", got)
			}
			if n, err := inbox.Purge(ctx, db, time.Now().Add(time.Hour)); err != nil || n != 3 {
				t.Fatalf("purge = %d, %v; want 3", n, err)
			}
		})
	}
}

// Concurrent deliveries of one event (a redelivery racing the original): exactly one effect.
func TestProcessConcurrent(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := setup(t, b.DSN(t))
			d, _ := sqldb.DialectOf(db)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const workers, events = 4, 50
			var wg sync.WaitGroup
			var mu sync.Mutex
			applied, dup := 0, 0
			for range workers {
				wg.Go(func() {
					for e := range events {
						id := "e" + string(rune('A'+e%26)) + string(rune('a'+e/26))
						err := inbox.Process(ctx, db, "c", id, func(tx *sql.Tx) error {
							_, err := tx.ExecContext(ctx, d.Rebind("INSERT INTO effects (event_id) VALUES (?)"), id)
							return err
						})
						mu.Lock()
						switch {
						case err == nil:
							applied++
						case errors.Is(err, inbox.ErrAlreadyProcessed):
							dup++
						default:
							t.Error(err)
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if applied != events || dup != events*(workers-1) || count(t, db) != events {
				t.Fatalf("applied=%d dup=%d effects=%d; want %d, %d, %d", applied, dup, count(t, db), events, events*(workers-1), events)
			}
		})
	}
}

// The purger deletes, in batches, exactly the records older than the retention, for every consumer,
// and keeps the recent ones: a redelivery of a kept event is still refused.
func TestPurger(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := setup(t, b.DSN(t))
			d, _ := sqldb.DialectOf(db)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			now := time.Now().UTC()
			const old, recent = 25, 5
			ins := d.Rebind("INSERT INTO inbox (consumer, event_id, processed_at) VALUES (?, ?, ?)")
			for i := range old + recent {
				at := now.Add(-8 * 24 * time.Hour).Add(time.Duration(i) * time.Minute) // 8 days ago
				if i >= old {
					at = now.Add(-time.Duration(i) * time.Minute) // within the retention
				}
				if _, err := db.ExecContext(ctx, ins, fmt.Sprint("c", i%2), fmt.Sprint("e", i), at); err != nil {
					t.Fatal(err)
				}
			}
			pctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- inbox.RunPurger(pctx, db, inbox.PurgerConfig{BatchSize: 4, Interval: time.Hour}, slog.New(slog.DiscardHandler))
			}()
			left := func() int {
				var n int
				if err := db.QueryRowContext(ctx, "SELECT count(*) FROM inbox").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			for left() > recent && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var oldest time.Time
			if err := db.QueryRowContext(ctx, "SELECT min(processed_at) FROM inbox").Scan(&sqlTime{&oldest}); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d records left, oldest %v ago", left(), now.Sub(oldest).Round(time.Minute))
			if left() != recent || now.Sub(oldest) > 7*24*time.Hour {
				t.Fatalf("%d records left (oldest %v), want the %d recent ones", left(), oldest, recent)
			}
			if err := inbox.Process(ctx, db, fmt.Sprint("c", (old+1)%2), fmt.Sprint("e", old+1), func(*sql.Tx) error { return nil }); !errors.Is(err, inbox.ErrAlreadyProcessed) {
				t.Fatalf("kept record: %v, want ErrAlreadyProcessed", err)
			}
			if err := inbox.Process(ctx, db, "c1", "e1", func(*sql.Tx) error { return nil }); err != nil {
				t.Fatalf("purged record: %v, want it processed anew", err)
			}
		})
	}
}

// sqlTime scans a timestamp that SQLite may return as text.
type sqlTime struct{ t *time.Time }

func (s *sqlTime) Scan(v any) error {
	switch x := v.(type) {
	case time.Time:
		*s.t = x
		return nil
	case string:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05"} {
			if t, err := time.Parse(layout, x); err == nil {
				*s.t = t
				return nil
			}
		}
	}
	return fmt.Errorf("timestamp %T %v", v, v)
}
