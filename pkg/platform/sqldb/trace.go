package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// A small database/sql driver wrapper instead of a dependency (otelsql): it gives every statement and
// transaction a client span, but only inside an existing trace, so background pollers (the outbox
// relay) do not start a root trace per poll. Rows are not traced past Query's return.

// traced reopens db's driver behind the wrapper; db is closed. The wrapper traces with tp (no spans
// when it is nil) and, for SQLite, keeps prepared statements per connection (see stmtCache). The new
// *sql.DB's Close also closes owned (when not nil), after the pool's connections.
func traced(db *sql.DB, name string, d Dialect, tp trace.TracerProvider, owned io.Closer) *sql.DB {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	drv := db.Driver()
	_ = db.Close()
	t := &tracing{
		tracer: tp.Tracer("github.com/shopmesh/shopmesh/pkg/platform/sqldb"),
		system: attribute.String("db.system.name", map[Dialect]string{Postgres: "postgresql", SQLite: "sqlite"}[d]),
		cache:  d == SQLite,
	}
	var inner driver.Connector = dsnConnector{drv: drv, name: name}
	if dc, ok := drv.(driver.DriverContext); ok {
		if c, err := dc.OpenConnector(name); err == nil {
			inner = c
		}
	}
	return sql.OpenDB(&tracedConnector{inner: inner, drv: &tracedDriver{inner: drv, t: t}, t: t, owned: owned})
}

type tracing struct {
	tracer trace.Tracer
	system attribute.KeyValue
	cache  bool // keep prepared statements per connection
}

func (t *tracing) conn(inner driver.Conn) *tracedConn {
	c := &tracedConn{inner: inner, t: t}
	if t.cache {
		c.stmts = stmtCache{}
	}
	return c
}

var clientKind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// start begins a span named op when ctx is inside a trace; end it with the operation's error.
func (t *tracing) start(ctx context.Context, op, query string) (context.Context, func(error)) {
	if query == "" || !trace.SpanContextFromContext(ctx).IsValid() {
		return t.startWith(ctx, op)
	}
	return t.startWith(ctx, op, attribute.String("db.query.text", clip(query)))
}

// clip bounds a query text kept on a span.
func clip(query string) string {
	if len(query) > 2048 {
		return query[:2048]
	}
	return query
}

// startWith is start with the span's attributes given.
func (t *tracing) startWith(ctx context.Context, op string, attrs ...attribute.KeyValue) (context.Context, func(error)) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, func(error) {}
	}
	ctx, span := t.tracer.Start(ctx, op, clientKind...)
	if span.IsRecording() {
		span.SetAttributes(t.system)
		span.SetAttributes(attrs...)
	}
	return ctx, func(err error) {
		if err != nil && !errors.Is(err, driver.ErrSkip) && span.IsRecording() {
			span.RecordError(err)
			span.SetStatus(codes.Error, "sql error")
		}
		span.End()
	}
}

type dsnConnector struct {
	drv  driver.Driver
	name string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.name) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }

type tracedConnector struct {
	inner driver.Connector
	drv   *tracedDriver
	t     *tracing
	owned io.Closer // closed with the connector (nil: nothing)
}

// Close is called by (*sql.DB).Close after it closed the idle connections (one in use is closed when
// released; SQLite then checkpoints the rest of the log on the last one).
func (c *tracedConnector) Close() error {
	var errs []error
	if cl, ok := c.inner.(io.Closer); ok {
		errs = append(errs, cl.Close())
	}
	if c.owned != nil {
		errs = append(errs, c.owned.Close())
	}
	return errors.Join(errs...)
}

func (c *tracedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return c.t.conn(conn), nil
}

func (c *tracedConnector) Driver() driver.Driver { return c.drv }

// tracedDriver is what db.Driver() returns; DialectOf looks through it.
type tracedDriver struct {
	inner driver.Driver
	t     *tracing
}

func (d *tracedDriver) Open(name string) (driver.Conn, error) {
	conn, err := d.inner.Open(name)
	if err != nil {
		return nil, err
	}
	return d.t.conn(conn), nil
}

type tracedConn struct {
	inner driver.Conn
	t     *tracing
	stmts stmtCache // nil: no statement cache
}

var (
	_ driver.ConnBeginTx        = (*tracedConn)(nil)
	_ driver.ConnPrepareContext = (*tracedConn)(nil)
	_ driver.ExecerContext      = (*tracedConn)(nil)
	_ driver.QueryerContext     = (*tracedConn)(nil)
	_ driver.Pinger             = (*tracedConn)(nil)
	_ driver.SessionResetter    = (*tracedConn)(nil)
	_ driver.Validator          = (*tracedConn)(nil)
	_ driver.NamedValueChecker  = (*tracedConn)(nil)
)

// unwrap returns the driver's connection and the tracing of its statements, for WithPgx.
func (c *tracedConn) unwrap() (driver.Conn, *tracing) { return c.inner, c.t }

func (c *tracedConn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }

func (c *tracedConn) Close() error {
	c.stmts.close()
	return c.inner.Close()
}

// Begin is required by driver.Conn; database/sql calls BeginTx.
func (c *tracedConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *tracedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := c.inner.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.inner.Prepare(query)
}

func (c *tracedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	sctx, end := c.t.start(ctx, "sql.begin", "")
	var (
		tx  driver.Tx
		err error
	)
	if b, ok := c.inner.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(sctx, opts)
	} else {
		//lint:ignore SA1019 the fallback for drivers without BeginTx
		tx, err = c.inner.Begin() //nolint:staticcheck // SA1019: the fallback for drivers without BeginTx
	}
	end(err)
	if err != nil {
		return nil, err
	}
	return &tracedTx{inner: tx, ctx: ctx, t: c.t}, nil
}

func (c *tracedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.inner.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	ctx, end := c.t.start(ctx, "sql.exec", query)
	var (
		res driver.Result
		err error
	)
	if cs := c.stmts.get(ctx, c.inner, query); cs != nil {
		res, err = cs.exec(ctx, args)
	} else {
		res, err = e.ExecContext(ctx, query, args)
	}
	end(err)
	return res, err
}

func (c *tracedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.inner.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	ctx, end := c.t.start(ctx, "sql.query", query)
	var (
		rows driver.Rows
		err  error
	)
	if cs := c.stmts.get(ctx, c.inner, query); cs != nil {
		rows, err = cs.query(ctx, args)
	} else {
		rows, err = q.QueryContext(ctx, query, args)
	}
	end(err)
	return rows, err
}

func (c *tracedConn) Ping(ctx context.Context) error {
	if p, ok := c.inner.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *tracedConn) ResetSession(ctx context.Context) error {
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *tracedConn) IsValid() bool {
	if v, ok := c.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *tracedConn) CheckNamedValue(nv *driver.NamedValue) error {
	if n, ok := c.inner.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// tracedTx spans the commit or rollback in the trace of the BeginTx ctx (the driver gives Commit none).
type tracedTx struct {
	inner driver.Tx
	ctx   context.Context
	t     *tracing
}

func (tx *tracedTx) Commit() error {
	_, end := tx.t.start(tx.ctx, "sql.commit", "")
	err := tx.inner.Commit()
	end(err)
	return err
}

func (tx *tracedTx) Rollback() error {
	_, end := tx.t.start(tx.ctx, "sql.rollback", "")
	err := tx.inner.Rollback()
	end(err)
	return err
}
