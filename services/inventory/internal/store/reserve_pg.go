package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// reserveOne is Reserve's first-time path on PostgreSQL in one statement (one round trip): it records
// the reservation (the existence check, as on SQLite), prices it and its lines at the prices of the
// statement's snapshot, and holds the stock of every SKU whose availability suffices, then returns per
// SKU its price and, when held, its new level. Data-modifying CTEs see each other only through
// RETURNING, so every part reads the items from the parameters: $1 order id, $2 SKUs and $3 quantities
// of the lines in request order, $4 the time.
//
// The product rows are locked in SKU order (the locked CTE: LockRows over the sort) before they are
// updated, as the SQLite path and settle do, so concurrent orders of the same SKUs cannot deadlock. The
// lock is FOR NO KEY UPDATE, the one a plain UPDATE of these columns takes: FOR UPDATE would also wait
// for (and block) the key-share locks that every transaction inserting a reservation line referencing
// the SKU holds until it commits. A row lock is held from this statement to COMMIT, which reservePG
// sends with the outbox insert: one round trip (and Go's work between the two).
const reserveOne = `WITH items AS (
	SELECT i.sku, i.qty, i.line_no::int AS line_no FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS i(sku, qty, line_no)
), need AS (
	SELECT sku, sum(qty)::bigint AS qty FROM items GROUP BY sku
), priced AS (
	SELECT p.sku, p.price_cents, p.currency FROM products p JOIN need n ON n.sku = p.sku
), r AS (
	INSERT INTO reservations (order_id, status, currency, total_cents, created_at, updated_at)
	SELECT $1, 'HELD', COALESCE(min(pr.currency), ''), COALESCE(sum(i.qty * pr.price_cents), 0)::bigint, $4::timestamp, $4::timestamp
	FROM items i LEFT JOIN priced pr ON pr.sku = i.sku
	ON CONFLICT (order_id) DO NOTHING
	RETURNING order_id
), locked AS (
	SELECT p.sku FROM products p JOIN need n ON n.sku = p.sku WHERE EXISTS (SELECT 1 FROM r)
	ORDER BY p.sku FOR NO KEY UPDATE OF p
), h AS (
	UPDATE products p SET reserved = p.reserved + n.qty, version = p.version + 1, updated_at = $4::timestamp
	FROM need n WHERE p.sku = n.sku AND p.sku IN (SELECT sku FROM locked) AND p.on_hand - p.reserved >= n.qty
	RETURNING p.sku, p.on_hand, p.reserved, p.version
), l AS (
	INSERT INTO reservation_lines (order_id, line_no, sku, quantity, unit_price_cents)
	SELECT $1, i.line_no, i.sku, i.qty, pr.price_cents FROM items i JOIN priced pr ON pr.sku = i.sku
	WHERE EXISTS (SELECT 1 FROM r)
)
SELECT c.n, pr.sku, pr.price_cents, pr.currency, h.sku IS NOT NULL, COALESCE(h.on_hand, 0), COALESCE(h.reserved, 0), COALESCE(h.version, 0)
FROM (SELECT count(*) AS n FROM r) c LEFT JOIN priced pr ON true LEFT JOIN h ON h.sku = pr.sku`

// reservePG is Reserve on PostgreSQL: the reservation it found (written false) or wrote (written true),
// or the error of the first SKU that could not be held, in SKU order as on SQLite. Its transaction is
// two round trips on one connection, pipelined (sqldb.WithPgx): [BEGIN; reserveOne], then [the outbox
// insert of the StockChanged events, which carry the levels reserveOne returned; COMMIT]. The product
// rows reserveOne locks are so held for one round trip and the Go work between the two, instead of the
// two round trips (the outbox insert, COMMIT) of database/sql, which sends one statement at a time.
// A reservation that writes nothing ends its transaction with a ROLLBACK sent with the reads its
// answer needs, in one round trip too: [the stored reservation and its lines; ROLLBACK] when the order
// had one, [the product; ROLLBACK] for an SKU out of stock or unknown, [ROLLBACK] for mixed
// currencies. An error of the database leaves the transaction to WithPgx, which rolls it back.
func (s *Store) reservePG(ctx context.Context, orderID string, items []domain.Item) (res domain.Reservation, written bool, err error) {
	skus := make([]string, len(items))
	qtys := make([]int64, len(items))
	for i, it := range items {
		skus[i], qtys[i] = it.SKU, it.Quantity
	}
	now := s.utcNow()
	err = sqldb.WithPgx(ctx, s.db, func(ctx context.Context, p *sqldb.Pipeline) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(reserveOne, orderID, skus, qtys, now)
		br := p.Send(ctx, b)
		held, err := scanReserveOne(br, now)
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("reserve: %w", cerr)
		}
		if err != nil {
			return err
		}
		if held.inserted == 0 {
			res, err = s.endReadingReservation(ctx, p, orderID)
			return err
		}
		changes := make([]domain.StockChange, 0, len(held.skus))
		for _, need := range domain.Needs(items) {
			x, ok := held.skus[need.SKU]
			if !ok || !x.held {
				pr, err := s.endReadingProduct(ctx, p, need.SKU)
				if err != nil {
					return err
				}
				return &domain.StockError{SKU: need.SKU, Requested: need.Quantity, Available: pr.Available(), Err: domain.ErrOutOfStock}
			}
			changes = append(changes, domain.StockChange{Level: x.lvl, Delta: -need.Quantity, Cause: domain.CauseReserved, OrderID: orderID})
		}
		if held.currencies > 1 {
			return rollbackAfter(ctx, p, &pgx.Batch{}, func(pgx.BatchResults) error { return domain.ErrMixedCurrency })
		}
		res = domain.Reservation{OrderID: orderID, Status: domain.StatusHeld, CreatedAt: now, UpdatedAt: now}
		for _, it := range items {
			x := held.skus[it.SKU]
			res.Currency = x.currency
			res.Lines = append(res.Lines, domain.Line{SKU: it.SKU, Quantity: it.Quantity, UnitPriceCents: x.price})
		}
		q, args, err := s.events.StockChangesInsert(ctx, changes)
		if err != nil {
			return err
		}
		if err := commitAfter(ctx, p, q, args); err != nil {
			return err
		}
		written = true
		return nil
	})
	return res, written, err
}

// reserved is reserveOne's answer: per SKU found, its price and, when held, its new level; whether it
// inserted the reservation; the number of currencies of the SKUs found.
type reserved struct {
	skus       map[string]heldSKU
	inserted   int64
	currencies int
}

type heldSKU struct {
	price    int64
	currency string
	held     bool
	lvl      domain.StockLevel
}

// scanReserveOne reads the answers of [BEGIN; reserveOne].
func scanReserveOne(br pgx.BatchResults, now time.Time) (reserved, error) {
	if _, err := br.Exec(); err != nil {
		return reserved{}, fmt.Errorf("begin: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return reserved{}, fmt.Errorf("reserve: %w", err)
	}
	defer rows.Close()
	out := reserved{skus: map[string]heldSKU{}}
	currencies := map[string]bool{}
	for rows.Next() {
		var (
			name     pgtype.Text
			price    pgtype.Int8
			currency pgtype.Text
			x        heldSKU
		)
		if err := rows.Scan(&out.inserted, &name, &price, &currency, &x.held, &x.lvl.OnHand, &x.lvl.Reserved, &x.lvl.Version); err != nil {
			return reserved{}, fmt.Errorf("reserve: %w", err)
		}
		if !name.Valid {
			continue
		}
		x.price, x.currency = price.Int64, currency.String
		x.lvl.SKU, x.lvl.UpdatedAt = name.String, now
		out.skus[name.String] = x
		currencies[x.currency] = true
	}
	if err := rows.Err(); err != nil {
		return reserved{}, fmt.Errorf("reserve: %w", err)
	}
	out.currencies = len(currencies)
	return out, nil
}

// endReadingReservation reads the order's stored reservation in the transaction reserveOne found it
// in and rolls the transaction back, in one round trip.
func (s *Store) endReadingReservation(ctx context.Context, p *sqldb.Pipeline, orderID string) (r domain.Reservation, err error) {
	b := &pgx.Batch{}
	b.Queue(s.d.Rebind(reservationQuery), orderID)
	b.Queue(s.d.Rebind(linesQuery), orderID)
	err = rollbackAfter(ctx, p, b, func(br pgx.BatchResults) error {
		if r, err = scanReservation(orderID, br.QueryRow()); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("reservation lines: %w", err)
		}
		defer rows.Close()
		r, err = scanLines(r, rows)
		return err
	})
	if err != nil {
		return domain.Reservation{}, err
	}
	return r, nil
}

// endReadingProduct reads a product in the transaction and rolls the transaction back, in one round
// trip; its errors are product's.
func (s *Store) endReadingProduct(ctx context.Context, p *sqldb.Pipeline, sku string) (pr domain.Product, err error) {
	b := &pgx.Batch{}
	b.Queue(s.d.Rebind("SELECT "+productCols+" FROM products WHERE sku = ?"), sku)
	err = rollbackAfter(ctx, p, b, func(br pgx.BatchResults) error {
		pr, err = scanProduct(br.QueryRow())
		if errors.Is(err, sql.ErrNoRows) { // pgx.ErrNoRows is sql.ErrNoRows too
			return &domain.StockError{SKU: sku, Err: domain.ErrUnknownProduct}
		}
		if err != nil {
			return fmt.Errorf("product %s: %w", sku, err)
		}
		return nil
	})
	if err != nil {
		return domain.Product{}, err
	}
	return pr, nil
}

// rollbackAfter sends b's statements and ROLLBACK in one round trip, and returns what read makes of
// b's answers. As with sqldb.InTx, the rollback's own failure is not the answer: WithPgx then closes
// the connection, which ends the transaction. After a statement of b failed, the ones after it and
// the ROLLBACK do not run and WithPgx rolls back.
func rollbackAfter(ctx context.Context, p *sqldb.Pipeline, b *pgx.Batch, read func(pgx.BatchResults) error) error {
	b.Queue("ROLLBACK")
	br := p.Send(ctx, b)
	err := read(br)
	_ = br.Close()
	return err
}

// commitAfter sends the statement q (none when empty) and COMMIT in one round trip.
func commitAfter(ctx context.Context, p *sqldb.Pipeline, q string, args []any) error {
	b := &pgx.Batch{}
	if q != "" {
		b.Queue(q, args...)
	}
	b.Queue("COMMIT")
	br := p.Send(ctx, b)
	defer func() { _ = br.Close() }()
	if q != "" {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("enqueue StockChanged: %w", err)
		}
	}
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// settleOne is settle on PostgreSQL in one statement. It moves a HELD reservation ($1) to its
// terminal status ($2, at $3) and its stock with it — reserved drops by the held quantities, and
// on_hand too when $4 (a commit) — locking the product rows in SKU order as reserveOne does, and
// returns one row per line (in line order) with the new level of the line's SKU (moved true). When
// the reservation was not HELD it moves nothing and returns the reservation as the statement's
// snapshot saw it instead (moved false; no line when there is none), from which settle's general path
// decides: an idempotent repeat, an error, or a race with a transaction that committed meanwhile.
//
// When the settlement is the effect of an event ($5 the consumer, $6 the event id, $7 the time again as
// the inbox's timestamptz; $5 empty: none),
// the statement records the event in the inbox first (ib) and changes nothing unless that record is
// new: every write is conditioned on it, so a redelivery writes nothing and the caller answers
// inbox.ErrAlreadyProcessed, as inbox.Process does. A concurrent delivery of the same event waits on
// the inbox's primary key for the first one's transaction, as with inbox.Process. The first column
// (recorded) says whether the record was written; the statement always returns at least one row.
//
// The StockChanged events carry the levels this statement returns, which only the database knows
// when it makes the change: their insert (outbox.EnqueueAll) stays the transaction's second statement
// rather than a part of this one (outbox.Rows.InsertSQL), which would mean encoding their protobuf
// payloads in SQL. The same holds for reserveOne. The product rows therefore stay locked until the
// outbox insert and COMMIT (its WAL flush included) are done: one round trip when the two are sent
// together (pipelined, settlePipelined, as reservePG does), which database/sql does not offer; two in
// the fallbacks that settle in a database/sql transaction (settle: a lost race, a tombstone).
const settleOne = `WITH ib AS (
	INSERT INTO inbox (consumer, event_id, processed_at) SELECT $5, $6, $7::timestamptz WHERE $5 <> ''
	ON CONFLICT DO NOTHING RETURNING 1
), r AS (
	UPDATE reservations SET status = $2, updated_at = $3::timestamp
	WHERE order_id = $1 AND status = 'HELD' AND ($5 = '' OR EXISTS (SELECT 1 FROM ib))
	RETURNING order_id, status, currency, created_at, updated_at
), n AS (
	SELECT l.sku, sum(l.quantity)::bigint AS qty FROM reservation_lines l JOIN r ON r.order_id = l.order_id GROUP BY l.sku
), locked AS (
	SELECT p.sku FROM products p JOIN n ON n.sku = p.sku ORDER BY p.sku FOR NO KEY UPDATE OF p
), m AS (
	UPDATE products p SET on_hand = p.on_hand - CASE WHEN $4::boolean THEN n.qty ELSE 0 END, reserved = p.reserved - n.qty,
		version = p.version + 1, updated_at = $3::timestamp
	FROM n WHERE p.sku = n.sku AND p.sku IN (SELECT sku FROM locked)
	RETURNING p.sku, p.on_hand, p.reserved, p.version
)
SELECT x.recorded, y.moved, y.status, y.currency, y.created_at, y.updated_at, y.line_no, y.sku, y.quantity,
	y.unit_price_cents, y.on_hand, y.reserved, y.version
FROM (SELECT count(*) AS recorded FROM ib) x LEFT JOIN (
	SELECT true AS moved, r.status, r.currency, r.created_at, r.updated_at, l.line_no, l.sku, l.quantity, l.unit_price_cents,
		m.on_hand, m.reserved, m.version
	FROM r LEFT JOIN reservation_lines l ON l.order_id = r.order_id LEFT JOIN m ON m.sku = l.sku
	UNION ALL
	SELECT false, c.status, c.currency, c.created_at, c.updated_at, l.line_no, l.sku, l.quantity, l.unit_price_cents,
		NULL, NULL, NULL
	FROM reservations c LEFT JOIN reservation_lines l ON l.order_id = c.order_id
	WHERE c.order_id = $1 AND NOT EXISTS (SELECT 1 FROM r)
) y ON true
ORDER BY y.line_no`

// inboxRecord names the event whose effect a settlement is (consumer and event id); the zero value:
// none (a call, not an event).
type inboxRecord struct{ consumer, eventID string }

func (ib inboxRecord) set() bool { return ib.consumer != "" }

func (ib inboxRecord) check() error {
	if ib.consumer == "" || ib.eventID == "" {
		return fmt.Errorf("inbox: consumer %q event %q: %w", ib.consumer, ib.eventID, errors.New("empty name or id"))
	}
	return nil
}

// peekOne answers, on PostgreSQL in one autocommit statement, a settlement that finds the work done
// or needs no stock moved: the settlement's repeated commit, the release of an OrderCancelled whose
// stock the order service's compensation already released, and (with $6) the OrderCancelled of an
// order never reserved (an out-of-stock order), which leaves a tombstone. It reads the reservation of
// order $1 with its lines; when it has the status $2 (an idempotent repeat) or the statement wrote the
// tombstone (t, at $7: $5 as a timestamp, a parameter rather than a conversion so that the statement
// has no constant of its own), and the settlement is an event's effect ($3 the consumer, $4 the event
// id, at $5; $3 empty: none), it records the event in the inbox in the same statement. A terminal status is final,
// so what the snapshot sees stays true; the tombstone's insert waits for a reserve of the order in
// flight and, if that commits, conflicts and writes nothing (the caller then releases what it
// reserved in a transaction). seen says the event was recorded before the statement (a redelivery,
// whatever the status), which writes no tombstone either. Nothing else is written: a HELD reservation
// is settled by settleOne in a transaction. The statement always returns at least one row (no
// status: no reservation, none written).
const peekOne = `WITH c AS (
	SELECT order_id, status, currency, created_at, updated_at FROM reservations WHERE order_id = $1
), seen AS (
	SELECT 1 FROM inbox WHERE consumer = $3 AND event_id = $4
), t AS (
	INSERT INTO reservations (order_id, status, currency, total_cents, created_at, updated_at)
	SELECT $1, 'RELEASED', '', 0, $7::timestamp, $7::timestamp
	WHERE $6::boolean AND NOT EXISTS (SELECT 1 FROM c) AND NOT EXISTS (SELECT 1 FROM seen)
	ON CONFLICT (order_id) DO NOTHING
	RETURNING order_id, status, currency, created_at, updated_at
), ib AS (
	INSERT INTO inbox (consumer, event_id, processed_at) SELECT $3, $4, $5::timestamptz
	WHERE $3 <> '' AND (EXISTS (SELECT 1 FROM c WHERE status = $2) OR EXISTS (SELECT 1 FROM t))
	ON CONFLICT DO NOTHING RETURNING 1
)
SELECT h.recorded, h.seen, y.written, y.status, y.currency, y.created_at, y.updated_at, y.sku, y.quantity, y.unit_price_cents
FROM (SELECT (SELECT count(*) FROM ib) AS recorded, EXISTS (SELECT 1 FROM seen) AS seen) h LEFT JOIN (
	SELECT false AS written, c.status, c.currency, c.created_at, c.updated_at, l.line_no, l.sku, l.quantity, l.unit_price_cents
	FROM c LEFT JOIN reservation_lines l ON l.order_id = c.order_id
	UNION ALL
	SELECT true, t.status, t.currency, t.created_at, t.updated_at, NULL, NULL, NULL, NULL FROM t
) y ON true
ORDER BY y.line_no`

// peekPG runs peekOne for a settlement to status to. done says it answered the call: with the
// reservation (an idempotent repeat, or the tombstone it wrote when tombstone is set; recorded in the
// inbox when ib is set), with the domain's error for the stored status, with inbox.ErrAlreadyProcessed
// for a redelivered event, or with ErrReservationNotFound when there is none and tombstone is false.
// Otherwise the caller settles in a transaction.
func (s *Store) peekPG(ctx context.Context, orderID string, to domain.Status,
	decide func(domain.Status) (domain.Transition, error), ib inboxRecord, tombstone bool,
) (r domain.Reservation, done bool, err error) {
	now := s.utcNow()
	rows, err := s.db.QueryContext(ctx, peekOne, orderID, string(to), ib.consumer, ib.eventID, now, tombstone, now)
	if err != nil {
		return domain.Reservation{}, true, fmt.Errorf("settle: %w", err)
	}
	defer rows.Close()
	r = domain.Reservation{OrderID: orderID}
	var (
		n             int
		recorded      int64
		seen, written bool
	)
	for rows.Next() {
		var (
			wr               sql.NullBool
			status, currency sql.NullString
			created, updated sql.NullTime
			sku              sql.NullString
			qty, price       sql.NullInt64
		)
		if err := rows.Scan(&recorded, &seen, &wr, &status, &currency, &created, &updated, &sku, &qty, &price); err != nil {
			return domain.Reservation{}, true, fmt.Errorf("settle: %w", err)
		}
		if !status.Valid {
			continue // no reservation, none written: the one row the statement always returns
		}
		n++
		written = wr.Bool
		r.Status, r.Currency, r.CreatedAt, r.UpdatedAt = domain.Status(status.String), currency.String, created.Time, updated.Time
		if sku.Valid {
			r.Lines = append(r.Lines, domain.Line{SKU: sku.String, Quantity: qty.Int64, UnitPriceCents: price.Int64})
		}
	}
	if err := rows.Err(); err != nil {
		return domain.Reservation{}, true, fmt.Errorf("settle: %w", err)
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	switch {
	case ib.set() && seen:
		return domain.Reservation{}, true, inbox.ErrAlreadyProcessed
	case written && ib.set() && recorded == 0:
		// A concurrent delivery of the event recorded it after this statement's snapshot, yet wrote no
		// reservation this one could see or conflict with: not expected; the tombstone is what that
		// delivery would have left.
		return domain.Reservation{}, true, inbox.ErrAlreadyProcessed
	case written:
		return r, true, nil
	case n == 0 && tombstone:
		return domain.Reservation{}, false, nil // the tombstone conflicted: a reserve committed meanwhile
	case n == 0:
		return domain.Reservation{}, true, domain.ErrReservationNotFound
	case r.Status == domain.StatusHeld:
		return domain.Reservation{}, false, nil
	case ib.set() && r.Status == to && recorded == 0:
		return domain.Reservation{}, true, inbox.ErrAlreadyProcessed
	}
	if _, err := decide(r.Status); err != nil {
		return domain.Reservation{}, true, err
	}
	return r, true, nil
}

// settlePG runs settleOne. moved says it settled the reservation (and wrote the events); otherwise r
// is the reservation as stored, or ErrReservationNotFound. With ib set, a redelivered event moves
// nothing and fails with inbox.ErrAlreadyProcessed.
func (s *Store) settlePG(ctx context.Context, tx *sql.Tx, orderID string, to domain.Status, commit bool,
	cause domain.Cause, now time.Time, ib inboxRecord) (r domain.Reservation, moved bool, err error) {
	//nolint:rowserrcheck // scanSettleOne checks rows.Err (for pgx's rows too)
	rows, err := tx.QueryContext(ctx, settleOne, orderID, string(to), now, commit, ib.consumer, ib.eventID, now)
	if err != nil {
		return domain.Reservation{}, false, fmt.Errorf("settle: %w", err)
	}
	defer rows.Close()
	r, changes, err := scanSettleOne(rows, orderID, commit, cause, now, ib)
	if err != nil || changes == nil {
		return r, false, err
	}
	if err := s.events.WriteStockChanges(ctx, tx, changes); err != nil {
		return domain.Reservation{}, false, err
	}
	return r, true, nil
}

// scanSettleOne reads settleOne's answer: the reservation, and the stock changes to write when it
// moved them (nil when not: r is then the reservation as stored); its errors are settlePG's.
func scanSettleOne(rows lineRows, orderID string, commit bool, cause domain.Cause, now time.Time, ib inboxRecord,
) (r domain.Reservation, changes []domain.StockChange, err error) {
	r = domain.Reservation{OrderID: orderID}
	levels := map[string]domain.StockLevel{}
	n := 0
	recorded := int64(0)
	moved := false
	for rows.Next() {
		var (
			mv                        sql.NullBool
			status, currency          sql.NullString
			created, updated          sql.NullTime
			lineNo                    sql.NullInt64
			sku                       sql.NullString
			qty, price                sql.NullInt64
			onHand, reserved, version sql.NullInt64
		)
		if err := rows.Scan(&recorded, &mv, &status, &currency, &created, &updated, &lineNo, &sku, &qty, &price,
			&onHand, &reserved, &version); err != nil {
			return domain.Reservation{}, nil, fmt.Errorf("settle: %w", err)
		}
		if !status.Valid {
			continue // no reservation: the one row the statement always returns
		}
		n++
		moved = mv.Bool
		r.Status, r.Currency, r.CreatedAt, r.UpdatedAt = domain.Status(status.String), currency.String, created.Time, updated.Time
		if !sku.Valid {
			continue // a tombstone: no lines
		}
		r.Lines = append(r.Lines, domain.Line{SKU: sku.String, Quantity: qty.Int64, UnitPriceCents: price.Int64})
		if moved {
			if !onHand.Valid {
				return domain.Reservation{}, nil, fmt.Errorf("settle %s: no stock moved for %s", orderID, sku.String)
			}
			levels[sku.String] = domain.StockLevel{SKU: sku.String, OnHand: onHand.Int64, Reserved: reserved.Int64,
				Version: version.Int64, UpdatedAt: now}
		}
	}
	if err := rows.Err(); err != nil {
		return domain.Reservation{}, nil, fmt.Errorf("settle: %w", err)
	}
	if ib.set() && recorded == 0 {
		return domain.Reservation{}, nil, inbox.ErrAlreadyProcessed
	}
	if n == 0 {
		return domain.Reservation{}, nil, domain.ErrReservationNotFound
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	if !moved {
		return r, nil, nil
	}
	if len(r.Lines) == 0 {
		return domain.Reservation{}, nil, fmt.Errorf("settle %s: a held reservation without lines", orderID)
	}
	needs := domain.Needs(r.Items())
	changes = make([]domain.StockChange, 0, len(needs))
	for _, need := range needs {
		delta := need.Quantity
		if commit {
			delta = 0
		}
		changes = append(changes, domain.StockChange{Level: levels[need.SKU], Delta: delta, Cause: cause, OrderID: orderID})
	}
	return r, changes, nil
}

// errSettleRaced says that settleOne found the reservation HELD in its snapshot yet could not update
// it (a concurrent settlement changed it first), or found none to release: settle's general path or
// the tombstone is the answer.
var errSettleRaced = errors.New("settle raced")

// commitPG is commitTx on PostgreSQL in a transaction of its own (settlePipelined).
func (s *Store) commitPG(ctx context.Context, orderID string, ib inboxRecord) (r domain.Reservation, done bool, err error) {
	return s.settlePipelined(ctx, orderID, domain.StatusCommitted, domain.Status.Commit, true, domain.CauseCommitted, ib)
}

// releasePG is releaseTx on PostgreSQL in a transaction of its own (settlePipelined). done false also
// when there is no reservation to release: the tombstone is the caller's (peekPG, or releaseTx).
func (s *Store) releasePG(ctx context.Context, orderID string, ib inboxRecord) (r domain.Reservation, done bool, err error) {
	return s.settlePipelined(ctx, orderID, domain.StatusReleased, domain.Status.Release, false, domain.CauseReleased, ib)
}

// settlePipelined settles a HELD reservation to status to (commit: the sale, else the release) in a
// transaction of its own, pipelined as reservePG's: [BEGIN; settleOne], then [the outbox insert;
// COMMIT] when settleOne moved the stock, [COMMIT] for an idempotent repeat (which keeps the event's
// inbox record, as settle does) and [ROLLBACK] for an error; so the product rows settleOne locks are
// held for one round trip and Go's work. done false, rolled back: settleOne lost a race to a
// concurrent settlement of the same order (its snapshot saw the reservation HELD), or a release found
// no reservation; the caller then settles in a transaction of database/sql, whose loop reads what the
// other one did (settle), or leaves the tombstone.
func (s *Store) settlePipelined(ctx context.Context, orderID string, to domain.Status,
	decide func(domain.Status) (domain.Transition, error), commit bool, cause domain.Cause, ib inboxRecord,
) (r domain.Reservation, done bool, err error) {
	now := s.utcNow()
	err = sqldb.WithPgx(ctx, s.db, func(ctx context.Context, p *sqldb.Pipeline) error {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(settleOne, orderID, string(to), now, commit, ib.consumer, ib.eventID, now)
		br := p.Send(ctx, b)
		var changes []domain.StockChange
		_, err := br.Exec()
		if err != nil {
			err = fmt.Errorf("begin: %w", err)
		} else if rows, qerr := br.Query(); qerr != nil {
			err = fmt.Errorf("settle: %w", qerr)
		} else {
			r, changes, err = scanSettleOne(rows, orderID, commit, cause, now, ib)
			rows.Close()
		}
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("settle: %w", cerr)
		}
		if !commit && errors.Is(err, domain.ErrReservationNotFound) {
			err = errSettleRaced
		}
		if err != nil {
			return rollbackAfter(ctx, p, &pgx.Batch{}, func(pgx.BatchResults) error { return err })
		}
		if changes == nil {
			t, err := decide(r.Status)
			switch {
			case err != nil:
				return rollbackAfter(ctx, p, &pgx.Batch{}, func(pgx.BatchResults) error { return err })
			case t == domain.NoOp:
				return commitAfter(ctx, p, "", nil)
			}
			return rollbackAfter(ctx, p, &pgx.Batch{}, func(pgx.BatchResults) error { return errSettleRaced })
		}
		q, args, err := s.events.StockChangesInsert(ctx, changes)
		if err != nil {
			return err
		}
		return commitAfter(ctx, p, q, args)
	})
	if errors.Is(err, errSettleRaced) {
		return domain.Reservation{}, false, nil
	}
	if err != nil {
		return domain.Reservation{}, true, err
	}
	return r, true, nil
}
