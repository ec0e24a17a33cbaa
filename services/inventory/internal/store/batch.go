package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// lockBatch is the first statement of a batch of commits (CommitBatchOnce): it locks the HELD
// reservations of the orders $1, in order id order, then the product rows of all their lines, in SKU
// order, and returns one row per product locked with the number of reservations locked. The product
// rows are hot (every reserve and settlement updates them): settling the orders one after the other,
// each settleOne locking its own SKUs, would take them in the batch's order (order A's P1 and P5, then
// order B's P2), while a reserve takes P2 then P5: PostgreSQL would detect the deadlock after
// deadlock_timeout and abort one of them, maybe the reserve, which the customer sees. Taken here all
// at once in SKU order, as reserveOne and settleOne take theirs, every transaction that locks products
// locks them in one global order and waits instead; the batch's settleOne statements then find their
// rows locked by their own transaction already. The mode is FOR NO KEY UPDATE, the one settleOne and
// reserveOne take (see reserveOne on why not FOR UPDATE).
//
// The reservations come first, as in settleOne (its UPDATE of the reservation precedes its locked
// CTE): a settlement of one of the orders outside the batch (the order service's Commit) holds the
// reservation while it waits for the products, so a batch that took the products first and then
// waited for that reservation would deadlock with it. MATERIALIZED keeps the reservations' locks a
// step of their own, all taken before the sort under the products' locks returns its first row.
const lockBatch = `WITH r AS MATERIALIZED (
	SELECT order_id FROM reservations WHERE order_id = ANY($1::text[]) AND status = 'HELD'
	ORDER BY order_id FOR NO KEY UPDATE
)
SELECT p.sku, (SELECT count(*) FROM r) FROM products p
WHERE p.sku IN (SELECT l.sku FROM reservation_lines l JOIN r ON r.order_id = l.order_id)
ORDER BY p.sku FOR NO KEY UPDATE OF p`

// errNotPlain rolls back a batch in which one commit is not the plain one.
var errNotPlain = errors.New("not the plain commit")

// CommitBatchOnce implements app.EventEffects: on PostgreSQL, the commits of the orders of es, each the
// effect of its event recorded in consumer's inbox, in ONE transaction of two round trips, pipelined
// as commitPG's: [BEGIN; lockBatch; settleOne per event, in es's order], then [one outbox insert of
// every StockChanged of the batch; COMMIT]. A batch of n confirmations so costs n+2 statements, one
// transaction and two round trips instead of 2n statements, n transactions and 2n round trips. done
// is false, with the transaction rolled back and nothing of the batch written, as soon as one commit
// is not the plain HELD→COMMITTED of a new event: an event in the inbox already (a redelivery, or the
// same event twice in es), a reservation not HELD or missing, one lockBatch did not lock (it became
// HELD after lockBatch, or the order is twice in es); and always on SQLite. The caller then applies
// each with CommitOnce, which tells those cases apart.
//
// Each StockChanged carries the levels right after its order's commit, as with CommitOnce, even when
// several orders of the batch move the same SKU: every settleOne statement of the transaction sees
// the updates of the ones before it (a statement's snapshot includes its own transaction's changes),
// and no other transaction can change the rows in between, lockBatch having locked them all. The
// levels, the versions and the events' order per SKU are so those of the same commits made one at a
// time in es's order.
func (s *Store) CommitBatchOnce(ctx context.Context, consumer string, es []app.Confirmation) (done bool, err error) {
	if len(es) == 0 {
		return true, nil
	}
	if s.d != sqldb.Postgres {
		return false, nil
	}
	ids := make([]string, len(es))
	for i, e := range es {
		if consumer == "" || e.EventID == "" || e.OrderID == "" {
			return false, nil // CommitOnce reports it
		}
		ids[i] = e.OrderID
	}
	now := s.utcNow()
	err = sqldb.WithPgx(ctx, s.db, func(ctx context.Context, p *sqldb.Pipeline) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(lockBatch, ids)
		for _, e := range es {
			b.Queue(settleOne, e.OrderID, string(domain.StatusCommitted), now, true, consumer, e.EventID, now)
		}
		br := p.Send(ctx, b)
		changes, err := scanCommitBatch(br, consumer, es, now)
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("commit batch: %w", cerr)
		}
		if err != nil {
			return rollbackAfter(ctx, p, &pgx.Batch{}, func(pgx.BatchResults) error { return err })
		}
		q, args, err := s.events.StockChangesInsert(ctx, changes)
		if err != nil {
			return err
		}
		return commitAfter(ctx, p, q, args)
	})
	switch {
	case errors.Is(err, errNotPlain):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("commit batch of %d from %s: %w", len(es), es[0].EventID, err)
	}
	s.afterCommit()
	return true, nil
}

// scanCommitBatch reads the answers of [BEGIN; lockBatch; settleOne per event]: the stock changes of
// all the commits, in es's order, or errNotPlain when one of them is not the plain one.
func scanCommitBatch(br pgx.BatchResults, consumer string, es []app.Confirmation, now time.Time) ([]domain.StockChange, error) {
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	var locked int64 // 0 when no row: no reservation of es is HELD
	for rows.Next() {
		var sku string
		if err := rows.Scan(&sku, &locked); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lock: %w", err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if locked != int64(len(es)) {
		return nil, errNotPlain
	}
	var changes []domain.StockChange
	for _, e := range es {
		rows, err := br.Query()
		if err != nil {
			return nil, fmt.Errorf("settle %s: %w", e.OrderID, err)
		}
		_, ch, err := scanSettleOne(rows, e.OrderID, true, domain.CauseCommitted, now, inboxRecord{consumer: consumer, eventID: e.EventID})
		rows.Close()
		switch {
		case errors.Is(err, inbox.ErrAlreadyProcessed), errors.Is(err, domain.ErrReservationNotFound):
			return nil, errNotPlain
		case err != nil:
			return nil, fmt.Errorf("settle %s: %w", e.OrderID, err)
		case ch == nil:
			// Not HELD (committed, released) or settled meanwhile: CommitOnce tells them apart.
			return nil, errNotPlain
		}
		changes = append(changes, ch...)
	}
	return changes, nil
}
