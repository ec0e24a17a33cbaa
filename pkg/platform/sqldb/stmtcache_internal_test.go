package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Past maxCachedStmts distinct queries (generated IN lists, say) the cache stays at its bound and still
// takes new statements, and every query keeps answering correctly.
func TestStatementCacheStaysBoundedAndKeepsCaching(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, _, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "c.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	size := func() int {
		n := -1
		_ = conn.Raw(func(dc any) error { n = len(dc.(*tracedConn).stmts); return nil })
		return n
	}
	for i := range maxCachedStmts + 50 {
		var got int
		// A distinct query text each time, as a generated IN list would be.
		q := fmt.Sprintf("SELECT %d + ?", i)
		if err := conn.QueryRowContext(ctx, q, 1).Scan(&got); err != nil || got != i+1 {
			t.Fatalf("%s = %d, %v", q, got, err)
		}
	}
	if n := size(); n != maxCachedStmts {
		t.Fatalf("cache holds %d statements, want the bound %d", n, maxCachedStmts)
	}
	const hot = `INSERT INTO t (v) VALUES (?)`
	if err := sqlExec(ctx, conn, hot, 7); err != nil {
		t.Fatal(err)
	}
	var cached bool
	_ = conn.Raw(func(dc any) error { _, cached = dc.(*tracedConn).stmts[hot]; return nil })
	if !cached || size() != maxCachedStmts {
		t.Fatalf("a new statement past the bound: cached %v, size %d", cached, size())
	}
}

func sqlExec(ctx context.Context, conn *sql.Conn, q string, args ...any) error {
	_, err := conn.ExecContext(ctx, q, args...)
	return err
}
