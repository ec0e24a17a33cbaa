package sqldbtest

import (
	"context"
	"database/sql"
	"testing"
	"time"
)

// StringMap returns the rows of query, two text columns each, as a map from the first column to the
// second (empty, not nil, when there are none): a table's state in a form a test can compare before
// and after.
func StringMap(t testing.TB, db *sql.DB, query string, args ...any) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer func() { _ = rows.Close() }()
	m := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		m[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return m
}
