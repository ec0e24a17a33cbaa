// Package store keeps accounts, authorizations, the ledger and the outbox in one SQL database —
// PostgreSQL or SQLite through database/sql — so that every state change and its event commit
// together. Queries are written once with ? placeholders and rebound per dialect.
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
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// The ports of the application the store implements.
var (
	_ app.Store = (*Store)(nil)
	_ app.Tx    = (*txView)(nil)
)

// EventWriter records a payment event in the transaction of the change it announces (the outbox), so
// the event is published exactly when the change commits.
type EventWriter interface {
	WriteEvent(ctx context.Context, tx *sql.Tx, e domain.Event) error
}

// maxAttempts bounds the retries of a transaction the database aborted (deadlock, serialization
// failure) or that lost a race to insert the same order.
const maxAttempts = 5

// errRetry aborts a transaction that must run again from the start.
var errRetry = errors.New("store: concurrent change, retry")

// Store is the SQL implementation of app.Store.
type Store struct {
	db          *sql.DB
	dialect     sqldb.Dialect
	writer      EventWriter
	afterCommit func()
	q           queries
}

// Option customizes New.
type Option func(*Store)

// WithAfterCommit makes the store call fn after every committed transaction that wrote events
// (the outbox relay's Notify, so events leave without waiting for its poll).
func WithAfterCommit(fn func()) Option {
	return func(s *Store) {
		if fn != nil {
			s.afterCommit = fn
		}
	}
}

// New returns a store on db, of dialect d, whose schema migrate.UpAll applied (migrations.FS with the
// outbox and inbox schemas); every state change's event is written through events in its transaction.
func New(db *sql.DB, d sqldb.Dialect, events EventWriter, opts ...Option) *Store {
	s := &Store{db: db, dialect: d, writer: events, afterCommit: func() {}, q: newQueries(d)}
	for _, o := range opts {
		o(s)
	}
	return s
}

type queries struct {
	lockOrder, voided, markVoided            string
	authForUpdate, accountForUpdate, account string
	insertAuth, updateAuth, updateAccount    string
	insertEntry, seedPrefix, seedRow         string
}

const (
	authCols    = "order_id, customer_id, amount_cents, currency, status, decline_reason, version, created_at, updated_at"
	accountCols = "customer_id, balance_cents, held_cents, currency"
)

// orderLockClass is the first key of the per-order advisory lock ("pa" for payment authorization).
const orderLockClass = "28769"

func newQueries(d sqldb.Dialect) queries {
	// SQLite has no row locks and needs none: BEGIN IMMEDIATE makes every write transaction exclusive.
	lock := ""
	if d == sqldb.Postgres {
		lock = " FOR UPDATE"
	}
	return queries{
		// PostgreSQL row locks cannot lock a row that does not exist yet, and a void of an unknown order
		// (tombstone) must not interleave with its authorize: both take this per-order transaction lock
		// first. The two-key form keeps it apart from the migration lock's key space.
		lockOrder:        "SELECT pg_advisory_xact_lock(" + orderLockClass + ", hashtext($1))",
		voided:           d.Rebind("SELECT count(*) FROM void_tombstones WHERE order_id = ?"),
		markVoided:       d.Rebind("INSERT INTO void_tombstones (order_id, created_at) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING"),
		authForUpdate:    d.Rebind("SELECT " + authCols + " FROM authorizations WHERE order_id = ?" + lock),
		accountForUpdate: d.Rebind("SELECT " + accountCols + " FROM accounts WHERE customer_id = ?" + lock),
		account:          d.Rebind("SELECT " + accountCols + " FROM accounts WHERE customer_id = ?"),
		insertAuth: d.Rebind("INSERT INTO authorizations (" + authCols + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) " +
			"ON CONFLICT (order_id) DO NOTHING"),
		updateAuth: d.Rebind("UPDATE authorizations SET status = ?, decline_reason = ?, version = ?, updated_at = ? " +
			"WHERE order_id = ? AND version = ?"),
		updateAccount: d.Rebind("UPDATE accounts SET balance_cents = ?, held_cents = ?, updated_at = ? WHERE customer_id = ?"),
		insertEntry: d.Rebind("INSERT INTO ledger_entries (order_id, kind, customer_id, amount_cents, created_at) " +
			"VALUES (?, ?, ?, ?, ?)"),
		seedPrefix: "INSERT INTO accounts (customer_id, balance_cents, held_cents, currency, created_at, updated_at) VALUES ",
		seedRow:    "(?, ?, ?, ?, ?, ?)",
	}
}

// Update implements app.Store.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx app.Tx) error) error {
	return s.retry(ctx, func(v *txView) error {
		return sqldb.InTx(ctx, s.db, func(tx *sql.Tx) error {
			v.tx = tx
			return fn(ctx, v)
		})
	})
}

// ProcessEvent implements app.Store with the platform inbox.
func (s *Store) ProcessEvent(ctx context.Context, consumer, eventID string, fn func(ctx context.Context, tx app.Tx) error) error {
	err := s.retry(ctx, func(v *txView) error {
		return inbox.Process(ctx, s.db, consumer, eventID, func(tx *sql.Tx) error {
			v.tx = tx
			return fn(ctx, v)
		})
	})
	if errors.Is(err, inbox.ErrAlreadyProcessed) {
		return fmt.Errorf("%s/%s: %w", consumer, eventID, app.ErrDuplicateEvent)
	}
	return err
}

// retry runs one transaction attempt after another while the database asks for it.
func (s *Store) retry(ctx context.Context, attempt func(v *txView) error) error {
	for n := 1; ; n++ {
		v := &txView{s: s}
		err := attempt(v)
		if err == nil {
			if v.events > 0 {
				s.afterCommit()
			}
			return nil
		}
		if n == maxAttempts || (!errors.Is(err, errRetry) && !retryable(err)) {
			return err
		}
		t := time.NewTimer(time.Duration(n) * 2 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// retryable reports PostgreSQL's "run the transaction again" errors: serialization failure and
// deadlock detected.
func retryable(err error) bool {
	var pg interface{ SQLState() string }
	if !errors.As(err, &pg) {
		return false
	}
	switch pg.SQLState() {
	case "40001", "40P01":
		return true
	}
	return false
}

// Account implements app.Store.
func (s *Store) Account(ctx context.Context, customerID string) (domain.Account, error) {
	return scanAccount(s.db.QueryRowContext(ctx, s.q.account, customerID), customerID)
}

// SeedAccounts implements app.Store: existing accounts are left untouched.
func (s *Store) SeedAccounts(ctx context.Context, accounts []domain.Account) (int, error) {
	const chunk = 200
	total := 0
	err := sqldb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		total = 0
		now := time.Now().UTC()
		for start := 0; start < len(accounts); start += chunk {
			part := accounts[start:min(start+chunk, len(accounts))]
			rows := make([]string, len(part))
			args := make([]any, 0, 6*len(part))
			for i, a := range part {
				if !a.Valid() {
					return fmt.Errorf("seed account %s: %w", a.CustomerID, domain.ErrInvalidRequest)
				}
				rows[i] = s.q.seedRow
				args = append(args, a.CustomerID, a.Balance, a.Held, a.Currency, now, now)
			}
			q := s.dialect.Rebind(s.q.seedPrefix + strings.Join(rows, ", ") + " ON CONFLICT (customer_id) DO NOTHING")
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return fmt.Errorf("seed accounts: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("seed accounts: %w", err)
			}
			total += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

// txView is app.Tx over one *sql.Tx.
type txView struct {
	s      *Store
	tx     *sql.Tx
	events int
}

func (v *txView) Authorization(ctx context.Context, orderID string) (domain.Authorization, error) {
	if v.s.dialect == sqldb.Postgres {
		if _, err := v.tx.ExecContext(ctx, v.s.q.lockOrder, orderID); err != nil {
			return domain.Authorization{}, fmt.Errorf("lock order %s: %w", orderID, err)
		}
	}
	var (
		a              domain.Authorization
		status, reason string
	)
	err := v.tx.QueryRowContext(ctx, v.s.q.authForUpdate, orderID).Scan(&a.OrderID, &a.CustomerID, &a.Amount,
		&a.Currency, &status, &reason, &a.Version, &a.CreatedAt, &a.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Authorization{}, fmt.Errorf("order %s: %w", orderID, domain.ErrAuthorizationNotFound)
	}
	if err != nil {
		return domain.Authorization{}, fmt.Errorf("read authorization %s: %w", orderID, err)
	}
	a.Status, a.DeclineReason = domain.Status(status), domain.DeclineReason(reason)
	a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC()
	return a, nil
}

func (v *txView) Voided(ctx context.Context, orderID string) (bool, error) {
	var n int64
	if err := v.tx.QueryRowContext(ctx, v.s.q.voided, orderID).Scan(&n); err != nil {
		return false, fmt.Errorf("read tombstone %s: %w", orderID, err)
	}
	return n > 0, nil
}

func (v *txView) MarkVoided(ctx context.Context, orderID string, at time.Time) error {
	if _, err := v.tx.ExecContext(ctx, v.s.q.markVoided, orderID, at.UTC()); err != nil {
		return fmt.Errorf("write tombstone %s: %w", orderID, err)
	}
	return nil
}

func (v *txView) Account(ctx context.Context, customerID string) (domain.Account, error) {
	return scanAccount(v.tx.QueryRowContext(ctx, v.s.q.accountForUpdate, customerID), customerID)
}

func scanAccount(row *sql.Row, customerID string) (domain.Account, error) {
	var a domain.Account
	err := row.Scan(&a.CustomerID, &a.Balance, &a.Held, &a.Currency)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Account{}, fmt.Errorf("customer %s: %w", customerID, domain.ErrAccountNotFound)
	}
	if err != nil {
		return domain.Account{}, fmt.Errorf("read account %s: %w", customerID, err)
	}
	return a, nil
}

// Apply implements app.Tx: authorization, account, ledger entry and event, in this transaction.
func (v *txView) Apply(ctx context.Context, c domain.Change) error {
	a := c.Authorization
	if c.Created {
		res, err := v.tx.ExecContext(ctx, v.s.q.insertAuth, a.OrderID, a.CustomerID, a.Amount, a.Currency,
			string(a.Status), string(a.DeclineReason), a.Version, a.CreatedAt.UTC(), a.UpdatedAt.UTC())
		if err != nil {
			return fmt.Errorf("insert authorization %s: %w", a.OrderID, err)
		}
		if err := oneRow(res); err != nil {
			// Another transaction inserted this order first; run again to find it.
			return fmt.Errorf("insert authorization %s: %w", a.OrderID, errRetry)
		}
	} else {
		res, err := v.tx.ExecContext(ctx, v.s.q.updateAuth, string(a.Status), string(a.DeclineReason), a.Version,
			a.UpdatedAt.UTC(), a.OrderID, a.Version-1)
		if err != nil {
			return fmt.Errorf("update authorization %s: %w", a.OrderID, err)
		}
		if err := oneRow(res); err != nil {
			return fmt.Errorf("update authorization %s at version %d: %w", a.OrderID, a.Version-1, errRetry)
		}
	}
	if acct := c.Account; acct != nil {
		res, err := v.tx.ExecContext(ctx, v.s.q.updateAccount, acct.Balance, acct.Held, a.UpdatedAt.UTC(), acct.CustomerID)
		if err != nil {
			return fmt.Errorf("update account %s: %w", acct.CustomerID, err)
		}
		if err := oneRow(res); err != nil {
			return fmt.Errorf("update account %s: %w", acct.CustomerID, domain.ErrAccountNotFound)
		}
	}
	if e := c.Entry; e != nil {
		if _, err := v.tx.ExecContext(ctx, v.s.q.insertEntry, e.OrderID, string(e.Kind), e.CustomerID, e.Amount, e.At.UTC()); err != nil {
			return fmt.Errorf("ledger %s %s: %w", e.Kind, e.OrderID, err)
		}
	}
	if err := v.s.writer.WriteEvent(ctx, v.tx, c.Event); err != nil {
		return err
	}
	v.events++
	return nil
}

var errNoRow = errors.New("no row affected")

func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return errNoRow
	}
	return nil
}
