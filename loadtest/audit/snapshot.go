package audit

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

// The queries name only the columns the audit needs, so columns other services add later change nothing.

type line struct {
	sku string
	qty int64
}

type order struct {
	id, customer, key, status string
	total                     int64
	lines                     []line
}

type orderSnap struct {
	orders []order
	byID   map[string]*order
	twice  []string
}

type reservation struct {
	orderID, status string
	created         time.Time
	lines           []line
}

type product struct {
	sku                       string
	onHand, reserved, version int64
}

type stockEvent struct {
	id             string
	version, delta int64
	cause          eventsv1.StockChangeCause
}

type inventorySnap struct {
	products     []product
	reservations map[string]*reservation
	// events are the StockChanged events still in the outbox (and, with Config.Kafka, on inventory's
	// topic), per SKU.
	events map[string][]stockEvent
	// applied holds the event ids of inbox rows, per consumer, among those asked for.
	applied map[string]map[string]bool
	// twice lists order ids found more than once where there must be one row per order.
	twice []string
}

type account struct {
	customer      string
	balance, held int64
}

type authorization struct {
	orderID, customer, status string
	amount                    int64
	created                   time.Time
}

type entry struct {
	orderID, kind, customer string
	amount                  int64
}

type paymentSnap struct {
	accounts []account
	auths    map[string]*authorization
	entries  []entry
	applied  map[string]map[string]bool
	twice    []string
}

// database is one service's database, read in one read-only transaction (a single snapshot).
type database struct {
	db       *sql.DB
	tx       *sql.Tx
	postgres bool
}

func openSnapshot(ctx context.Context, dsn string) (*database, error) {
	d := &database{}
	var err error
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		d.postgres = true
		if d.db, err = sql.Open("pgx", dsn); err != nil {
			return nil, err
		}
		d.db.SetMaxOpenConns(1)
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
		path, _, _ = strings.Cut(strings.TrimPrefix(path, "//"), "?")
		if _, err := os.Stat(path); err != nil {
			return nil, err // mode=ro would say "unable to open database file"
		}
		// Read-only: SQLite refuses every write on this connection; a deferred BEGIN takes no lock, and
		// in WAL mode the services keep writing while the snapshot is read.
		if d.db, err = sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)"); err != nil {
			return nil, err
		}
		d.db.SetMaxOpenConns(1)
	}
	opts := &sql.TxOptions{ReadOnly: true}
	if d.postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	if d.tx, err = d.db.BeginTx(ctx, opts); err != nil {
		_ = d.db.Close()
		return nil, fmt.Errorf("begin read-only transaction: %w", err)
	}
	return d, nil
}

func (d *database) close() {
	_ = d.tx.Rollback()
	_ = d.db.Close()
}

// each runs query and calls scan once per row.
func (d *database) each(ctx context.Context, query string, args []any, scan func(*sql.Rows) error) error {
	if d.postgres {
		n := 0
		query = rebindDollar(query, &n)
	}
	rows, err := d.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", firstWords(query), err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("%s: %w", firstWords(query), err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", firstWords(query), err)
	}
	return nil
}

func rebindDollar(q string, n *int) string {
	var b strings.Builder
	for _, c := range q {
		if c == '?' {
			*n++
			fmt.Fprintf(&b, "$%d", *n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func firstWords(q string) string {
	f := strings.Fields(q)
	return strings.Join(f[:min(len(f), 6)], " ")
}

func readOrders(ctx context.Context, dsn string) (orderSnap, error) {
	d, err := openSnapshot(ctx, dsn)
	if err != nil {
		return orderSnap{}, err
	}
	defer d.close()
	s := orderSnap{byID: map[string]*order{}}
	err = d.each(ctx, `SELECT id, customer_id, COALESCE(idempotency_key, ''), status, total_cents FROM orders ORDER BY created_at, id`, nil,
		func(r *sql.Rows) error {
			var o order
			if err := r.Scan(&o.id, &o.customer, &o.key, &o.status, &o.total); err != nil {
				return err
			}
			s.orders = append(s.orders, o)
			return nil
		})
	if err != nil {
		return orderSnap{}, err
	}
	for i := range s.orders {
		s.byID[s.orders[i].id] = &s.orders[i]
	}
	err = d.each(ctx, `SELECT order_id, sku, quantity FROM order_lines ORDER BY order_id, line_no`, nil, func(r *sql.Rows) error {
		var (
			id string
			l  line
		)
		if err := r.Scan(&id, &l.sku, &l.qty); err != nil {
			return err
		}
		if o := s.byID[id]; o != nil {
			o.lines = append(o.lines, l)
		}
		return nil
	})
	if len(s.byID) != len(s.orders) {
		s.twice = append(s.twice, fmt.Sprintf("orders: %d rows, %d ids", len(s.orders), len(s.byID)))
	}
	return s, err
}

func readInventory(ctx context.Context, dsn string, eventIDs []string) (inventorySnap, error) {
	d, err := openSnapshot(ctx, dsn)
	if err != nil {
		return inventorySnap{}, err
	}
	defer d.close()
	s := inventorySnap{reservations: map[string]*reservation{}, events: map[string][]stockEvent{}}
	err = d.each(ctx, `SELECT sku, on_hand, reserved, version FROM products ORDER BY sku`, nil, func(r *sql.Rows) error {
		var p product
		if err := r.Scan(&p.sku, &p.onHand, &p.reserved, &p.version); err != nil {
			return err
		}
		s.products = append(s.products, p)
		return nil
	})
	if err != nil {
		return inventorySnap{}, err
	}
	err = d.each(ctx, `SELECT order_id, status, created_at FROM reservations`, nil, func(r *sql.Rows) error {
		var v reservation
		if err := r.Scan(&v.orderID, &v.status, &v.created); err != nil {
			return err
		}
		v.created = v.created.UTC()
		if s.reservations[v.orderID] != nil {
			s.twice = append(s.twice, "reservations: order "+v.orderID)
		}
		s.reservations[v.orderID] = &v
		return nil
	})
	if err != nil {
		return inventorySnap{}, err
	}
	err = d.each(ctx, `SELECT order_id, sku, quantity FROM reservation_lines ORDER BY order_id, line_no`, nil, func(r *sql.Rows) error {
		var (
			id string
			l  line
		)
		if err := r.Scan(&id, &l.sku, &l.qty); err != nil {
			return err
		}
		if v := s.reservations[id]; v != nil {
			v.lines = append(v.lines, l)
		}
		return nil
	})
	if err != nil {
		return inventorySnap{}, err
	}
	// The stock history: every StockChanged event inventory wrote, as long as the outbox keeps it.
	err = d.each(ctx, `SELECT payload FROM outbox WHERE topic = ?`, []any{inventoryTopic}, func(r *sql.Rows) error {
		var payload []byte
		if err := r.Scan(&payload); err != nil {
			return err
		}
		var ev eventsv1.StockChanged
		if err := proto.Unmarshal(payload, &ev); err != nil || ev.GetSku() == "" {
			return nil //nolint:nilerr // not a StockChanged event: skipped, not a failure
		}
		s.events[ev.GetSku()] = append(s.events[ev.GetSku()], stockEvent{
			id: ev.GetEventId(), version: ev.GetAggregateVersion(), delta: ev.GetDelta(), cause: ev.GetCause(),
		})
		return nil
	})
	if err != nil {
		return inventorySnap{}, err
	}
	s.applied, err = readInbox(ctx, d, eventIDs)
	return s, err
}

func readPayment(ctx context.Context, dsn string, eventIDs []string) (paymentSnap, error) {
	d, err := openSnapshot(ctx, dsn)
	if err != nil {
		return paymentSnap{}, err
	}
	defer d.close()
	s := paymentSnap{auths: map[string]*authorization{}}
	err = d.each(ctx, `SELECT customer_id, balance_cents, held_cents FROM accounts ORDER BY customer_id`, nil, func(r *sql.Rows) error {
		var a account
		if err := r.Scan(&a.customer, &a.balance, &a.held); err != nil {
			return err
		}
		s.accounts = append(s.accounts, a)
		return nil
	})
	if err != nil {
		return paymentSnap{}, err
	}
	err = d.each(ctx, `SELECT order_id, customer_id, amount_cents, status, created_at FROM authorizations`, nil, func(r *sql.Rows) error {
		var a authorization
		if err := r.Scan(&a.orderID, &a.customer, &a.amount, &a.status, &a.created); err != nil {
			return err
		}
		a.created = a.created.UTC()
		if s.auths[a.orderID] != nil {
			s.twice = append(s.twice, "authorizations: order "+a.orderID)
		}
		s.auths[a.orderID] = &a
		return nil
	})
	if err != nil {
		return paymentSnap{}, err
	}
	err = d.each(ctx, `SELECT order_id, kind, customer_id, amount_cents FROM ledger_entries ORDER BY order_id, kind`, nil, func(r *sql.Rows) error {
		var e entry
		if err := r.Scan(&e.orderID, &e.kind, &e.customer, &e.amount); err != nil {
			return err
		}
		s.entries = append(s.entries, e)
		return nil
	})
	if err != nil {
		return paymentSnap{}, err
	}
	s.applied, err = readInbox(ctx, d, eventIDs)
	return s, err
}

// readInbox returns which of ids the database's inbox has, per consumer.
func readInbox(ctx context.Context, d *database, ids []string) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	const chunk = 200
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		q := `SELECT consumer, event_id FROM inbox WHERE event_id IN (?` + strings.Repeat(", ?", len(part)-1) + `)`
		err := d.each(ctx, q, args, func(r *sql.Rows) error {
			var consumer, id string
			if err := r.Scan(&consumer, &id); err != nil {
				return err
			}
			if out[consumer] == nil {
				out[consumer] = map[string]bool{}
			}
			out[consumer][id] = true
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
