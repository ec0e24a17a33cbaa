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
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
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

// EventPreparer is an EventWriter that also turns events into outbox rows for the store's own statement
// (outbox.Rows.InsertSQL). With one, on PostgreSQL, a new authorization and the capture an
// OrderConfirmed event causes are each one autocommit statement: state, account, ledger, inbox and
// event together, one round trip, no BEGIN/COMMIT.
type EventPreparer interface {
	PrepareEvents(ctx context.Context, events ...domain.Event) (outbox.Rows, error)
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
	prep        EventPreparer // nil: no single-statement paths (SQLite, or a writer that cannot prepare)
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
	if p, ok := events.(EventPreparer); ok && d == sqldb.Postgres {
		s.prep = p
	}
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
	claim, authorization                     string
	// authorizeOne and captureOne are, on PostgreSQL, the single statements of AuthorizeAtOnce and
	// CaptureConfirmed.
	authorizeOne, captureOne string
	// apply holds, on PostgreSQL, Apply's statement per shape of change (applyShape).
	apply map[applyShape]string
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
		lockOrder:  "SELECT pg_advisory_xact_lock(" + orderLockClass + ", hashtext($1))",
		voided:     d.Rebind("SELECT count(*) FROM void_tombstones WHERE order_id = ?"),
		markVoided: d.Rebind("INSERT INTO void_tombstones (order_id, created_at) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING"),
		// The authorization (locked) and whether the order has a tombstone, in one read: Authorize needs
		// both, and reading them after the order's lock is what makes the tombstone answer final.
		authForUpdate: d.Rebind("SELECT t.n, " + authColsOf("a") + " FROM (SELECT count(*) AS n FROM void_tombstones WHERE order_id = ?) t " +
			"LEFT JOIN (SELECT " + authCols + " FROM authorizations WHERE order_id = ?" + lock + ") a ON 1 = 1"),
		accountForUpdate: d.Rebind("SELECT " + accountCols + " FROM accounts WHERE customer_id = ?" + lock),
		account:          d.Rebind("SELECT " + accountCols + " FROM accounts WHERE customer_id = ?"),
		insertAuth: d.Rebind("INSERT INTO authorizations (" + authCols + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) " +
			"ON CONFLICT (order_id) DO NOTHING"),
		updateAuth: d.Rebind("UPDATE authorizations SET status = ?, decline_reason = ?, version = ?, updated_at = ? " +
			"WHERE order_id = ? AND version = ?"),
		updateAccount: d.Rebind("UPDATE accounts SET balance_cents = ?, held_cents = ?, updated_at = ? WHERE customer_id = ?"),
		insertEntry: d.Rebind("INSERT INTO ledger_entries (order_id, kind, customer_id, amount_cents, created_at) " +
			"VALUES (?, ?, ?, ?, ?)"),
		seedPrefix:    "INSERT INTO accounts (customer_id, balance_cents, held_cents, currency, created_at, updated_at) VALUES ",
		seedRow:       "(?, ?, ?, ?, ?, ?)",
		claim:         d.Rebind("INSERT INTO order_claims (order_id, created_at) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING"),
		authorization: d.Rebind("SELECT " + authCols + " FROM authorizations WHERE order_id = ?"),
		apply:         applyStatements(d),
		authorizeOne:  authorizeStatement(d),
		captureOne:    captureStatement(d),
	}
}

// authColsOf is authCols qualified with a table alias.
func authColsOf(alias string) string {
	cols := strings.Split(authCols, ", ")
	for i, c := range cols {
		cols[i] = alias + "." + c
	}
	return strings.Join(cols, ", ")
}

// applyShape is what one Apply writes: a new or an updated authorization, with or without an account
// change and a ledger entry.
type applyShape struct{ created, account, entry bool }

// applyStatements builds, on PostgreSQL, one statement per applyShape that writes the authorization,
// the account and the ledger entry at once (one round trip instead of three) and returns how many
// authorization and account rows it wrote. The account and the entry are written only with the
// authorization (EXISTS (SELECT 1 FROM a)); Apply fails, and the transaction rolls back, when either
// count is short. Parameters: the authorization's ($1–$9 insert, $1–$6 update), then the account's
// (balance, held, updated at, customer), then the entry's (order, kind, customer, amount, at).
// SQLite runs the statements one by one.
func applyStatements(d sqldb.Dialect) map[applyShape]string {
	if d != sqldb.Postgres {
		return nil
	}
	out := map[applyShape]string{}
	for _, created := range []bool{false, true} {
		for _, account := range []bool{false, true} {
			for _, entry := range []bool{false, true} {
				n := 9
				// The order's claim first (see AuthorizeAtOnce): when a tombstone or another
				// authorization holds it, nothing is written and the attempt runs again.
				q := "WITH cl AS (INSERT INTO order_claims (order_id, created_at) VALUES ($1, $8::timestamp) " +
					"ON CONFLICT (order_id) DO NOTHING RETURNING 1), " +
					"a AS (INSERT INTO authorizations (" + authCols + ") SELECT $1::text, $2::text, $3::bigint, $4::text, $5::text, " +
					"$6::text, $7::bigint, $8::timestamp, $9::timestamp WHERE EXISTS (SELECT 1 FROM cl) " +
					"ON CONFLICT (order_id) DO NOTHING RETURNING 1)"
				if !created {
					n = 6
					q = "WITH a AS (UPDATE authorizations SET status = $1, decline_reason = $2, version = $3, updated_at = $4::timestamp " +
						"WHERE order_id = $5 AND version = $6 RETURNING 1)"
				}
				acc := "0::bigint"
				if account {
					q += fmt.Sprintf(", acc AS (UPDATE accounts SET balance_cents = $%d, held_cents = $%d, updated_at = $%d::timestamp "+
						"WHERE customer_id = $%d AND EXISTS (SELECT 1 FROM a) RETURNING 1)", n+1, n+2, n+3, n+4)
					acc, n = "(SELECT count(*) FROM acc)", n+4
				}
				if entry {
					q += fmt.Sprintf(", e AS (INSERT INTO ledger_entries (order_id, kind, customer_id, amount_cents, created_at) "+
						"SELECT $%d::text, $%d::text, $%d::text, $%d::bigint, $%d::timestamp WHERE EXISTS (SELECT 1 FROM a))", n+1, n+2, n+3, n+4, n+5)
				}
				out[applyShape{created, account, entry}] = q + " SELECT (SELECT count(*) FROM a), " + acc
			}
		}
	}
	return out
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
	// voided remembers, per order, the tombstone answer Authorization read under the order's lock, and
	// read the authorization (nil: none) until Apply changes it: no other transaction can change either
	// before this one ends (the order's lock on PostgreSQL, the one writer on SQLite), so a use case
	// reading the authorization again (an event handler, then the operation it runs) costs nothing.
	voided map[string]bool
	read   map[string]*domain.Authorization
}

func (v *txView) Authorization(ctx context.Context, orderID string) (domain.Authorization, error) {
	if got, ok := v.read[orderID]; ok {
		if got == nil {
			return domain.Authorization{}, fmt.Errorf("order %s: %w", orderID, domain.ErrAuthorizationNotFound)
		}
		return *got, nil
	}
	a, err := v.readAuthorization(ctx, orderID)
	switch {
	case err == nil:
		v.remember(orderID, &a)
	case errors.Is(err, domain.ErrAuthorizationNotFound):
		v.remember(orderID, nil)
	}
	return a, err
}

func (v *txView) remember(orderID string, a *domain.Authorization) {
	if v.read == nil {
		v.read = map[string]*domain.Authorization{}
	}
	v.read[orderID] = a
}

// readAuthorization locks the order, then reads its authorization and its tombstone.
func (v *txView) readAuthorization(ctx context.Context, orderID string) (domain.Authorization, error) {
	if v.s.dialect == sqldb.Postgres {
		if _, err := v.tx.ExecContext(ctx, v.s.q.lockOrder, orderID); err != nil {
			return domain.Authorization{}, fmt.Errorf("lock order %s: %w", orderID, err)
		}
	}
	var (
		a                         domain.Authorization
		tombstones                int64
		id, customer, cur, st, dr sql.NullString
		amount, version           sql.NullInt64
		createdAt, updatedAt      sql.NullTime
	)
	err := v.tx.QueryRowContext(ctx, v.s.q.authForUpdate, orderID, orderID).Scan(&tombstones, &id, &customer, &amount,
		&cur, &st, &dr, &version, &createdAt, &updatedAt)
	if err != nil {
		return domain.Authorization{}, fmt.Errorf("read authorization %s: %w", orderID, err)
	}
	if v.voided == nil {
		v.voided = map[string]bool{}
	}
	v.voided[orderID] = tombstones > 0
	if !id.Valid {
		return domain.Authorization{}, fmt.Errorf("order %s: %w", orderID, domain.ErrAuthorizationNotFound)
	}
	a.OrderID, a.CustomerID, a.Amount, a.Currency, a.Version = id.String, customer.String, amount.Int64, cur.String, version.Int64
	a.CreatedAt, a.UpdatedAt = createdAt.Time.UTC(), updatedAt.Time.UTC()
	a.Status, a.DeclineReason = domain.Status(st.String), domain.DeclineReason(dr.String)
	return a, nil
}

func (v *txView) Voided(ctx context.Context, orderID string) (bool, error) {
	if voided, ok := v.voided[orderID]; ok {
		return voided, nil
	}
	var n int64
	if err := v.tx.QueryRowContext(ctx, v.s.q.voided, orderID).Scan(&n); err != nil {
		return false, fmt.Errorf("read tombstone %s: %w", orderID, err)
	}
	return n > 0, nil
}

func (v *txView) MarkVoided(ctx context.Context, orderID string, at time.Time) error {
	if v.voided[orderID] {
		return nil // read under the order's lock: already tombstoned
	}
	// The order's claim first (see AuthorizeAtOnce): an authorization that took it after this
	// transaction read none, or is taking it now (the insert waits for it), makes the attempt run again
	// and find it.
	res, err := v.tx.ExecContext(ctx, v.s.q.claim, orderID, at.UTC())
	if err != nil {
		return fmt.Errorf("claim order %s: %w", orderID, err)
	}
	if err := oneRow(res); err != nil {
		if voided, verr := v.Voided(ctx, orderID); verr != nil || voided {
			return verr
		}
		return fmt.Errorf("claim order %s: %w", orderID, errRetry)
	}
	if _, err := v.tx.ExecContext(ctx, v.s.q.markVoided, orderID, at.UTC()); err != nil {
		return fmt.Errorf("write tombstone %s: %w", orderID, err)
	}
	if v.voided != nil {
		v.voided[orderID] = true
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
	delete(v.read, c.Authorization.OrderID)
	if v.s.q.apply != nil {
		return v.applyOne(ctx, c)
	}
	a := c.Authorization
	if c.Created {
		res, err := v.tx.ExecContext(ctx, v.s.q.claim, a.OrderID, a.CreatedAt.UTC())
		if err != nil {
			return fmt.Errorf("claim order %s: %w", a.OrderID, err)
		}
		if err := oneRow(res); err != nil {
			// Another transaction took this order first; run again to find it.
			return fmt.Errorf("claim order %s: %w", a.OrderID, errRetry)
		}
		res, err = v.tx.ExecContext(ctx, v.s.q.insertAuth, a.OrderID, a.CustomerID, a.Amount, a.Currency,
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

// applyOne is Apply on PostgreSQL: the writes in one statement (applyStatements), then the event.
func (v *txView) applyOne(ctx context.Context, c domain.Change) error {
	a := c.Authorization
	shape := applyShape{created: c.Created, account: c.Account != nil, entry: c.Entry != nil}
	var args []any
	if c.Created {
		args = append(args, a.OrderID, a.CustomerID, a.Amount, a.Currency, string(a.Status), string(a.DeclineReason), a.Version,
			a.CreatedAt.UTC(), a.UpdatedAt.UTC())
	} else {
		args = append(args, string(a.Status), string(a.DeclineReason), a.Version, a.UpdatedAt.UTC(), a.OrderID, a.Version-1)
	}
	if acct := c.Account; acct != nil {
		args = append(args, acct.Balance, acct.Held, a.UpdatedAt.UTC(), acct.CustomerID)
	}
	if e := c.Entry; e != nil {
		args = append(args, e.OrderID, string(e.Kind), e.CustomerID, e.Amount, e.At.UTC())
	}
	var auths, accounts int64
	if err := v.tx.QueryRowContext(ctx, v.s.q.apply[shape], args...).Scan(&auths, &accounts); err != nil {
		return fmt.Errorf("apply %s: %w", a.OrderID, err)
	}
	switch {
	case auths != 1 && c.Created:
		// Another transaction inserted this order first; run again to find it.
		return fmt.Errorf("insert authorization %s: %w", a.OrderID, errRetry)
	case auths != 1:
		return fmt.Errorf("update authorization %s at version %d: %w", a.OrderID, a.Version-1, errRetry)
	case c.Account != nil && accounts != 1:
		return fmt.Errorf("update account %s: %w", c.Account.CustomerID, domain.ErrAccountNotFound)
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
