package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// A commit's checkpoint is visible as the database file growing: until one runs, changed pages are
// only in the -wal file. The tests write rows of rowBytes, one row per page, one transaction each.
const rowBytes = 3000

func openSQLiteFile(t *testing.T, every time.Duration) (*sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ckpt.db")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, _, err := sqldb.Open(ctx, "sqlite:"+path, sqldb.Options{CheckpointInterval: every})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.ExecContext(ctx, "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return db, path
}

func writeRows(t *testing.T, db *sql.DB, n, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := []byte(strings.Repeat("x", size))
	for range n {
		if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO blobs (b) VALUES (?)", b)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// With the background checkpointer (stalled here by a long interval) the serving connection's commits
// leave the log alone although it passes SQLite's 1000 pages; with it turned off (the former
// behaviour) the commit that crosses 1000 pages copies the log into the database file.
func TestSQLiteCommitsLeaveCheckpointsToTheCheckpointer(t *testing.T) {
	t.Parallel()
	const rows = 1500 // ≥ 1500 pages of log
	for _, tc := range []struct {
		name   string
		every  time.Duration
		copied bool
	}{
		{"checkpointer", time.Hour, false},
		{"sqlite automatic checkpoints", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, path := openSQLiteFile(t, tc.every)
			writeRows(t, db, rows, rowBytes)
			size := fileSize(t, path)
			if copied := size >= 1000*rowBytes; copied != tc.copied {
				t.Fatalf("database file %d bytes after %d commits of %d bytes: copied by a commit = %v, want %v",
					size, rows, rowBytes, copied, tc.copied)
			}
		})
	}
}

// The checkpointer copies the log into the database file by itself.
func TestSQLiteCheckpointerCopiesTheLog(t *testing.T) {
	t.Parallel()
	const rows = 1500
	db, path := openSQLiteFile(t, 10*time.Millisecond)
	writeRows(t, db, rows, rowBytes)
	deadline := time.Now().Add(30 * time.Second)
	for fileSize(t, path) < rows*rowBytes {
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes 30 s after %d commits of %d bytes: the log was not copied",
				fileSize(t, path), rows, rowBytes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every row is there (the copy lost nothing) and the file reads back.
	var n int
	if err := db.QueryRowContext(context.Background(), "SELECT count(*) FROM blobs").Scan(&n); err != nil || n != rows {
		t.Fatalf("rows = %d, %v; want %d", n, err, rows)
	}
}

// When the checkpointer does not keep up (stalled here), the serving connection's own automatic
// checkpoint still bounds the log: it is started over after about 10,000 pages instead of growing.
func TestSQLiteLogIsBoundedWithoutTheCheckpointer(t *testing.T) {
	if testing.Short() {
		t.Skip("writes ~60 MB of log")
	}
	t.Parallel()
	const commits = 14000 // one page of log each: 14,000 pages without the bound
	db, path := openSQLiteFile(t, time.Hour)
	writeRows(t, db, commits, 8)
	const page = 4096 + 24 // a log frame
	if wal := fileSize(t, path+"-wal"); wal > 12000*page {
		t.Fatalf("log %d bytes (%d frames) after %d one-page commits: not bounded", wal, wal/page, commits)
	}
	if size := fileSize(t, path); size == 0 {
		t.Fatal("database file empty: the serving connection never checkpointed")
	}
}

// Close stops the checkpointer and closes its connection: the last connection to close removes the
// log, which would stay while the checkpointer's connection were open.
func TestSQLiteCloseStopsTheCheckpointer(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "close.db")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, _, err := sqldb.Open(ctx, "sqlite:"+path, sqldb.Options{CheckpointInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE kv (k TEXT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO kv VALUES ('a')"); err != nil {
		t.Fatal(err)
	}
	if fileSize(t, path+"-wal") == 0 {
		t.Fatal("no log while open: not in WAL mode?")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("log still there after Close (%v): a connection stayed open", err)
	}
}

// BenchmarkSQLiteCommit commits one page-sized row per transaction on one connection, one every
// 500 µs (about 6,000 pages of log per second: twice what a service process writes at the stack's
// maximum rate), with the checkpointer and with SQLite's automatic checkpoints (the former behaviour),
// and reports the commit latency's p99, p99.9 and maximum: the automatic checkpoint's copy and fsyncs
// land in the commit that crosses 1000 pages of log. Compare the variants of one run:
// go test -run - -bench SQLiteCommit -benchtime 10000x -count 3.
func BenchmarkSQLiteCommit(b *testing.B) {
	for _, v := range []struct {
		name  string
		every time.Duration
	}{{"checkpointer", 0}, {"automatic", -1}} {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			db, _, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "bench.db"), sqldb.Options{CheckpointInterval: v.every})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			if _, err := db.ExecContext(ctx, "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)"); err != nil {
				b.Fatal(err)
			}
			row := []byte(strings.Repeat("x", rowBytes))
			const pace = 500 * time.Microsecond
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			t0 := time.Now()
			for i := range b.N {
				time.Sleep(time.Until(t0.Add(time.Duration(i) * pace)))
				start := time.Now()
				if _, err := db.ExecContext(ctx, "INSERT INTO blobs (b) VALUES (?)", row); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			at := func(q float64) float64 { return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Nanoseconds()) }
			b.ReportMetric(at(0.99), "p99-ns")
			b.ReportMetric(at(0.999), "p99.9-ns")
			b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
		})
	}
}
