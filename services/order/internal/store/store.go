// Package store keeps orders in SQLite or PostgreSQL through database/sql. Every state change is one
// transaction that also writes the change's events to the outbox, and is guarded by the order's
// version (and by status = PENDING), so a terminal order never changes and two writers never both
// finish one order. On PostgreSQL each state change of the order path (Create, Update) is ONE
// autocommit statement — a data-modifying WITH that writes the order, its lines and its outbox row —
// so one round trip and no BEGIN/COMMIT; SQLite runs the same writes statement by statement in a
// transaction.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
)

// Store is the order store; the same code serves both dialects.
type Store struct {
	db      *sql.DB
	d       sqldb.Dialect
	outbox  *outbox.Outbox
	enqueue func() // called after a transaction with events commits (the relay's Notify)
}

var _ app.Orders = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithAfterCommit makes the store call fn after every transaction that wrote events, to wake the
// outbox relay (its Notify); without it the relay finds them at its next poll.
func WithAfterCommit(fn func()) Option {
	return func(s *Store) {
		if fn != nil {
			s.enqueue = fn
		}
	}
}

// New returns a store on db (migrated with migrations.FS and the outbox schema, see migrate.UpAll)
// that writes each state change's event through ob in the change's transaction.
func New(db *sql.DB, d sqldb.Dialect, ob *outbox.Outbox, opts ...Option) *Store {
	s := &Store{db: db, d: d, outbox: ob, enqueue: func() {}}
	for _, o := range opts {
		o(s)
	}
	return s
}

const orderCols = `id, customer_id, COALESCE(idempotency_key, ''), status, cancel_reason, cancel_detail,
	total_cents, currency, version, created_at, updated_at`

var errExists = errors.New("idempotency key exists")

// Create implements app.Orders.
func (s *Store) Create(ctx context.Context, o domain.Order, leaseUntil time.Time) (domain.Order, bool, error) {
	var key any
	if o.IdempotencyKey != "" {
		key = o.IdempotencyKey
	}
	var err error
	if s.d == sqldb.Postgres {
		err = s.createPG(ctx, o, key, leaseUntil)
	} else {
		err = s.createTx(ctx, o, key, leaseUntil)
	}
	switch {
	case errors.Is(err, errExists):
		if o.IdempotencyKey == "" {
			return domain.Order{}, false, fmt.Errorf("order %s: id already taken", o.ID)
		}
		existing, err := s.byKey(ctx, o.CustomerID, o.IdempotencyKey)
		if err != nil {
			return domain.Order{}, false, err
		}
		return existing, false, nil
	case err != nil:
		return domain.Order{}, false, err
	}
	s.enqueue()
	// What was just written, as a read would return it (times at the stored microsecond precision):
	// no second round trip to read it back.
	o.CreatedAt, o.UpdatedAt = time.UnixMicro(micros(o.CreatedAt)).UTC(), time.UnixMicro(micros(o.UpdatedAt)).UTC()
	return o, true, nil
}

// createTx is Create's writes statement by statement in a transaction (SQLite): errExists when the
// order or its key is taken.
func (s *Store) createTx(ctx context.Context, o domain.Order, key any, leaseUntil time.Time) error {
	return sqldb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO orders (id, customer_id, idempotency_key, status,
			cancel_reason, cancel_detail, total_cents, currency, version, created_at, updated_at, lease_until,
			compensation_pending) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
			o.ID, o.CustomerID, key, string(o.Status), string(o.CancelReason), o.CancelDetail, o.TotalCents,
			o.Currency, o.Version, micros(o.CreatedAt), micros(o.UpdatedAt), micros(leaseUntil), false)
		if err != nil {
			return fmt.Errorf("insert order: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("insert order: %w", err)
		} else if n == 0 {
			return errExists
		}
		for i, l := range o.Lines {
			if _, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO order_lines (order_id, line_no, sku, quantity,
				unit_price_cents, line_total_cents) VALUES (?, ?, ?, ?, ?, ?)`),
				o.ID, i, l.SKU, l.Quantity, l.UnitPriceCents, l.LineTotalCents); err != nil {
				return fmt.Errorf("insert line %d: %w", i, err)
			}
		}
		return s.writeEvents(ctx, tx, o)
	})
}

// Get implements app.Orders.
func (s *Store) Get(ctx context.Context, id string) (domain.Order, error) {
	return s.one(ctx, `SELECT `+orderCols+` FROM orders WHERE id = ?`, id)
}

func (s *Store) byKey(ctx context.Context, customerID, key string) (domain.Order, error) {
	return s.one(ctx, `SELECT `+orderCols+` FROM orders WHERE customer_id = ? AND idempotency_key = ?`, customerID, key)
}

func (s *Store) one(ctx context.Context, query string, args ...any) (domain.Order, error) {
	o, err := scanOrder(s.db.QueryRowContext(ctx, s.d.Rebind(query), args...))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Order{}, domain.ErrNotFound
	}
	if err != nil {
		return domain.Order{}, fmt.Errorf("read order: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(`SELECT sku, quantity, unit_price_cents, line_total_cents
		FROM order_lines WHERE order_id = ? ORDER BY line_no`), o.ID)
	if err != nil {
		return domain.Order{}, fmt.Errorf("read lines of %s: %w", o.ID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var l domain.Line
		if err := rows.Scan(&l.SKU, &l.Quantity, &l.UnitPriceCents, &l.LineTotalCents); err != nil {
			return domain.Order{}, fmt.Errorf("read lines of %s: %w", o.ID, err)
		}
		o.Lines = append(o.Lines, l)
	}
	if err := rows.Err(); err != nil {
		return domain.Order{}, fmt.Errorf("read lines of %s: %w", o.ID, err)
	}
	return o, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanOrder(r scanner) (domain.Order, error) {
	var (
		o                  domain.Order
		status, reason     string
		created, updatedAt int64
	)
	if err := r.Scan(&o.ID, &o.CustomerID, &o.IdempotencyKey, &status, &reason, &o.CancelDetail,
		&o.TotalCents, &o.Currency, &o.Version, &created, &updatedAt); err != nil {
		return domain.Order{}, err
	}
	o.Status, o.CancelReason = domain.Status(status), domain.CancelReason(reason)
	o.CreatedAt, o.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updatedAt).UTC()
	return o, nil
}

// Update implements app.Orders. The follow-up bookkeeping rides in the same UPDATE: no extra statement
// on the saga's path.
func (s *Store) Update(ctx context.Context, next domain.Order, due time.Time) error {
	compensate := !due.IsZero() && next.Status == domain.Cancelled
	settle := !due.IsZero() && next.Status == domain.Confirmed
	dueAt := int64(0)
	if !due.IsZero() {
		dueAt = micros(due)
	}
	var err error
	if s.d == sqldb.Postgres {
		err = s.updatePG(ctx, next, compensate, settle, dueAt)
	} else {
		err = s.updateTx(ctx, next, compensate, settle, dueAt)
	}
	if err != nil {
		return err
	}
	s.enqueue()
	return nil
}

// updateTx is Update's writes statement by statement in a transaction (SQLite).
func (s *Store) updateTx(ctx context.Context, next domain.Order, compensate, settle bool, dueAt int64) error {
	return sqldb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.Rebind(`UPDATE orders SET status = ?, cancel_reason = ?,
			cancel_detail = ?, total_cents = ?, currency = ?, version = ?, updated_at = ?,
			compensation_pending = ?, comp_next_at = ?, settle_pending = ?, settle_next_at = ?
			WHERE id = ? AND version = ? AND status = ?`),
			string(next.Status), string(next.CancelReason), next.CancelDetail, next.TotalCents, next.Currency,
			next.Version, micros(next.UpdatedAt), compensate, dueAt, settle, dueAt,
			next.ID, next.Version-1, string(domain.Pending))
		if err != nil {
			return fmt.Errorf("update order %s: %w", next.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("update order %s: %w", next.ID, err)
		} else if n == 0 {
			var one int
			err := tx.QueryRowContext(ctx, s.d.Rebind(`SELECT 1 FROM orders WHERE id = ?`), next.ID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return domain.ErrNotFound
			}
			if err != nil {
				return fmt.Errorf("update order %s: %w", next.ID, err)
			}
			return domain.ErrVersionConflict
		}
		for i, l := range next.Lines {
			if _, err := tx.ExecContext(ctx, s.d.Rebind(`UPDATE order_lines SET unit_price_cents = ?,
				line_total_cents = ? WHERE order_id = ? AND line_no = ?`),
				l.UnitPriceCents, l.LineTotalCents, next.ID, i); err != nil {
				return fmt.Errorf("update line %d of %s: %w", i, next.ID, err)
			}
		}
		return s.writeEvents(ctx, tx, next)
	})
}

// afterLock is the condition on the outbox rows of createOne and updateOne: written only when the
// order's INSERT or UPDATE (CTE o) wrote a row, and numbered (seq) only after it took the order's row
// lock, so one order's events keep their commit order (outbox.Rows.InsertSQL).
const afterLock = "EXISTS (SELECT 1 FROM o)"

// createOne is Create on PostgreSQL in one statement: the order (the idempotency check: a conflict
// writes nothing), its lines ($14–$17: SKUs, quantities, unit prices, line totals in line order) and
// its event (the outbox INSERT, $18–$23, appended by createPG). It returns 1 when it wrote the order,
// 0 on a conflict; the lines and the event are written only with the order.
const createOne = `WITH o AS (
	INSERT INTO orders (id, customer_id, idempotency_key, status, cancel_reason, cancel_detail, total_cents, currency,
		version, created_at, updated_at, lease_until, compensation_pending)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING RETURNING id
), l AS (
	INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents, line_total_cents)
	SELECT o.id, (l.n - 1)::int, l.sku, l.qty, l.price, l.total
	FROM o CROSS JOIN unnest($14::text[], $15::bigint[], $16::bigint[], $17::bigint[]) WITH ORDINALITY AS l(sku, qty, price, total, n)
), ev AS (
	`

// createPG runs createOne in autocommit (one statement, one transaction): errExists when the order or
// its key is taken.
func (s *Store) createPG(ctx context.Context, o domain.Order, key any, leaseUntil time.Time) error {
	rows, err := s.prepareEvents(ctx, o)
	if err != nil {
		return err
	}
	ins, evArgs := rows.InsertSQL(18, afterLock)
	skus, qtys, prices, totals := lineArrays(o.Lines)
	args := append([]any{o.ID, o.CustomerID, key, string(o.Status), string(o.CancelReason),
		o.CancelDetail, o.TotalCents, o.Currency, o.Version, micros(o.CreatedAt), micros(o.UpdatedAt), micros(leaseUntil), false,
		skus, qtys, prices, totals}, evArgs...)
	var n int64
	if err := s.db.QueryRowContext(ctx, createOne+ins+"\n)\nSELECT count(*) FROM o", args...).Scan(&n); err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	if n == 0 {
		return errExists
	}
	return nil
}

// updateOne is Update on PostgreSQL in one statement: the order update guarded by version and status
// ($16, PENDING), its lines' prices ($14, $15: unit prices and line totals in line order) and its
// event (the outbox INSERT, $17–$22, appended by updatePG); the lines and the event are written only
// with the order. Its result tells the three outcomes apart in the same statement: 1 updated, 0 the
// order exists but the guard did not match (a lost race), -1 no such order. The existence probe runs
// only when the UPDATE matched nothing (CASE evaluates lazily) and reads the statement's snapshot —
// orders are never deleted, so an order the caller read is there.
const updateOne = `WITH o AS (
	UPDATE orders SET status = $1, cancel_reason = $2, cancel_detail = $3, total_cents = $4, currency = $5, version = $6,
		updated_at = $7, compensation_pending = $8, comp_next_at = $9, settle_pending = $10, settle_next_at = $11
	WHERE id = $12 AND version = $13 AND status = $16 RETURNING id
), l AS (
	UPDATE order_lines ol SET unit_price_cents = v.price, line_total_cents = v.total
	FROM o CROSS JOIN unnest($14::bigint[], $15::bigint[]) WITH ORDINALITY AS v(price, total, n)
	WHERE ol.order_id = o.id AND ol.line_no = v.n - 1
), ev AS (
	`

const updateOneResult = `
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM o) THEN 1 WHEN EXISTS (SELECT 1 FROM orders WHERE id = $12) THEN 0 ELSE -1 END`

// updatePG runs updateOne in autocommit (one statement, one transaction).
func (s *Store) updatePG(ctx context.Context, next domain.Order, compensate, settle bool, dueAt int64) error {
	rows, err := s.prepareEvents(ctx, next)
	if err != nil {
		return err
	}
	ins, evArgs := rows.InsertSQL(17, afterLock)
	_, _, prices, totals := lineArrays(next.Lines)
	args := append([]any{string(next.Status), string(next.CancelReason), next.CancelDetail,
		next.TotalCents, next.Currency, next.Version, micros(next.UpdatedAt), compensate, dueAt, settle, dueAt,
		next.ID, next.Version - 1, prices, totals, string(domain.Pending)}, evArgs...)
	var n int64
	if err := s.db.QueryRowContext(ctx, updateOne+ins+updateOneResult, args...).Scan(&n); err != nil {
		return fmt.Errorf("update order %s: %w", next.ID, err)
	}
	switch n {
	case 1:
		return nil
	case 0:
		return domain.ErrVersionConflict
	default:
		return domain.ErrNotFound
	}
}

func lineArrays(lines []domain.Line) (skus []string, qtys, prices, totals []int64) {
	for _, l := range lines {
		skus = append(skus, l.SKU)
		qtys = append(qtys, int64(l.Quantity))
		prices = append(prices, l.UnitPriceCents)
		totals = append(totals, l.LineTotalCents)
	}
	return skus, qtys, prices, totals
}

// prepareEvents is writeEvents' row for a PostgreSQL statement to write (outbox.Rows.InsertSQL).
func (s *Store) prepareEvents(ctx context.Context, o domain.Order) (outbox.Rows, error) {
	m, err := events.Message(o)
	if err != nil {
		return outbox.Rows{}, err
	}
	return s.outbox.Prepare(ctx, m)
}

// writeEvents writes the event announcing o's new state: one outbox row, which the relay sends to
// Kafka and copies to the order's status subject (events.Brokers).
func (s *Store) writeEvents(ctx context.Context, tx *sql.Tx, o domain.Order) error {
	m, err := events.Message(o)
	if err != nil {
		return err
	}
	_, err = s.outbox.EnqueueAll(ctx, tx, m)
	return err
}

// ClaimStale implements app.Orders. On PostgreSQL, SKIP LOCKED lets instances claim disjoint orders at
// once; SQLite has a single writer, so the UPDATE is atomic anyway. The claim is one statement, so it
// runs in autocommit (no BEGIN/COMMIT).
func (s *Store) ClaimStale(ctx context.Context, now, leaseUntil time.Time, limit int) ([]domain.Order, error) {
	lock := ""
	if s.d.SkipLocked() {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	ids, err := s.claimStaleIDs(ctx, lock, now, leaseUntil, limit)
	if err != nil {
		return nil, err
	}
	return s.many(ctx, ids)
}

func (s *Store) claimStaleIDs(ctx context.Context, lock string, now, leaseUntil time.Time, limit int) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(`UPDATE orders SET lease_until = ?
		WHERE id IN (SELECT id FROM orders WHERE status = ? AND lease_until <= ?
			ORDER BY lease_until LIMIT ?`+lock+`)
		AND status = ? AND lease_until <= ?
		RETURNING id`),
		micros(leaseUntil), string(domain.Pending), micros(now), limit, string(domain.Pending), micros(now))
	if err != nil {
		return nil, fmt.Errorf("claim stale orders: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("claim stale orders: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim stale orders: %w", err)
	}
	return ids, nil
}

// followupCols are the columns of one kind of follow-up work. Names come from this table only, never
// from input.
type followupCols struct {
	status                       domain.Status
	pending, attempts, next, err string
	done                         string // extra assignment when done ("" or "col = ?" taking the time)
}

var followups = map[app.FollowupKind]followupCols{
	app.Compensation: {status: domain.Cancelled, pending: "compensation_pending", attempts: "comp_attempts",
		next: "comp_next_at", err: "comp_error"},
	app.Settlement: {status: domain.Confirmed, pending: "settle_pending", attempts: "settle_attempts",
		next: "settle_next_at", err: "settle_error", done: "settled_at = ?"},
}

func followupOf(kind app.FollowupKind) (followupCols, error) {
	c, ok := followups[kind]
	if !ok {
		return followupCols{}, fmt.Errorf("unknown follow-up kind %q", kind)
	}
	return c, nil
}

// ClaimFollowups implements app.Orders like ClaimStale: the claim moves the next attempt to leaseUntil,
// so other instances skip the row until then (SKIP LOCKED on PostgreSQL). The inner query reads the
// partial index of pending rows only: its bare "pending AND ..." condition matches the index's
// predicate (SQLite needs that to use it), and it does not filter on status, which would tempt the
// planners into the status index (every confirmed order). The status is checked per claimed row. The
// claim is one statement, so it runs in autocommit (no BEGIN/COMMIT).
func (s *Store) ClaimFollowups(ctx context.Context, kind app.FollowupKind, now, leaseUntil time.Time, limit int) ([]app.Followup, error) {
	c, err := followupOf(kind)
	if err != nil {
		return nil, err
	}
	lock := ""
	if s.d.SkipLocked() {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(`UPDATE orders SET `+c.next+` = ?
		WHERE id IN (SELECT id FROM orders WHERE `+c.pending+` AND `+c.next+` <= ?
			ORDER BY `+c.next+` LIMIT ?`+lock+`)
		AND `+c.pending+` AND `+c.next+` <= ? AND status = ?
		RETURNING id, customer_id, status, `+c.attempts+`, `+c.err),
		micros(leaseUntil), micros(now), limit, micros(now), string(c.status))
	if err != nil {
		return nil, fmt.Errorf("claim %ss: %w", kind, err)
	}
	defer rows.Close()
	var got []app.Followup
	for rows.Next() {
		var (
			f      app.Followup
			status string
		)
		if err := rows.Scan(&f.OrderID, &f.CustomerID, &status, &f.Attempts, &f.LastError); err != nil {
			return nil, fmt.Errorf("claim %ss: %w", kind, err)
		}
		f.Status = domain.Status(status)
		got = append(got, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim %ss: %w", kind, err)
	}
	return got, nil
}

// FollowupDone implements app.Orders. It touches bookkeeping only: status, version and the
// client-visible order stay as they are.
func (s *Store) FollowupDone(ctx context.Context, kind app.FollowupKind, id string, at time.Time) error {
	c, err := followupOf(kind)
	if err != nil {
		return err
	}
	set, args := c.pending+" = ?, "+c.err+" = ?", []any{false, ""}
	if c.done != "" {
		set, args = set+", "+c.done, append(args, micros(at))
	}
	if _, err := s.db.ExecContext(ctx, s.d.Rebind(`UPDATE orders SET `+set+` WHERE id = ?`), append(args, id)...); err != nil {
		return fmt.Errorf("%s done %s: %w", kind, id, err)
	}
	return nil
}

// maxErrorLen bounds the stored last error.
const maxErrorLen = 500

// FollowupFailed implements app.Orders.
func (s *Store) FollowupFailed(ctx context.Context, kind app.FollowupKind, id string, next time.Time, cause string) error {
	c, err := followupOf(kind)
	if err != nil {
		return err
	}
	if len(cause) > maxErrorLen {
		cause = cause[:maxErrorLen]
	}
	if _, err := s.db.ExecContext(ctx, s.d.Rebind(`UPDATE orders SET `+c.attempts+` = `+c.attempts+` + 1,
		`+c.next+` = ?, `+c.err+` = ? WHERE id = ? AND `+c.pending),
		micros(next), strings.ToValidUTF8(cause, "?"), id); err != nil {
		return fmt.Errorf("%s failed %s: %w", kind, id, err)
	}
	return nil
}

// FollowupBacklog implements app.Orders: it reads the pending rows only (the partial index).
func (s *Store) FollowupBacklog(ctx context.Context, kind app.FollowupKind, changedBefore time.Time, minAttempts int) (int, error) {
	c, err := followupOf(kind)
	if err != nil {
		return 0, err
	}
	if minAttempts <= 0 {
		minAttempts = math.MaxInt32
	}
	var n int
	if err := s.db.QueryRowContext(ctx, s.d.Rebind(`SELECT count(*) FROM orders WHERE `+c.pending+` AND `+c.next+` >= 0
		AND (updated_at < ? OR `+c.attempts+` >= ?)`), micros(changedBefore), minAttempts).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s backlog: %w", kind, err)
	}
	return n, nil
}

func (s *Store) many(ctx context.Context, ids []string) ([]domain.Order, error) {
	out := make([]domain.Order, 0, len(ids))
	for _, id := range ids {
		o, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

func micros(t time.Time) int64 { return t.UnixMicro() }
