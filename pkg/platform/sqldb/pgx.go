package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Pipeline is one PostgreSQL connection of a pool, lent by WithPgx, on which several statements go to
// the server in one round trip (pgx's pipeline mode), which database/sql cannot do: a transaction's
// BEGIN with its first statement, its last statement with COMMIT.
type Pipeline struct {
	conn *pgx.Conn
	t    *tracing // nil: the pool is not traced
}

// rollbackTimeout bounds the ROLLBACK that WithPgx sends for a callback that left a transaction open;
// it runs even when the callback's context is cancelled.
const rollbackTimeout = 5 * time.Second

// WithPgx runs fn on one of db's connections (PostgreSQL only) as a Pipeline. The connection goes back
// to the pool only outside any transaction: when fn leaves one open (an error between BEGIN and
// COMMIT), WithPgx rolls it back, and when that fails, or the connection is broken or still busy
// (fn's context cancelled mid-pipeline), it closes the connection, which ends the transaction on the
// server and releases its row locks at once rather than at the connection's next use. fn's error is
// returned as it is; fn returning nil with a transaction open is an error of its own.
func WithPgx(ctx context.Context, db *sql.DB, fn func(ctx context.Context, p *Pipeline) error) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("conn: %w", err)
	}
	defer func() { _ = c.Close() }()
	var fnErr error
	err = c.Raw(func(dc any) error {
		var t *tracing
		if tc, ok := dc.(*tracedConn); ok {
			dc, t = tc.unwrap()
		}
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			fnErr = fmt.Errorf("sqldb: WithPgx on a %T connection, not pgx's", dc)
			return nil
		}
		pc := sc.Conn()
		fnErr = fn(ctx, &Pipeline{conn: pc, t: t})
		if fnErr == nil && (pc.IsClosed() || pc.PgConn().IsBusy() || pc.PgConn().TxStatus() != 'I') {
			fnErr = errors.New("sqldb: WithPgx: the callback left a transaction open or a batch unread")
		}
		if clean(ctx, pc, t) {
			return nil
		}
		return driver.ErrBadConn // (*sql.Conn).Raw closes the connection
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

// clean reports whether pc may go back to the pool, after rolling back a transaction left open.
func clean(ctx context.Context, pc *pgx.Conn, t *tracing) bool {
	pg := pc.PgConn()
	if pc.IsClosed() || pg.IsBusy() {
		return false
	}
	if pg.TxStatus() == 'I' {
		return true
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if t != nil {
		var end func(error)
		ctx, end = t.start(ctx, "sql.rollback", "")
		defer func() { end(nil) }()
	}
	if _, err := pc.Exec(ctx, "ROLLBACK"); err != nil {
		return false
	}
	return !pc.IsClosed() && pg.TxStatus() == 'I'
}

// Send sends b's statements in one round trip (after a first one per connection that prepares the
// statements it has not seen yet) and returns their results, to be read in order and closed before
// the next Send. An error stops the statements after it up to the end of b: a transaction it is in
// stays open, aborted, until a ROLLBACK (WithPgx sends one if fn does not).
//
// Inside a trace the round trip is one client span, sql.batch, that ends when the results are
// closed, with the statements in db.query.text (each clipped as sql.exec's, joined by ";\n") and
// their number in db.operation.batch.size.
func (p *Pipeline) Send(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if p.t == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return p.conn.SendBatch(ctx, b)
	}
	texts := make([]string, len(b.QueuedQueries))
	for i, q := range b.QueuedQueries {
		texts[i] = clip(q.SQL)
	}
	ctx, end := p.t.startWith(ctx, "sql.batch",
		attribute.String("db.query.text", strings.Join(texts, ";\n")),
		attribute.Int("db.operation.batch.size", len(texts)))
	return &tracedBatch{BatchResults: p.conn.SendBatch(ctx, b), end: end}
}

// tracedBatch ends the batch's span when it is closed.
type tracedBatch struct {
	pgx.BatchResults
	end func(error)
}

func (b *tracedBatch) Close() error {
	err := b.BatchResults.Close()
	if b.end != nil {
		b.end(err)
		b.end = nil
	}
	return err
}
