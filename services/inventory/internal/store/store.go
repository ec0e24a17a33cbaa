// Package store keeps products, reservations and the identities of applied import lines in SQL (SQLite
// or PostgreSQL through one code path) and writes a StockChanged event for every stock change in the
// same transaction.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// EventWriter records stock changes in the transaction that made them (the outbox).
type EventWriter interface {
	WriteStockChanges(ctx context.Context, tx *sql.Tx, changes []domain.StockChange) error
	// StockChangesInsert is WriteStockChanges as a statement (PostgreSQL only), for a transaction
	// that sends it with its COMMIT in one round trip; an empty query when there is nothing to write.
	StockChangesInsert(ctx context.Context, changes []domain.StockChange) (query string, args []any, err error)
}

// Store is the inventory's database.
type Store struct {
	db          *sql.DB
	d           sqldb.Dialect
	events      EventWriter
	afterCommit func()
	now         func() time.Time
}

// The ports of the application the store implements.
var (
	_ app.Stock        = (*Store)(nil)
	_ app.EventEffects = (*Store)(nil)
)

// Option customizes New.
type Option func(*Store)

// WithAfterCommit is called after every committed transaction that wrote events (e.g. Relay.Notify).
func WithAfterCommit(f func()) Option { return func(s *Store) { s.afterCommit = f } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns a store on db, whose migrations must have been applied.
func New(db *sql.DB, d sqldb.Dialect, events EventWriter, opts ...Option) *Store {
	s := &Store{db: db, d: d, events: events, afterCommit: func() {}, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := sqldb.InTx(ctx, s.db, fn); err != nil {
		return err
	}
	s.afterCommit()
	return nil
}

func (s *Store) utcNow() time.Time { return s.now().UTC() }

const productCols = "sku, name, price_cents, currency, on_hand, reserved, version, updated_at"

type rowScanner interface{ Scan(dest ...any) error }

func scanProduct(r rowScanner) (domain.Product, error) {
	var p domain.Product
	err := r.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency, &p.OnHand, &p.Reserved, &p.Version, &p.UpdatedAt)
	p.UpdatedAt = p.UpdatedAt.UTC()
	return p, err
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) product(ctx context.Context, q queryer, sku string) (domain.Product, error) {
	p, err := scanProduct(q.QueryRowContext(ctx, s.d.Rebind("SELECT "+productCols+" FROM products WHERE sku = ?"), sku))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Product{}, &domain.StockError{SKU: sku, Err: domain.ErrUnknownProduct}
	}
	if err != nil {
		return domain.Product{}, fmt.Errorf("product %s: %w", sku, err)
	}
	return p, nil
}

// Product returns one product.
func (s *Store) Product(ctx context.Context, sku string) (domain.Product, error) {
	return s.product(ctx, s.db, sku)
}

// Products returns up to limit products with a SKU after afterSKU, in SKU order.
func (s *Store) Products(ctx context.Context, afterSKU string, limit int) ([]domain.Product, error) {
	rows, err := s.db.QueryContext(ctx,
		s.d.Rebind("SELECT "+productCols+" FROM products WHERE sku > ? ORDER BY sku LIMIT ?"), afterSKU, limit)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return collect(rows)
}

// ProductsBySKU returns the named products that exist, in SKU order; all of them when skus is empty.
func (s *Store) ProductsBySKU(ctx context.Context, skus []string) ([]domain.Product, error) {
	if len(skus) == 0 {
		rows, err := s.db.QueryContext(ctx, "SELECT "+productCols+" FROM products ORDER BY sku")
		if err != nil {
			return nil, fmt.Errorf("products: %w", err)
		}
		return collect(rows)
	}
	args := make([]any, len(skus))
	for i, sku := range skus {
		args[i] = sku
	}
	q := "SELECT " + productCols + " FROM products WHERE sku IN (?" + strings.Repeat(", ?", len(skus)-1) + ") ORDER BY sku"
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("products: %w", err)
	}
	return collect(rows)
}

func collect(rows *sql.Rows) ([]domain.Product, error) {
	defer rows.Close()
	var out []domain.Product
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, fmt.Errorf("scan product: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("products: %w", err)
	}
	return out, nil
}

// Seed inserts the products that do not exist yet, each with an IMPORTED event for its initial stock,
// and returns how many it inserted. Existing SKUs are left alone, so a restart never adds stock.
func (s *Store) Seed(ctx context.Context, products []domain.Product) (int, error) {
	inserted := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := s.utcNow()
		var changes []domain.StockChange
		q := s.d.Rebind(`INSERT INTO products (` + productCols + `) VALUES (?, ?, ?, ?, ?, 0, 1, ?)
			ON CONFLICT (sku) DO NOTHING`)
		for _, p := range products {
			res, err := tx.ExecContext(ctx, q, p.SKU, p.Name, p.PriceCents, p.Currency, p.OnHand, now)
			if err != nil {
				return fmt.Errorf("seed %s: %w", p.SKU, err)
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				continue
			}
			inserted++
			changes = append(changes, domain.StockChange{
				Level: domain.StockLevel{SKU: p.SKU, OnHand: p.OnHand, Version: 1, UpdatedAt: now},
				Delta: p.OnHand, Cause: domain.CauseImported,
			})
		}
		return s.events.WriteStockChanges(ctx, tx, changes)
	})
	if err != nil {
		return 0, fmt.Errorf("seed: %w", err)
	}
	return inserted, nil
}

// Import applies one import line in its own transaction: it adds the units, renames or reprices an
// existing SKU when asked, and creates an unknown one (which then needs name and price). The line's
// (import_id, seq) is recorded in the same transaction, so a line sent again — by a retry, a resend or a
// concurrent duplicate on another instance — is skipped (ImportResult.Skipped) and changes nothing. A
// line refused for the stock state (a new SKU without name and price) is recorded as refused, and its
// resends get the same refusal. A key reused for a line with other content is refused on field seq.
func (s *Store) Import(ctx context.Context, line domain.ImportLine) (domain.ImportResult, error) {
	if err := line.Validate(); err != nil {
		return domain.ImportResult{}, err
	}
	var (
		res     domain.ImportResult
		refused error
	)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := s.utcNow()
		fp := line.Fingerprint()
		// The insert is the check: a line seen before conflicts (on PostgreSQL after waiting for a
		// concurrent transaction holding the same key to end).
		ins, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO import_lines
				(import_id, seq, sku, quantity, fingerprint, outcome, created_at) VALUES (?, ?, ?, ?, ?, 'APPLIED', ?)
			ON CONFLICT (import_id, seq) DO NOTHING`), line.ImportID, line.Seq, line.SKU, line.Quantity, fp, now)
		if err != nil {
			return fmt.Errorf("record line: %w", err)
		}
		if n, err := ins.RowsAffected(); err != nil {
			return fmt.Errorf("record line: %w", err)
		} else if n == 0 {
			res.Skipped, refused, err = s.seenLine(ctx, tx, line, fp)
			return err
		}
		p, err := s.applyImport(ctx, tx, line, now)
		var ie *domain.InvalidError
		if errors.As(err, &ie) {
			refused = ie
			_, err = tx.ExecContext(ctx, s.d.Rebind(`UPDATE import_lines SET outcome = 'REJECTED', reject_field = ?,
				reject_reason = ? WHERE import_id = ? AND seq = ?`), ie.Field, ie.Reason, line.ImportID, line.Seq)
			if err != nil {
				return fmt.Errorf("record refusal: %w", err)
			}
			return nil
		}
		res.Product = p
		return err
	})
	if err != nil {
		return domain.ImportResult{}, fmt.Errorf("import %s line %d (%s): %w", line.ImportID, line.Seq, line.SKU, err)
	}
	if refused != nil {
		return domain.ImportResult{}, refused
	}
	return res, nil
}

// seenLine reads how the earlier copy of a line ended: applied (skipped now), refused (refused again,
// for the same reason), or a different line under the same key (refused).
func (s *Store) seenLine(ctx context.Context, tx *sql.Tx, line domain.ImportLine, fp string) (skipped bool, refused error, err error) {
	var prevFP, outcome, field, reason string
	err = tx.QueryRowContext(ctx, s.d.Rebind(`SELECT fingerprint, outcome, reject_field, reject_reason
		FROM import_lines WHERE import_id = ? AND seq = ?`), line.ImportID, line.Seq).Scan(&prevFP, &outcome, &field, &reason)
	switch {
	case err != nil:
		return false, nil, fmt.Errorf("read recorded line: %w", err)
	case prevFP != fp:
		return false, &domain.InvalidError{Field: "seq", Reason: domain.ImportReused}, nil
	case outcome == "REJECTED":
		return false, &domain.InvalidError{Field: field, Reason: reason}, nil
	}
	return true, nil, nil
}

// applyImport changes the product and writes its event.
func (s *Store) applyImport(ctx context.Context, tx *sql.Tx, line domain.ImportLine, now time.Time) (domain.Product, error) {
	var p domain.Product
	row := tx.QueryRowContext(ctx, s.d.Rebind(`UPDATE products SET on_hand = on_hand + ?,
			name = COALESCE(?, name), price_cents = COALESCE(?, price_cents), currency = COALESCE(?, currency),
			version = version + 1, updated_at = ?
		WHERE sku = ? RETURNING sku, name, price_cents, currency, on_hand, reserved, version`),
		line.Quantity, line.Name, line.PriceCents, line.Currency, now, line.SKU)
	err := row.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency, &p.OnHand, &p.Reserved, &p.Version)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if p, err = line.NewProduct(now); err != nil {
			return domain.Product{}, err
		}
		if _, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO products (`+productCols+`)
			VALUES (?, ?, ?, ?, ?, 0, 1, ?)`), p.SKU, p.Name, p.PriceCents, p.Currency, p.OnHand, now); err != nil {
			return domain.Product{}, fmt.Errorf("insert %s: %w", p.SKU, err)
		}
	case err != nil:
		return domain.Product{}, fmt.Errorf("update %s: %w", line.SKU, err)
	}
	p.UpdatedAt = now
	err = s.events.WriteStockChanges(ctx, tx, []domain.StockChange{{
		Level: p.Level(), Delta: line.Quantity, Cause: domain.CauseImported,
	}})
	return p, err
}

// CommitOnce commits the order's reservation as the effect of event eventID, recorded in the inbox of
// consumer in the same transaction: a redelivered event changes nothing and returns
// inbox.ErrAlreadyProcessed. An effect that fails records nothing.
//
// On PostgreSQL the inbox record is part of the settling statement (settleOne): one transaction of
// two statements, the settlement and its events, in two round trips (commitPG).
func (s *Store) CommitOnce(ctx context.Context, consumer, eventID, orderID string) error {
	if s.d != sqldb.Postgres {
		return s.once(ctx, consumer, eventID, func(tx *sql.Tx) error {
			_, err := s.commitTx(ctx, tx, orderID, inboxRecord{})
			return err
		})
	}
	ib := inboxRecord{consumer: consumer, eventID: eventID}
	if err := ib.check(); err != nil {
		return err
	}
	if _, done, err := s.commitPG(ctx, orderID, ib); err != nil || done {
		if err == nil {
			s.afterCommit()
		}
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := s.commitTx(ctx, tx, orderID, ib)
		return err
	})
}

// ReleaseOnce is CommitOnce for releasing. On PostgreSQL a first statement outside any transaction
// answers an OrderCancelled whose stock is released already (the order service releases before it
// cancels, when it can), or that finds no reservation (it leaves the tombstone), and records it in the
// inbox; only a HELD reservation is settled in a transaction, pipelined (releasePG).
func (s *Store) ReleaseOnce(ctx context.Context, consumer, eventID, orderID string) error {
	if s.d != sqldb.Postgres {
		return s.once(ctx, consumer, eventID, func(tx *sql.Tx) error {
			_, err := s.releaseTx(ctx, tx, orderID, inboxRecord{})
			return err
		})
	}
	ib := inboxRecord{consumer: consumer, eventID: eventID}
	if err := ib.check(); err != nil {
		return err
	}
	if _, done, err := s.peekPG(ctx, orderID, domain.StatusReleased, domain.Status.Release, ib, true); done {
		return err
	}
	if _, done, err := s.releasePG(ctx, orderID, ib); err != nil || done {
		if err == nil {
			s.afterCommit()
		}
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := s.releaseTx(ctx, tx, orderID, ib)
		return err
	})
}

func (s *Store) once(ctx context.Context, consumer, eventID string, effect func(tx *sql.Tx) error) error {
	err := inbox.Process(ctx, s.db, consumer, eventID, effect)
	if err != nil {
		return err
	}
	s.afterCommit()
	return nil
}
