package audit_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/loadtest/audit"
	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	inventorymigrations "github.com/shopmesh/shopmesh/services/inventory/migrations"
	ordermigrations "github.com/shopmesh/shopmesh/services/order/migrations"
	paymentmigrations "github.com/shopmesh/shopmesh/services/payment/migrations"
)

// The world the tests write into the three services' real schemas: rows as the services store them.
type orderRow struct {
	id, customer, key, status string
	total                     int64
	lines                     []lineRow
}

type lineRow struct {
	sku        string
	qty, price int64
}

type reservationRow struct {
	orderID, status string
	lines           []lineRow
	created         time.Time
}

type productRow struct {
	sku                       string
	onHand, reserved, version int64
	// history is the product's StockChanged events in version order: cause and delta.
	history []stockChange
}

type stockChange struct {
	cause eventsv1.StockChangeCause
	delta int64
}

type authRow struct {
	orderID, customer, status string
	amount                    int64
	created                   time.Time
}

type ledgerRow struct {
	orderID, kind, customer string
	amount                  int64
}

type accountRow struct {
	customer      string
	balance, held int64
}

type inboxRow struct{ consumer, eventID string }

type world struct {
	orders       []orderRow
	reservations []reservationRow
	products     []productRow
	auths        []authRow
	ledger       []ledgerRow
	accounts     []accountRow
	inventoryIn  []inboxRow
	paymentIn    []inboxRow
	accepted     []string
	opening      map[string]int64
	dlqTopics    []string
	dlqSince     time.Time
}

const (
	imported  = eventsv1.StockChangeCause_STOCK_CHANGE_CAUSE_IMPORTED
	reserved  = eventsv1.StockChangeCause_STOCK_CHANGE_CAUSE_RESERVED
	released  = eventsv1.StockChangeCause_STOCK_CHANGE_CAUSE_RELEASED
	committed = eventsv1.StockChangeCause_STOCK_CHANGE_CAUSE_COMMITTED
)

// consistent is a settled shop: o1 confirmed (captured, committed), o2 cancelled (voided, released),
// o3 cancelled before anything was held (a release tombstone, a declined payment), and an import.
func consistent() *world {
	past := time.Now().UTC().Add(-time.Minute)
	return &world{
		orders: []orderRow{
			{id: "o1", customer: "cust-a", key: "k1", status: "CONFIRMED", total: 1000, lines: []lineRow{{"SKU-1", 2, 500}}},
			{id: "o2", customer: "cust-b", key: "k2", status: "CANCELLED", total: 2100, lines: []lineRow{{"SKU-2", 3, 700}}},
			{id: "o3", customer: "cust-b", key: "k3", status: "CANCELLED", total: 700, lines: []lineRow{{"SKU-2", 1, 700}}},
		},
		reservations: []reservationRow{
			{orderID: "o1", status: "COMMITTED", lines: []lineRow{{"SKU-1", 2, 500}}, created: past},
			{orderID: "o2", status: "RELEASED", lines: []lineRow{{"SKU-2", 3, 700}}, created: past},
			{orderID: "o3", status: "RELEASED", created: past}, // a tombstone
		},
		products: []productRow{
			{sku: "SKU-1", onHand: 98, reserved: 0, version: 3,
				history: []stockChange{{imported, 100}, {reserved, -2}, {committed, 0}}},
			{sku: "SKU-2", onHand: 60, reserved: 0, version: 4,
				history: []stockChange{{imported, 50}, {reserved, -3}, {released, 3}, {imported, 10}}},
		},
		auths: []authRow{
			{orderID: "o1", customer: "cust-a", status: "CAPTURED", amount: 1000, created: past},
			{orderID: "o2", customer: "cust-b", status: "VOIDED", amount: 2100, created: past},
			{orderID: "o3", customer: "cust-b", status: "DECLINED", amount: 700, created: past},
		},
		ledger: []ledgerRow{
			{"o1", "HOLD", "cust-a", 1000}, {"o1", "DEBIT", "cust-a", 1000},
			{"o2", "HOLD", "cust-b", 2100}, {"o2", "RELEASE", "cust-b", 2100},
		},
		accounts: []accountRow{{"cust-a", 99_000, 0}, {"cust-b", 50_000, 0}},
		accepted: []string{"k1", "k2", "k3", "k1"},
		opening:  map[string]int64{"cust-a": 100_000, "cust-b": 50_000},
	}
}

func (w *world) reservation(id string) *reservationRow {
	for i := range w.reservations {
		if w.reservations[i].orderID == id {
			return &w.reservations[i]
		}
	}
	panic("no reservation " + id)
}

func (w *world) product(sku string) *productRow {
	for i := range w.products {
		if w.products[i].sku == sku {
			return &w.products[i]
		}
	}
	panic("no product " + sku)
}

func (w *world) auth(id string) *authRow {
	for i := range w.auths {
		if w.auths[i].orderID == id {
			return &w.auths[i]
		}
	}
	panic("no authorization " + id)
}

func (w *world) account(c string) *accountRow {
	for i := range w.accounts {
		if w.accounts[i].customer == c {
			return &w.accounts[i]
		}
	}
	panic("no account " + c)
}

type dsns struct{ order, inventory, payment string }

// write builds the three schemas with the services' own migrations and stores w in them.
func write(t *testing.T, newDSN func(testing.TB) string, w *world) dsns {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := dsns{order: newDSN(t), inventory: newDSN(t), payment: newDSN(t)}

	dialect, err := sqldb.ParseDialect(d.order)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Migrations(dialect)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := inbox.Migrations(dialect)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		dsn   string
		apply func() error
	}{
		{d.order, func() error {
			if err := migrate.Up(ctx, d.order, ordermigrations.FS, migrate.Options{}); err != nil {
				return err
			}
			return migrate.Up(ctx, d.order, ob, migrate.Options{Table: outbox.MigrationsTable})
		}},
		{d.inventory, func() error { return migrate.UpAll(ctx, d.inventory, inventorymigrations.FS, migrate.Options{}) }},
		{d.payment, func() error {
			if err := migrate.Up(ctx, d.payment, ob, migrate.Options{Table: outbox.MigrationsTable}); err != nil {
				return err
			}
			if err := migrate.Up(ctx, d.payment, ib, migrate.Options{Table: inbox.MigrationsTable}); err != nil {
				return err
			}
			return migrate.Up(ctx, d.payment, paymentmigrations.FS, migrate.Options{})
		}},
	} {
		if err := m.apply(); err != nil {
			t.Fatalf("migrate %s: %v", m.dsn, err)
		}
	}

	now := time.Now().UTC()
	exec(t, d.order, func(x execer) {
		for _, o := range w.orders {
			x(`INSERT INTO orders (id, customer_id, idempotency_key, status, total_cents, currency, version, created_at, updated_at, lease_until)
				VALUES (?, ?, ?, ?, ?, 'EUR', 1, ?, ?, 0)`, o.id, o.customer, o.key, o.status, o.total, now.UnixMicro(), now.UnixMicro())
			for i, l := range o.lines {
				x(`INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents, line_total_cents) VALUES (?, ?, ?, ?, ?, ?)`,
					o.id, i+1, l.sku, l.qty, l.price, l.qty*l.price)
			}
		}
	})
	exec(t, d.inventory, func(x execer) {
		for _, p := range w.products {
			x(`INSERT INTO products (sku, name, price_cents, currency, on_hand, reserved, version, updated_at)
				VALUES (?, ?, 100, 'EUR', ?, ?, ?, ?)`, p.sku, "product "+p.sku, p.onHand, p.reserved, p.version, now)
			for i, h := range p.history {
				ev := &eventsv1.StockChanged{EventId: uuid.NewString(), Sku: p.sku, AggregateVersion: int64(i + 1), Delta: h.delta, Cause: h.cause}
				payload, err := proto.Marshal(ev)
				if err != nil {
					t.Fatal(err)
				}
				x(`INSERT INTO outbox (event_id, topic, msg_key, payload, headers, created_at) VALUES (?, 'shopmesh.inventory.events', ?, ?, '{}', ?)`,
					ev.GetEventId(), p.sku, payload, now)
			}
		}
		for _, r := range w.reservations {
			x(`INSERT INTO reservations (order_id, status, currency, total_cents, created_at, updated_at) VALUES (?, ?, 'EUR', 0, ?, ?)`,
				r.orderID, r.status, r.created, r.created)
			for i, l := range r.lines {
				x(`INSERT INTO reservation_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES (?, ?, ?, ?, ?)`,
					r.orderID, i+1, l.sku, l.qty, l.price)
			}
		}
		for _, in := range w.inventoryIn {
			x(`INSERT INTO inbox (consumer, event_id, processed_at) VALUES (?, ?, ?)`, in.consumer, in.eventID, now)
		}
	})
	exec(t, d.payment, func(x execer) {
		for _, a := range w.accounts {
			x(`INSERT INTO accounts (customer_id, balance_cents, held_cents, currency, created_at, updated_at) VALUES (?, ?, ?, 'EUR', ?, ?)`,
				a.customer, a.balance, a.held, now, now)
		}
		for _, a := range w.auths {
			x(`INSERT INTO authorizations (order_id, customer_id, amount_cents, currency, status, version, created_at, updated_at)
				VALUES (?, ?, ?, 'EUR', ?, 1, ?, ?)`, a.orderID, a.customer, a.amount, a.status, a.created, a.created)
		}
		for _, e := range w.ledger {
			x(`INSERT INTO ledger_entries (order_id, kind, customer_id, amount_cents, created_at) VALUES (?, ?, ?, ?, ?)`,
				e.orderID, e.kind, e.customer, e.amount, now)
		}
		for _, in := range w.paymentIn {
			x(`INSERT INTO inbox (consumer, event_id, processed_at) VALUES (?, ?, ?)`, in.consumer, in.eventID, now)
		}
	})
	return d
}

type execer func(query string, args ...any)

func exec(t *testing.T, dsn string, fn func(x execer)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, d := sqldbtest.Open(t, dsn)
	err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		var err error
		fn(func(q string, args ...any) {
			if err != nil {
				return
			}
			if _, e := tx.ExecContext(ctx, d.Rebind(q), args...); e != nil {
				err = fmt.Errorf("%s: %w", strings.Fields(q)[2], e)
			}
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func runAudit(t *testing.T, d dsns, w *world, brokers ...string) audit.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// SQLite DSNs go in as plain paths, as the campaign passes them.
	plain := func(dsn string) string { return strings.TrimPrefix(dsn, "sqlite:") }
	r, err := audit.Run(ctx, audit.Config{
		Order: plain(d.order), Inventory: plain(d.inventory), Payment: plain(d.payment),
		Kafka: brokers, DLQTopics: w.dlqTopics, DLQSince: w.dlqSince, AcceptedKeys: w.accepted, OpeningBalances: w.opening,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r.Line())
	for _, v := range r.Violations {
		t.Log("  ", v)
	}
	for _, n := range r.Notes {
		t.Log("  note:", n)
	}
	return r
}

func TestConsistentShopIsOK(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			w := consistent()
			r := runAudit(t, write(t, b.DSN, w), w)
			if !r.OK() {
				t.Fatalf("a consistent shop fails the audit: %s\n%s", r.Line(), strings.Join(r.Violations, "\n"))
			}
			want := "audit: 3 orders (1 confirmed, 2 cancelled, 0 pending); lost 0, duplicated 0, stuck 0; DLQ 0 (0 unaccounted)"
			if r.Line() != want {
				t.Errorf("Line() = %q, want %q", r.Line(), want)
			}
			if r.Accounts != 2 || r.SKUs != 2 || len(r.Notes) != 0 {
				t.Errorf("coverage: %d accounts, %d SKUs, notes %v; want 2, 2, none", r.Accounts, r.SKUs, r.Notes)
			}
		})
	}
}

// Each case breaks one invariant of the consistent shop; the audit must fail and say why.
func TestBrokenInvariantsAreReported(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		break_ func(w *world)
		check  func(t *testing.T, r audit.Report)
		// violation is a fragment one of the violation lines must contain.
		violation string
	}{
		{
			name: "confirmed order never captured",
			break_: func(w *world) {
				w.auth("o1").status = "AUTHORIZED"
				w.ledger = append(w.ledger[:1], w.ledger[2:]...) // no DEBIT
				a := w.account("cust-a")
				a.balance, a.held = 100_000, 1000
			},
			check: func(t *testing.T, r audit.Report) {
				if r.Stuck != 1 || r.HeldCents != 1000 || r.Confirmed != 1 {
					t.Errorf("stuck %d, held %d cents, confirmed %d; want 1, 1000, 1", r.Stuck, r.HeldCents, r.Confirmed)
				}
			},
			violation: "stuck: confirmed order o1: 1000 cents authorized, never captured (money held)",
		},
		{
			name: "confirmed order whose stock was never committed",
			break_: func(w *world) {
				w.reservation("o1").status = "HELD"
				p := w.product("SKU-1")
				p.onHand, p.reserved, p.version, p.history = 100, 2, 2, p.history[:2]
			},
			check: func(t *testing.T, r audit.Report) {
				if r.Stuck != 1 || r.HeldUnits != 2 {
					t.Errorf("stuck %d, held %d units; want 1, 2", r.Stuck, r.HeldUnits)
				}
			},
			violation: "stuck: confirmed order o1: reservation HELD, never committed (2 units held)",
		},
		{
			name: "duplicate order for one key",
			break_: func(w *world) {
				w.orders = append(w.orders, orderRow{id: "o4", customer: "cust-a", key: "k2", status: "CANCELLED", total: 700,
					lines: []lineRow{{"SKU-2", 1, 700}}})
			},
			check: func(t *testing.T, r audit.Report) {
				if r.Duplicated != 1 || r.Orders != 4 {
					t.Errorf("duplicated %d of %d orders; want 1 of 4", r.Duplicated, r.Orders)
				}
			},
			violation: `duplicated: accepted idempotency key "k2" names 2 orders`,
		},
		{
			name:   "accepted order missing",
			break_: func(w *world) { w.accepted = append(w.accepted, "k-gone") },
			check: func(t *testing.T, r audit.Report) {
				if r.Lost != 1 {
					t.Errorf("lost %d, want 1", r.Lost)
				}
			},
			violation: `lost: accepted idempotency key "k-gone" has no order`,
		},
		{
			name: "pending order",
			break_: func(w *world) {
				w.orders = append(w.orders, orderRow{id: "o5", customer: "cust-a", key: "k5", status: "PENDING", total: 500,
					lines: []lineRow{{"SKU-1", 1, 500}}})
				w.accepted = append(w.accepted, "k5")
				w.reservations = append(w.reservations, reservationRow{orderID: "o5", status: "HELD", lines: []lineRow{{"SKU-1", 1, 500}}, created: time.Now().UTC()})
				p := w.product("SKU-1")
				p.reserved, p.version, p.history = 1, 4, append(p.history, stockChange{reserved, -1})
				w.auths = append(w.auths, authRow{orderID: "o5", customer: "cust-a", status: "AUTHORIZED", amount: 500, created: time.Now().UTC()})
				w.ledger = append(w.ledger, ledgerRow{"o5", "HOLD", "cust-a", 500})
				w.account("cust-a").held = 500
			},
			check: func(t *testing.T, r audit.Report) {
				if r.Pending != 1 || r.Stuck != 1 || r.HeldCents != 0 || r.HeldUnits != 0 {
					t.Errorf("pending %d, stuck %d, held %d cents %d units; want 1, 1, 0, 0 (holds of a pending order are not left-overs)",
						r.Pending, r.Stuck, r.HeldCents, r.HeldUnits)
				}
			},
			violation: "stuck: order o5 is PENDING (reservation HELD, payment AUTHORIZED)",
		},
		{
			name: "hold left on a cancelled order",
			break_: func(w *world) {
				w.reservation("o2").status = "HELD"
				p := w.product("SKU-2")
				p.reserved, p.version, p.history = 3, 3, []stockChange{{imported, 50}, {reserved, -3}, {imported, 10}}
				w.auth("o2").status = "AUTHORIZED"
				w.ledger = w.ledger[:3] // no RELEASE
				w.account("cust-b").held = 2100
			},
			check: func(t *testing.T, r audit.Report) {
				if r.Stuck != 1 || r.HeldUnits != 3 || r.HeldCents != 2100 {
					t.Errorf("stuck %d, held %d units %d cents; want 1, 3, 2100", r.Stuck, r.HeldUnits, r.HeldCents)
				}
			},
			violation: "stuck: cancelled order o2: reservation HELD, never released (3 units held)",
		},
		{
			name:      "cancelled order charged",
			break_:    func(w *world) { w.auth("o2").status = "CAPTURED" },
			violation: "cancelled order o2 was charged: 2100 cents captured",
		},
		{
			name:      "money that does not add up",
			break_:    func(w *world) { w.account("cust-a").balance = 98_000 },
			violation: "money: account cust-a: balance 98000 + captured 1000 = 99000, opening balance 100000 (-1000)",
		},
		{
			name:      "a hold the account lost",
			break_:    func(w *world) { w.account("cust-b").held = 700 },
			violation: "money: account cust-b holds 700 cents, its open authorizations 0",
		},
		{
			name:      "stock that does not add up",
			break_:    func(w *world) { w.product("SKU-1").onHand = 97 },
			violation: "stock: SKU-1: on hand 97 + committed 2 = 99, seeded + imported 100 (-1)",
		},
		{
			name: "reserved units nobody holds",
			break_: func(w *world) {
				w.product("SKU-2").reserved = 4
			},
			violation: "stock: SKU-2 has 4 reserved, its HELD reservations 0",
		},
		{
			name: "committed lines that are not the order's",
			break_: func(w *world) {
				w.reservation("o1").lines = []lineRow{{"SKU-1", 1, 500}, {"SKU-2", 1, 700}}
			},
			violation: "order o1: reserved 1×SKU-1 1×SKU-2, ordered 2×SKU-1",
		},
		{
			name: "hold of an order that does not exist",
			break_: func(w *world) {
				w.auths = append(w.auths, authRow{orderID: "ghost", customer: "cust-a", status: "AUTHORIZED", amount: 300,
					created: time.Now().UTC().Add(-time.Hour)})
				w.ledger = append(w.ledger, ledgerRow{"ghost", "HOLD", "cust-a", 300})
				w.account("cust-a").held = 300
			},
			violation: "payment authorization of unknown order ghost (AUTHORIZED, 300 cents of cust-a)",
		},
	}
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range cases {
				t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
					t.Parallel()
					w := consistent()
					tc.break_(w)
					r := runAudit(t, write(t, b.DSN, w), w)
					if r.OK() {
						t.Fatalf("the audit passed a shop with a %s: %s", tc.name, r.Line())
					}
					if !hasViolation(r, tc.violation) {
						t.Errorf("no violation contains %q; got:\n%s", tc.violation, strings.Join(r.Violations, "\n"))
					}
					if tc.check != nil {
						tc.check(t, r)
					}
				})
			}
		})
	}
}

func hasViolation(r audit.Report, fragment string) bool {
	for _, v := range r.Violations {
		if strings.Contains(v, fragment) {
			return true
		}
	}
	return false
}

// An order created after the order database was read has a reservation and an authorization the
// snapshot cannot explain: they are skipped, not reported.
func TestOrdersAfterTheSnapshotAreIgnored(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			w := consistent()
			later := time.Now().UTC().Add(time.Hour)
			w.reservations = append(w.reservations, reservationRow{orderID: "o-new", status: "HELD", lines: []lineRow{{"SKU-1", 1, 500}}, created: later})
			p := w.product("SKU-1")
			p.reserved, p.version, p.history = 1, 4, append(p.history, stockChange{reserved, -1})
			w.auths = append(w.auths, authRow{orderID: "o-new", customer: "cust-a", status: "AUTHORIZED", amount: 500, created: later})
			w.ledger = append(w.ledger, ledgerRow{"o-new", "HOLD", "cust-a", 500})
			w.account("cust-a").held = 500
			r := runAudit(t, write(t, b.DSN, w), w)
			if !r.OK() || r.DownstreamIgnored != 2 {
				t.Fatalf("OK %v, downstream ignored %d; want true, 2: %v", r.OK(), r.DownstreamIgnored, r.Violations)
			}
		})
	}
}

// A stock history purged from the outbox cannot prove conservation: the audit says so in a note and
// still checks what it can.
func TestPurgedStockHistoryIsANote(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			w := consistent()
			w.product("SKU-1").history = nil
			r := runAudit(t, write(t, b.DSN, w), w)
			if !r.OK() || len(r.Notes) != 1 {
				t.Fatalf("OK %v, notes %v; want true and one note", r.OK(), r.Notes)
			}
		})
	}
}
