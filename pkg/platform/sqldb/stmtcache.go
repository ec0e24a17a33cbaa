package sqldb

import (
	"context"
	"database/sql/driver"
	"io"
	"reflect"
)

// SQLite parses every statement it runs unless the statement was prepared first, and database/sql
// prepares nothing by itself: the parse is ~15% of a service's CPU on its hot path. The wrapper keeps
// each connection's prepared statements by query text (PostgreSQL needs none: pgx caches them itself).

// maxCachedStmts bounds a connection's cache. Generated queries (an IN list or a multi-row insert of
// varying size) would otherwise grow it without end; when it is full, a statement not in use is dropped
// at random to make room, so statements still hot are prepared again on their next use at worst.
const maxCachedStmts = 256

// stmtCache is one connection's prepared statements. database/sql hands a connection to one
// goroutine at a time, so it needs no lock; busy marks a statement whose rows are still open (a query
// run again while its earlier rows are read runs unprepared instead).
type stmtCache map[string]*cachedStmt

type cachedStmt struct {
	st   driver.Stmt
	busy bool
}

// get returns the query's statement, preparing it on first use; nil when it cannot be used now.
func (c stmtCache) get(ctx context.Context, conn driver.Conn, query string) *cachedStmt {
	if c == nil {
		return nil
	}
	if cs, ok := c[query]; ok {
		if cs.busy {
			return nil
		}
		return cs
	}
	if len(c) >= maxCachedStmts && !c.evictOne() {
		return nil
	}
	var (
		st  driver.Stmt
		err error
	)
	if p, ok := conn.(driver.ConnPrepareContext); ok {
		st, err = p.PrepareContext(ctx, query)
	} else {
		st, err = conn.Prepare(query)
	}
	if err != nil {
		return nil // the unprepared path reports the error
	}
	_, execs := st.(driver.StmtExecContext)
	_, queries := st.(driver.StmtQueryContext)
	if !execs || !queries {
		_ = st.Close()
		return nil
	}
	cs := &cachedStmt{st: st}
	c[query] = cs
	return cs
}

// evictOne closes and forgets one statement that is not in use (map order is random); false when all
// are busy.
func (c stmtCache) evictOne() bool {
	for q, cs := range c {
		if !cs.busy {
			_ = cs.st.Close()
			delete(c, q)
			return true
		}
	}
	return false
}

func (c stmtCache) close() {
	for q, cs := range c {
		_ = cs.st.Close()
		delete(c, q)
	}
}

func (cs *cachedStmt) exec(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	cs.busy = true
	defer func() { cs.busy = false }()
	return cs.st.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (cs *cachedStmt) query(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	cs.busy = true
	rows, err := cs.st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		cs.busy = false
		return nil, err
	}
	return &cachedRows{Rows: rows, done: func() { cs.busy = false }}, nil
}

// cachedRows frees its statement when closed and passes the optional column-type and result-set
// interfaces through (with database/sql's own defaults where the driver has none).
type cachedRows struct {
	driver.Rows
	done func()
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	if r.done != nil {
		r.done()
		r.done = nil
	}
	return err
}

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypeNullable(i int) (bool, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

func (r *cachedRows) HasNextResultSet() bool {
	if t, ok := r.Rows.(driver.RowsNextResultSet); ok {
		return t.HasNextResultSet()
	}
	return false
}

func (r *cachedRows) NextResultSet() error {
	if t, ok := r.Rows.(driver.RowsNextResultSet); ok {
		return t.NextResultSet()
	}
	return io.EOF
}
