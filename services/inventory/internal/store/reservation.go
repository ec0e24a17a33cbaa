package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// Reserve holds stock for every item of an order, all or none, and prices the lines at today's prices.
// A repeated call for the same order returns the stored reservation, whatever its status, so a saga can
// retry; a repeat asking for other items fails with ErrReservationMismatch. An order released before it
// was reserved (a tombstone) fails with ErrReservationReleased and holds nothing.
func (s *Store) Reserve(ctx context.Context, orderID string, items []domain.Item) (domain.Reservation, error) {
	if err := domain.ValidateReservation(orderID, items); err != nil {
		return domain.Reservation{}, err
	}
	var (
		res     domain.Reservation
		written bool
		err     error
	)
	if s.d == sqldb.Postgres {
		res, written, err = s.reservePG(ctx, orderID, items)
	} else {
		res, written, err = s.reserveTx(ctx, orderID, items)
	}
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("reserve %s: %w", orderID, err)
	}
	switch {
	case written:
		s.afterCommit()
	case res.Tombstone():
		return domain.Reservation{}, fmt.Errorf("reserve %s: released before it was reserved: %w", orderID, domain.ErrReservationReleased)
	case !res.SameItems(items):
		return domain.Reservation{}, fmt.Errorf("reserve %s: %w", orderID, domain.ErrReservationMismatch)
	}
	return res, nil
}

// reserveTx is Reserve on SQLite: written says it wrote the reservation, rather than found one.
func (s *Store) reserveTx(ctx context.Context, orderID string, items []domain.Item) (res domain.Reservation, written bool, err error) {
	err = sqldbInTx(ctx, s, func(tx *sql.Tx) error {
		now := s.utcNow()
		// The insert is the existence check too (one round trip on the common, first-time path): a retry,
		// a tombstone or a concurrent reservation of the same order conflicts, and the stored reservation
		// is returned.
		ins, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO reservations
				(order_id, status, currency, total_cents, created_at, updated_at) VALUES (?, ?, '', 0, ?, ?)
			ON CONFLICT (order_id) DO NOTHING`), orderID, string(domain.StatusHeld), now, now)
		if err != nil {
			return fmt.Errorf("insert reservation: %w", err)
		}
		if n, err := ins.RowsAffected(); err != nil {
			return fmt.Errorf("insert reservation: %w", err)
		} else if n == 0 {
			res, err = s.reservation(ctx, tx, orderID)
			return err
		}

		type priced struct {
			price    int64
			currency string
		}
		prices := map[string]priced{}
		changes := make([]domain.StockChange, 0, len(items))
		hold := s.d.Rebind(`UPDATE products SET reserved = reserved + ?, version = version + 1, updated_at = ?
			WHERE sku = ? AND on_hand - reserved >= ?
			RETURNING price_cents, currency, on_hand, reserved, version`)
		for _, need := range domain.Needs(items) {
			var (
				pr  priced
				lvl = domain.StockLevel{SKU: need.SKU, UpdatedAt: now}
			)
			err := tx.QueryRowContext(ctx, hold, need.Quantity, now, need.SKU, need.Quantity).
				Scan(&pr.price, &pr.currency, &lvl.OnHand, &lvl.Reserved, &lvl.Version)
			if errors.Is(err, sql.ErrNoRows) {
				p, perr := s.product(ctx, tx, need.SKU)
				if perr != nil {
					return perr
				}
				return &domain.StockError{SKU: need.SKU, Requested: need.Quantity, Available: p.Available(), Err: domain.ErrOutOfStock}
			}
			if err != nil {
				return fmt.Errorf("hold %s: %w", need.SKU, err)
			}
			prices[need.SKU] = pr
			changes = append(changes, domain.StockChange{Level: lvl, Delta: -need.Quantity, Cause: domain.CauseReserved, OrderID: orderID})
		}

		res = domain.Reservation{OrderID: orderID, Status: domain.StatusHeld, CreatedAt: now, UpdatedAt: now}
		line := s.d.Rebind(`INSERT INTO reservation_lines (order_id, line_no, sku, quantity, unit_price_cents)
			VALUES (?, ?, ?, ?, ?)`)
		for i, it := range items {
			pr := prices[it.SKU]
			if res.Currency == "" {
				res.Currency = pr.currency
			} else if res.Currency != pr.currency {
				return domain.ErrMixedCurrency
			}
			l := domain.Line{SKU: it.SKU, Quantity: it.Quantity, UnitPriceCents: pr.price}
			if _, err := tx.ExecContext(ctx, line, orderID, i+1, l.SKU, l.Quantity, l.UnitPriceCents); err != nil {
				return fmt.Errorf("insert line: %w", err)
			}
			res.Lines = append(res.Lines, l)
		}
		if _, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE reservations SET currency = ?, total_cents = ? WHERE order_id = ?"),
			res.Currency, res.Total(), orderID); err != nil {
			return fmt.Errorf("price reservation: %w", err)
		}
		written = true
		return s.events.WriteStockChanges(ctx, tx, changes)
	})
	return res, written, err
}

// sqldbInTx runs fn in a transaction without the after-commit hook, for callers that decide themselves.
func sqldbInTx(ctx context.Context, s *Store, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Reservation returns an order's reservation.
func (s *Store) Reservation(ctx context.Context, orderID string) (domain.Reservation, error) {
	return s.reservation(ctx, s.db, orderID)
}

func (s *Store) reservation(ctx context.Context, q queryer, orderID string) (domain.Reservation, error) {
	r, err := scanReservation(orderID, q.QueryRowContext(ctx, s.d.Rebind(reservationQuery), orderID))
	if err != nil {
		return domain.Reservation{}, err
	}
	rows, err := q.QueryContext(ctx, s.d.Rebind(linesQuery), orderID) //nolint:rowserrcheck // scanLines checks rows.Err
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("reservation lines: %w", err)
	}
	defer rows.Close()
	return scanLines(r, rows)
}

// A reservation is read in two queries, the reservation and its lines, in line order.
const (
	reservationQuery = "SELECT status, currency, created_at, updated_at FROM reservations WHERE order_id = ?"
	linesQuery       = "SELECT sku, quantity, unit_price_cents FROM reservation_lines WHERE order_id = ? ORDER BY line_no"
)

// scanReservation reads reservationQuery's row (database/sql's or pgx's).
func scanReservation(orderID string, row rowScanner) (domain.Reservation, error) {
	r := domain.Reservation{OrderID: orderID}
	var status string
	err := row.Scan(&status, &r.Currency, &r.CreatedAt, &r.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) { // pgx.ErrNoRows is sql.ErrNoRows too
		return domain.Reservation{}, domain.ErrReservationNotFound
	}
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("reservation: %w", err)
	}
	r.Status = domain.Status(status)
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return r, nil
}

// lineRows is what scanLines needs of *sql.Rows or pgx.Rows.
type lineRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanLines adds linesQuery's rows to r.
func scanLines(r domain.Reservation, rows lineRows) (domain.Reservation, error) {
	for rows.Next() {
		var l domain.Line
		if err := rows.Scan(&l.SKU, &l.Quantity, &l.UnitPriceCents); err != nil {
			return domain.Reservation{}, fmt.Errorf("reservation line: %w", err)
		}
		r.Lines = append(r.Lines, l)
	}
	if err := rows.Err(); err != nil {
		return domain.Reservation{}, fmt.Errorf("reservation lines: %w", err)
	}
	return r, nil
}

// Commit turns the order's hold into a sale: on_hand and reserved both drop by the held quantities.
// Committing again returns the committed reservation and moves nothing.
//
// On PostgreSQL a first statement outside any transaction reads the reservation: the settlement's
// repeat (the order service commits every confirmed order again, normally after OrderConfirmed did)
// is answered by it alone, and only a HELD reservation is committed in a transaction (commitPG's).
func (s *Store) Commit(ctx context.Context, orderID string) (domain.Reservation, error) {
	if s.d == sqldb.Postgres {
		r, done, err := s.peekPG(ctx, orderID, domain.StatusCommitted, domain.Status.Commit, inboxRecord{}, false)
		if err != nil {
			return domain.Reservation{}, fmt.Errorf("commit %s: %w", orderID, err)
		}
		if done {
			return r, nil
		}
		if r, done, err = s.commitPG(ctx, orderID, inboxRecord{}); err != nil {
			return domain.Reservation{}, fmt.Errorf("commit %s: %w", orderID, err)
		}
		if done {
			s.afterCommit()
			return r, nil
		}
	}
	var r domain.Reservation
	err := s.inTx(ctx, func(tx *sql.Tx) (err error) {
		r, err = s.commitTx(ctx, tx, orderID, inboxRecord{})
		return err
	})
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("commit %s: %w", orderID, err)
	}
	return r, nil
}

// Release returns the order's held stock to available. Releasing again returns the released reservation
// and moves nothing; releasing a committed one fails with ErrReservationCommitted. Releasing an order
// that has no reservation records a tombstone (a RELEASED reservation without lines, see
// domain.Reservation.Tombstone) and returns it: compensation may overtake the reserve it undoes.
//
// On PostgreSQL a HELD reservation is released in one pipelined transaction (releasePG); when there is
// none, one statement leaves the tombstone (peekPG), and only a race with a concurrent settlement or
// reserve is settled in a transaction of database/sql.
func (s *Store) Release(ctx context.Context, orderID string) (domain.Reservation, error) {
	if s.d == sqldb.Postgres {
		r, done, err := s.releasePG(ctx, orderID, inboxRecord{})
		if err == nil && !done {
			r, done, err = s.peekPG(ctx, orderID, domain.StatusReleased, domain.Status.Release, inboxRecord{}, true)
		}
		if err != nil {
			return domain.Reservation{}, fmt.Errorf("release %s: %w", orderID, err)
		}
		if done {
			s.afterCommit()
			return r, nil
		}
	}
	var r domain.Reservation
	err := s.inTx(ctx, func(tx *sql.Tx) (err error) {
		r, err = s.releaseTx(ctx, tx, orderID, inboxRecord{})
		return err
	})
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("release %s: %w", orderID, err)
	}
	return r, nil
}

// commitTx commits in tx; ib (PostgreSQL only) names the event whose effect this is, recorded in the
// inbox by the settling statement itself.
func (s *Store) commitTx(ctx context.Context, tx *sql.Tx, orderID string, ib inboxRecord) (domain.Reservation, error) {
	return s.settle(ctx, tx, orderID, domain.StatusCommitted, domain.Status.Commit,
		`UPDATE products SET on_hand = on_hand - ?, reserved = reserved - ?, version = version + 1, updated_at = ?
		WHERE sku = ? RETURNING on_hand, reserved, version`, true, domain.CauseCommitted, ib)
}

// releaseTx is commitTx for releasing.
func (s *Store) releaseTx(ctx context.Context, tx *sql.Tx, orderID string, ib inboxRecord) (domain.Reservation, error) {
	release := func(ib inboxRecord) (domain.Reservation, error) {
		return s.settle(ctx, tx, orderID, domain.StatusReleased, domain.Status.Release,
			`UPDATE products SET reserved = reserved - ?, version = version + 1, updated_at = ?
			WHERE sku = ? RETURNING on_hand, reserved, version`, false, domain.CauseReleased, ib)
	}
	r, err := release(ib)
	if !errors.Is(err, domain.ErrReservationNotFound) {
		return r, err
	}
	// No reservation: leave a tombstone under the order's primary key. On PostgreSQL a reserve of the
	// same order still in flight makes this insert wait for it; if it committed, the insert conflicts
	// and the (now visible) reservation is released normally.
	now := s.utcNow()
	ins, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO reservations
			(order_id, status, currency, total_cents, created_at, updated_at) VALUES (?, ?, '', 0, ?, ?)
		ON CONFLICT (order_id) DO NOTHING`), orderID, string(domain.StatusReleased), now, now)
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("insert tombstone: %w", err)
	}
	if n, err := ins.RowsAffected(); err != nil {
		return domain.Reservation{}, fmt.Errorf("insert tombstone: %w", err)
	} else if n == 0 {
		// The event (if any) is recorded already, by the first attempt in this transaction.
		return release(inboxRecord{})
	}
	return domain.Reservation{OrderID: orderID, Status: domain.StatusReleased, CreatedAt: now, UpdatedAt: now}, nil
}

// settle moves a HELD reservation to its terminal status and its stock with it. The status update is
// conditional on HELD, so of two concurrent settlements exactly one moves stock; the others see the
// stored status and the domain decides whether that is an idempotent repeat or an error.
func (s *Store) settle(ctx context.Context, tx *sql.Tx, orderID string, to domain.Status,
	decide func(domain.Status) (domain.Transition, error), move string, twoArgs bool, cause domain.Cause, ib inboxRecord,
) (domain.Reservation, error) {
	now := s.utcNow()
	// On PostgreSQL settleOne is the first attempt: it settles a HELD reservation at once, and
	// otherwise returns the stored one, with which the loop starts (no second read), or
	// ErrReservationNotFound. A reservation its snapshot does not see had not committed when the
	// statement started: a release then leaves a tombstone, whose insert waits for a reserve still in
	// flight and releases what it committed (releaseTx); a commit only ever follows a reservation that
	// committed (the saga confirms after reserving), so not found is final for it.
	var (
		r    domain.Reservation
		seen bool
	)
	if s.d == sqldb.Postgres {
		var moved bool
		var err error
		r, moved, err = s.settlePG(ctx, tx, orderID, to, twoArgs, cause, now, ib)
		if err != nil || moved {
			return r, err
		}
		seen = true
	}
	for attempt := 1; ; attempt++ {
		var n int64
		if !seen || attempt > 1 {
			res, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE reservations SET status = ?, updated_at = ? WHERE order_id = ? AND status = ?"),
				string(to), now, orderID, string(domain.StatusHeld))
			if err != nil {
				return domain.Reservation{}, fmt.Errorf("settle: %w", err)
			}
			if n, err = res.RowsAffected(); err != nil {
				return domain.Reservation{}, fmt.Errorf("settle: %w", err)
			}
			if r, err = s.reservation(ctx, tx, orderID); err != nil {
				return domain.Reservation{}, err
			}
		}
		if n > 0 {
			break
		}
		t, err := decide(r.Status)
		if err != nil {
			return domain.Reservation{}, err
		}
		if t == domain.NoOp {
			return r, nil // an idempotent repeat
		}
		// HELD now, yet the update matched nothing: on PostgreSQL (READ COMMITTED) the reservation
		// committed between the two statements. Update again, with a snapshot that sees it.
		if attempt == 3 {
			return domain.Reservation{}, fmt.Errorf("settle %s: reservation is %s but cannot be updated", orderID, r.Status)
		}
	}
	changes := make([]domain.StockChange, 0, len(r.Lines))
	q := s.d.Rebind(move)
	for _, need := range domain.Needs(r.Items()) {
		args := []any{need.Quantity, now, need.SKU}
		delta := need.Quantity
		if twoArgs {
			args = []any{need.Quantity, need.Quantity, now, need.SKU}
			delta = 0
		}
		lvl := domain.StockLevel{SKU: need.SKU, UpdatedAt: now}
		if err := tx.QueryRowContext(ctx, q, args...).Scan(&lvl.OnHand, &lvl.Reserved, &lvl.Version); err != nil {
			return domain.Reservation{}, fmt.Errorf("move stock %s: %w", need.SKU, err)
		}
		changes = append(changes, domain.StockChange{Level: lvl, Delta: delta, Cause: cause, OrderID: orderID})
	}
	if err := s.events.WriteStockChanges(ctx, tx, changes); err != nil {
		return domain.Reservation{}, err
	}
	return r, nil
}
