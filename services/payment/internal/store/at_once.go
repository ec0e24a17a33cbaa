package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// The order path on PostgreSQL: an authorization and the capture its OrderConfirmed event causes are
// each ONE autocommit statement (data-modifying WITH), one round trip and one transaction without
// BEGIN/COMMIT, instead of a transaction of 5 and 6 statements. Everything else (repeats, tombstones,
// conflicts, voids) runs the use case's transaction, statement by statement, as SQLite always does.

// authorizeOutcomes are the outcomes a new authorization can have, in the order of the statement's
// outbox parts: the decline reason the statement decides selects the event it writes.
var authorizeOutcomes = [...]domain.DeclineReason{
	domain.DeclineNone, domain.DeclineAccountNotFound, domain.DeclineCurrencyMismatch, domain.DeclineInsufficientFunds,
}

// authorizeStatement is AuthorizeAtOnce's statement. Parameters: $1 order, $2 customer, $3 amount,
// $4 currency, $5 now, then 6 per outcome for its event (authorizeOutcomes' order).
//
//   - c takes the order's claim (order_claims): an order already authorized or tombstoned conflicts, and
//     a concurrent authorize or tombstone of the order waits for this statement and then finds it taken.
//     A tombstone is not read: the claim stands for it, including one committed after this statement's
//     snapshot, which a read would miss.
//   - h, only once the claim is taken, holds the amount on the account when its currency matches and
//     its available funds cover it. The decision is the UPDATE's own WHERE, which PostgreSQL re-checks
//     on the row's latest version after any concurrent change (a separate FOR UPDATE read of the
//     account decided on one version while the UPDATE later in the statement changed another: holds
//     beyond the balance under concurrent captures and voids, refused by the table's CHECK).
//   - d is domain.Authorize's decision: held, else no account, else another currency, else
//     insufficient funds (an account's existence and currency never change, so the snapshot tells them).
//   - ins writes the authorization (at version 1), e the ledger's HOLD, and each event part its
//     outcome's event, all depending on ins (after the claim, so the events' outbox seq follows the
//     order's lock).
//
// The result is the decided decline reason (NULL when the claim was taken: nothing was written) and
// the count of accounts holding.
func authorizeStatement(d sqldb.Dialect) string {
	if d != sqldb.Postgres {
		return ""
	}
	q := "WITH c AS (INSERT INTO order_claims (order_id, created_at) VALUES ($1, $5::timestamp) " +
		"ON CONFLICT (order_id) DO NOTHING RETURNING 1), " +
		"h AS (UPDATE accounts SET held_cents = held_cents + $3::bigint, updated_at = $5::timestamp " +
		"WHERE customer_id = $2::text AND currency = $4::text AND balance_cents - held_cents >= $3::bigint " +
		"AND EXISTS (SELECT 1 FROM c) RETURNING 1), " +
		"d AS (SELECT CASE WHEN EXISTS (SELECT 1 FROM h) THEN '' " +
		"WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE customer_id = $2::text) THEN '" + string(domain.DeclineAccountNotFound) + "' " +
		"WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE customer_id = $2::text AND currency = $4::text) THEN '" + string(domain.DeclineCurrencyMismatch) + "' " +
		"ELSE '" + string(domain.DeclineInsufficientFunds) + "' END AS reason FROM c), " +
		"ins AS (INSERT INTO authorizations (" + authCols + ") SELECT $1::text, $2::text, $3::bigint, $4::text, " +
		"CASE WHEN reason = '' THEN '" + string(domain.StatusAuthorized) + "' ELSE '" + string(domain.StatusDeclined) + "' END, " +
		"reason, 1, $5::timestamp, $5::timestamp FROM d RETURNING decline_reason), " +
		"e AS (INSERT INTO ledger_entries (order_id, kind, customer_id, amount_cents, created_at) " +
		"SELECT $1::text, '" + string(domain.EntryHold) + "', $2::text, $3::bigint, $5::timestamp FROM ins WHERE decline_reason = '')"
	for i, r := range authorizeOutcomes {
		part, _ := outbox.Rows{}.InsertSQL(6+6*i, "EXISTS (SELECT 1 FROM ins WHERE decline_reason = '"+string(r)+"')")
		q += ", ev" + strconv.Itoa(i) + " AS (" + part + ")"
	}
	return q + " SELECT (SELECT decline_reason FROM ins), (SELECT count(*) FROM h)"
}

// AuthorizeAtOnce implements app.Store: on PostgreSQL, with an EventPreparer, the first authorization
// of req.OrderID in one statement (authorizeStatement). done is false, with nothing written, when the
// order is already authorized or tombstoned, or on SQLite.
func (s *Store) AuthorizeAtOnce(ctx context.Context, req domain.AuthorizeRequest, now time.Time) (domain.Authorization, bool, error) {
	if s.prep == nil {
		return domain.Authorization{}, false, nil
	}
	// The candidates are domain.Authorize's own changes, one per account situation it tells apart; the
	// statement picks the one its locked account decides.
	var (
		changes [len(authorizeOutcomes)]domain.Change
		evs     [len(authorizeOutcomes)]domain.Event
	)
	for i, r := range authorizeOutcomes {
		var acct *domain.Account
		switch r {
		case domain.DeclineAccountNotFound:
		case domain.DeclineCurrencyMismatch:
			acct = &domain.Account{CustomerID: req.CustomerID, Balance: req.Amount} // no currency
		case domain.DeclineInsufficientFunds:
			acct = &domain.Account{CustomerID: req.CustomerID, Currency: req.Currency}
		default:
			acct = &domain.Account{CustomerID: req.CustomerID, Balance: req.Amount, Currency: req.Currency}
		}
		c, err := domain.Authorize(req, acct, now)
		if err != nil {
			return domain.Authorization{}, false, err
		}
		if c.Authorization.DeclineReason != r {
			// The domain decides differently from the statement: let the transaction run it.
			return domain.Authorization{}, false, nil
		}
		changes[i], evs[i] = c, c.Event
	}
	rows, err := s.prep.PrepareEvents(ctx, evs[:]...)
	if err != nil {
		return domain.Authorization{}, false, err
	}
	args := make([]any, 0, 5+6*len(authorizeOutcomes))
	args = append(args, req.OrderID, req.CustomerID, req.Amount, req.Currency, now.UTC())
	for i := range authorizeOutcomes {
		_, part := one(rows, i).InsertSQL(0, "")
		args = append(args, part...)
	}
	var (
		reason sql.NullString
		held   int64
	)
	if err := s.db.QueryRowContext(ctx, s.q.authorizeOne, args...).Scan(&reason, &held); err != nil {
		return domain.Authorization{}, false, fmt.Errorf("authorize %s: %w", req.OrderID, err)
	}
	if !reason.Valid {
		return domain.Authorization{}, false, nil
	}
	for i, r := range authorizeOutcomes {
		if string(r) != reason.String {
			continue
		}
		if r == domain.DeclineNone && held != 1 {
			return domain.Authorization{}, false, fmt.Errorf("authorize %s: hold on %s: %w", req.OrderID, req.CustomerID, domain.ErrInconsistent)
		}
		s.afterCommit()
		return changes[i].Authorization, true, nil
	}
	return domain.Authorization{}, false, fmt.Errorf("authorize %s: decline reason %q: %w", req.OrderID, reason.String, domain.ErrInconsistent)
}

// one is the i-th row of r alone.
func one(r outbox.Rows, i int) outbox.Rows {
	return outbox.Rows{IDs: r.IDs[i : i+1], Topics: r.Topics[i : i+1], Keys: r.Keys[i : i+1],
		Payloads: r.Payloads[i : i+1], Headers: r.Headers[i : i+1], CreatedAt: r.CreatedAt}
}

// captureStatement is CaptureConfirmed's statement. Parameters: $1 consumer, $2 event id, $3 now,
// $4 order, $5 customer, $6 amount, $7 currency, $8 the authorization's version, $9 now (the inbox's
// timestamptz), then 6 for the event.
//
// a captures the authorization only while it is AUTHORIZED at that version with the event's customer,
// amount and currency, its account exists, and the event is not in the inbox; its row lock orders it
// after any concurrent change of the order, whose result it then re-checks. The account, the ledger's
// DEBIT, the inbox record and the event are written only with it (EXISTS (SELECT 1 FROM a)). So the
// statement writes all or nothing: a duplicate delivery (inbox, or a capture already done) and every
// case that is not the plain capture write nothing and are left to the transaction, which tells them
// apart. Result: authorizations and accounts changed.
func captureStatement(d sqldb.Dialect) string {
	if d != sqldb.Postgres {
		return ""
	}
	part, _ := outbox.Rows{}.InsertSQL(10, "EXISTS (SELECT 1 FROM a)")
	return "WITH a AS (UPDATE authorizations SET status = '" + string(domain.StatusCaptured) + "', version = $8::bigint + 1, " +
		"updated_at = $3::timestamp WHERE order_id = $4::text AND status = '" + string(domain.StatusAuthorized) + "' " +
		"AND version = $8::bigint AND customer_id = $5::text AND amount_cents = $6::bigint AND currency = $7::text " +
		"AND EXISTS (SELECT 1 FROM accounts WHERE customer_id = $5::text) " +
		"AND NOT EXISTS (SELECT 1 FROM inbox WHERE consumer = $1::text AND event_id = $2::text) RETURNING 1), " +
		"acc AS (UPDATE accounts SET balance_cents = balance_cents - $6::bigint, held_cents = held_cents - $6::bigint, " +
		"updated_at = $3::timestamp WHERE customer_id = $5::text AND EXISTS (SELECT 1 FROM a) RETURNING 1), " +
		"e AS (INSERT INTO ledger_entries (order_id, kind, customer_id, amount_cents, created_at) " +
		"SELECT $4::text, '" + string(domain.EntryDebit) + "', $5::text, $6::bigint, $3::timestamp WHERE EXISTS (SELECT 1 FROM a)), " +
		"ib AS (INSERT INTO inbox (consumer, event_id, processed_at) SELECT $1::text, $2::text, $9::timestamptz " +
		"WHERE EXISTS (SELECT 1 FROM a) ON CONFLICT DO NOTHING), " +
		"ev AS (" + part + ") " +
		"SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM acc)"
}

// CaptureConfirmed implements app.Store: on PostgreSQL, with an EventPreparer, the capture of a — the
// authorization as the order event says it is — recorded in the inbox under (consumer, eventID), in
// one statement (captureStatement). done is false, with nothing written, when that is not exactly what
// the event does, or on SQLite.
func (s *Store) CaptureConfirmed(ctx context.Context, consumer, eventID string, a domain.Authorization, now time.Time) (bool, error) {
	if s.prep == nil || consumer == "" || eventID == "" {
		return false, nil
	}
	ev, ok := plainCapture(a, now)
	if !ok {
		return false, nil // not the plain capture: the transaction decides and reports
	}
	rows, err := s.prep.PrepareEvents(ctx, ev)
	if err != nil {
		return false, err
	}
	args := captureArgs(consumer, eventID, a, now, rows)
	var auths, accounts int64
	if err := s.db.QueryRowContext(ctx, s.q.captureOne, args...).Scan(&auths, &accounts); err != nil {
		return false, fmt.Errorf("capture %s on %s: %w", a.OrderID, eventID, err)
	}
	if auths == 0 {
		return false, nil
	}
	s.afterCommit()
	if accounts != 1 {
		return true, fmt.Errorf("capture %s: account %s: %w", a.OrderID, a.CustomerID, domain.ErrInconsistent)
	}
	return true, nil
}

// plainCapture is the event of the domain's capture of a when it is the plain one captureStatement
// writes (AUTHORIZED to CAPTURED at the next version, with a DEBIT); ok is false otherwise. The
// account's figures here only satisfy the domain's checks: the statement moves the amount on the
// locked row, and the table's CHECKs refuse an inconsistent result.
func plainCapture(a domain.Authorization, now time.Time) (ev domain.Event, ok bool) {
	c, changed, err := domain.Capture(a, &domain.Account{CustomerID: a.CustomerID, Balance: a.Amount, Held: a.Amount, Currency: a.Currency}, now)
	if err != nil || !changed || c.Authorization.Version != a.Version+1 || c.Entry == nil || c.Entry.Kind != domain.EntryDebit {
		return domain.Event{}, false
	}
	return c.Event, true
}

// captureArgs are captureStatement's parameters for the capture of a on eventID, with rows (one
// prepared event) as its event.
func captureArgs(consumer, eventID string, a domain.Authorization, now time.Time, rows outbox.Rows) []any {
	_, part := rows.InsertSQL(0, "")
	return append([]any{consumer, eventID, now.UTC(), a.OrderID, a.CustomerID, a.Amount, a.Currency, a.Version, now.UTC()}, part...)
}

// Authorization implements app.Store: the order's authorization as last committed, without a lock.
func (s *Store) Authorization(ctx context.Context, orderID string) (domain.Authorization, error) {
	var (
		a      domain.Authorization
		st, dr string
	)
	err := s.db.QueryRowContext(ctx, s.q.authorization, orderID).Scan(&a.OrderID, &a.CustomerID, &a.Amount, &a.Currency,
		&st, &dr, &a.Version, &a.CreatedAt, &a.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Authorization{}, fmt.Errorf("order %s: %w", orderID, domain.ErrAuthorizationNotFound)
	}
	if err != nil {
		return domain.Authorization{}, fmt.Errorf("read authorization %s: %w", orderID, err)
	}
	a.Status, a.DeclineReason = domain.Status(st), domain.DeclineReason(dr)
	a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC()
	return a, nil
}
