package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// commitBatch commits, in ONE statement, the HELD reservations of the orders $1 as the effects of
// the events $2 (recorded in consumer $3's inbox, at $5; $4 the same time as a timestamp): it locks
// the reservations in order id order, records the events, moves them to COMMITTED, and then locks the
// product rows of all their lines in SKU order and moves the batch's stock in one update per SKU
// (on_hand and reserved down by the batch's quantity, the version up by the number of orders that
// moved it, as that many commits one at a time would). It returns one row per line of the orders it
// locked, in order id and line order, with the SKU's level after the whole batch, and on every row
// how many reservations it locked, events it recorded and reservations it updated; no row when none
// was HELD. Its caller works out each order's level from those (scanCommitBatch).
//
// The product rows are hot (every reserve and settlement updates them). They are locked last, by one
// statement that changes them at once: held from there to the COMMIT of the same round trip's
// successor — what one commit (settlePipelined) holds them for, whatever the batch's size. Locking
// them up front and settling order by order (settleOne each) held them for the whole batch and made
// reserves wait three times longer on the bench's 24 SKUs. Settling order by order without locking
// them up front would take them in the batch's order (order A's P1 and P5, then order B's P2) while a
// reserve takes P2 then P5: PostgreSQL would detect the deadlock and abort one, maybe the reserve,
// which the customer sees. In SKU order, as reserveOne and settleOne take theirs, every transaction
// that locks products locks them in one global order and waits instead. The mode is FOR NO KEY
// UPDATE, the one settleOne and reserveOne take (see reserveOne on why not FOR UPDATE).
//
// The reservations come first, as in settleOne (its UPDATE of the reservation precedes its locked
// CTE): a settlement of one of the orders outside the batch (the order service's Commit) holds the
// reservation while it waits for the products, so a batch that took the products first and then
// waited for that reservation would deadlock with it. MATERIALIZED keeps the reservations' locks a
// step of their own: n aggregates all of l before the products' lock sees its first SKU.
const commitBatch = `WITH l AS MATERIALIZED (
	SELECT order_id FROM reservations WHERE order_id = ANY($1::text[]) AND status = 'HELD'
	ORDER BY order_id FOR NO KEY UPDATE
), ib AS (
	INSERT INTO inbox (consumer, event_id, processed_at) SELECT $3, e, $5::timestamptz FROM unnest($2::text[]) AS e
	ON CONFLICT DO NOTHING RETURNING 1
), r AS (
	UPDATE reservations c SET status = 'COMMITTED', updated_at = $4::timestamp FROM l WHERE c.order_id = l.order_id
	RETURNING c.order_id
), n AS (
	SELECT x.sku, sum(x.quantity)::bigint AS qty, count(DISTINCT x.order_id) AS orders
	FROM reservation_lines x JOIN l ON l.order_id = x.order_id GROUP BY x.sku
), locked AS (
	SELECT p.sku FROM products p JOIN n ON n.sku = p.sku ORDER BY p.sku FOR NO KEY UPDATE OF p
), m AS (
	UPDATE products p SET on_hand = p.on_hand - n.qty, reserved = p.reserved - n.qty, version = p.version + n.orders,
		updated_at = $4::timestamp
	FROM n WHERE p.sku = n.sku AND p.sku IN (SELECT sku FROM locked)
	RETURNING p.sku, p.on_hand, p.reserved, p.version
)
SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM ib), (SELECT count(*) FROM r),
	x.order_id, x.sku, x.quantity, m.on_hand, m.reserved, m.version
FROM reservation_lines x JOIN l ON l.order_id = x.order_id LEFT JOIN m ON m.sku = x.sku
ORDER BY x.order_id, x.line_no`

// errNotPlain rolls back a batch in which one commit is not the plain one.
var errNotPlain = errors.New("not the plain commit")

// CommitBatchOnce implements app.EventEffects: on PostgreSQL, the commits of the orders of es, each the
// effect of its event recorded in consumer's inbox, in ONE transaction of two round trips, pipelined
// as settlePipelined's: [BEGIN; commitBatch], then [one outbox insert of every StockChanged of the
// batch; COMMIT]. A batch of n confirmations so costs 2 statements, one transaction and two round
// trips instead of 2n statements, n transactions and 2n round trips. done is false, with the
// transaction rolled back and nothing of the batch written, as soon as one commit is not the plain
// HELD→COMMITTED of a new event: an event in the inbox already (a redelivery, or the same event twice
// in es), a reservation not HELD or missing (or the order twice in es); and always on SQLite. The
// caller then applies each with CommitOnce, which tells those cases apart.
//
// Each StockChanged carries the levels right after its order's commit, as with CommitOnce, even when
// several orders of the batch move the same SKU: commitBatch returns the level after the batch, and
// the rows were locked throughout, so the level before it is that plus the batch's quantity (the
// version minus the number of orders that moved it); stepping through es's order from there gives
// each order's level. The levels, the versions and the events' order per SKU are so those of the same
// commits made one at a time in es's order.
func (s *Store) CommitBatchOnce(ctx context.Context, consumer string, es []app.Confirmation) (done bool, err error) {
	if len(es) == 0 {
		return true, nil
	}
	if s.d != sqldb.Postgres {
		return false, nil
	}
	ids, events := make([]string, len(es)), make([]string, len(es))
	for i, e := range es {
		if consumer == "" || e.EventID == "" || e.OrderID == "" {
			return false, nil // CommitOnce reports it
		}
		ids[i], events[i] = e.OrderID, e.EventID
	}
	now := s.utcNow()
	err = sqldb.WithPgx(ctx, s.db, func(ctx context.Context, p *sqldb.Pipeline) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(commitBatch, ids, events, consumer, now, now)
		br := p.Send(ctx, b)
		changes, err := scanCommitBatch(br, es, now)
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

// scanCommitBatch reads the answers of [BEGIN; commitBatch]: the stock changes of all the commits, in
// es's order, or errNotPlain when one of them is not the plain one.
func scanCommitBatch(br pgx.BatchResults, es []app.Confirmation, now time.Time) ([]domain.StockChange, error) {
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("commit batch: %w", err)
	}
	defer rows.Close()
	var (
		held, recorded, updated int64 // 0 when no row: no reservation of es is HELD
		items                   = map[string][]domain.Item{}
		after                   = map[string]domain.StockLevel{}
	)
	for rows.Next() {
		var (
			orderID, sku              string
			qty                       int64
			onHand, reserved, version *int64
		)
		if err := rows.Scan(&held, &recorded, &updated, &orderID, &sku, &qty, &onHand, &reserved, &version); err != nil {
			return nil, fmt.Errorf("commit batch: %w", err)
		}
		if onHand == nil || reserved == nil || version == nil {
			return nil, fmt.Errorf("commit batch: no stock moved for %s of %s", sku, orderID)
		}
		items[orderID] = append(items[orderID], domain.Item{SKU: sku, Quantity: qty})
		after[sku] = domain.StockLevel{SKU: sku, OnHand: *onHand, Reserved: *reserved, Version: *version, UpdatedAt: now}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("commit batch: %w", err)
	}
	if n := int64(len(es)); held != n || recorded != n || updated != n {
		return nil, errNotPlain
	}
	// The level before the batch, then each order's commit in es's order.
	needs := make([][]domain.Need, len(es))
	level := map[string]domain.StockLevel{}
	for i, e := range es {
		if len(items[e.OrderID]) == 0 {
			return nil, fmt.Errorf("commit batch %s: a held reservation without lines", e.OrderID)
		}
		needs[i] = domain.Needs(items[e.OrderID])
		for _, need := range needs[i] {
			l, ok := level[need.SKU]
			if !ok {
				l = after[need.SKU]
			}
			l.OnHand, l.Reserved, l.Version = l.OnHand+need.Quantity, l.Reserved+need.Quantity, l.Version-1
			level[need.SKU] = l
		}
	}
	var changes []domain.StockChange
	for i, e := range es {
		for _, need := range needs[i] {
			l := level[need.SKU]
			l.OnHand, l.Reserved, l.Version = l.OnHand-need.Quantity, l.Reserved-need.Quantity, l.Version+1
			level[need.SKU] = l
			changes = append(changes, domain.StockChange{Level: l, Cause: domain.CauseCommitted, OrderID: e.OrderID})
		}
	}
	return changes, nil
}
