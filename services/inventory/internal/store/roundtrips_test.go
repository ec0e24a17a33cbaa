package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// roundTrips counts the statements (sql.exec, sql.query; BEGIN, COMMIT and ROLLBACK not included),
// transactions (sql.begin, or a BEGIN) and round trips (every span: one statement each, or one
// pipeline, sql.batch, whose statements its db.query.text lists) fn sends, from the spans of a traced
// connection pool.
type roundTrips struct {
	spans *tracetest.InMemoryExporter
	tp    *sdktrace.TracerProvider
}

type counts struct{ statements, transactions, roundTrips int }

func (r roundTrips) count(t *testing.T, fn func(ctx context.Context)) (n counts) {
	t.Helper()
	r.spans.Reset()
	c, root := r.tp.Tracer("test").Start(ctx(t), "op")
	fn(c)
	root.End()
	for _, s := range r.spans.GetSpans() {
		if s.Name == "op" {
			continue
		}
		n.roundTrips++
		switch s.Name {
		case "sql.exec", "sql.query":
			n.statements++
		case "sql.begin":
			n.transactions++
		case "sql.batch":
			for _, a := range s.Attributes {
				if a.Key != "db.query.text" {
					continue
				}
				for _, q := range strings.Split(a.Value.AsString(), ";\n") {
					switch q {
					case "BEGIN":
						n.transactions++
					case "COMMIT", "ROLLBACK":
					default:
						n.statements++
					}
				}
			}
		}
	}
	return n
}

// check fails t unless step's counts n are want.
func (n counts) check(t *testing.T, step string, want counts) {
	t.Helper()
	if n != want {
		t.Errorf("%s: %d statements in %d transactions and %d round trips, want %d in %d and %d", step,
			n.statements, n.transactions, n.roundTrips, want.statements, want.transactions, want.roundTrips)
	}
}

// tracedStore is a store on a fresh, migrated PostgreSQL schema with ps seeded, through a pool of opts
// whose statements rt counts.
func tracedStore(t *testing.T, opts sqldb.Options, ps ...domain.Product) (*store.Store, roundTrips) {
	t.Helper()
	dsn := sqldbtest.Postgres(t)
	_, _ = storetest.Open(t, dsn) // migrates
	rt := roundTrips{spans: tracetest.NewInMemoryExporter()}
	rt.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(rt.spans))
	opts.TracerProvider = rt.tp
	db, d, err := sqldb.Open(ctx(t), dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
	if _, err := s.Seed(ctx(t), ps); err != nil {
		t.Fatal(err)
	}
	return s, rt
}

// On PostgreSQL the order path's stock changes are one statement each, plus the outbox insert: a
// first-time Reserve and the Commit that OrderConfirmed causes (its inbox record is part of the
// settling statement) cost one transaction of two statements each, whatever the number of SKUs. The
// StockChanged events carry the levels after the change, which only the database knows when it makes
// it, so their insert stays a second statement of the transaction. Settlements that find the work done
// — the order service's later commit of every confirmed order, an OrderCancelled whose stock the
// compensation released already — are one statement outside any transaction (no BEGIN/COMMIT), and so
// is the OrderCancelled of an order never reserved (its tombstone); a redelivered event is one
// statement, the order service's release of an order never reserved two: the pipelined transaction
// that finds nothing and rolls back, then the tombstone's statement.
// (Before issue 20's second round: the event-driven commit 3 statements; the settlement's repeat 1
// statement in a transaction; the OrderCancelled after the compensation 2 in a transaction, before the
// reserve 3. Before its
// first round: Reserve 5 statements with one SKU, 7 with two; the commit or release 6 with one SKU, 7
// with two; the repeat 3; the tombstone 3.)
// The statement counts are the figures docs/BENCHMARKS.md reports per order. Round trips count BEGIN
// and COMMIT too: the transactions of a Reserve and of the commit OrderConfirmed causes are two,
// pipelined, [BEGIN; reserveOne or settleOne] and [the outbox insert; COMMIT] (before: four, one per
// statement), a release's two too (before: four, BEGIN, settleOne, the outbox insert, COMMIT; the
// tombstone's three instead of four), and a redelivered OrderConfirmed's two, [BEGIN; settleOne] and
// [ROLLBACK] (before: three).
func TestOrderPathStatementsOnPostgres(t *testing.T) {
	t.Parallel()
	s, rt := tracedStore(t, sqldb.Options{},
		domain.Product{SKU: "SKU-0001", Name: "Cup", PriceCents: 199, Currency: "EUR", OnHand: 10},
		domain.Product{SKU: "SKU-0002", Name: "Mug", PriceCents: 1500, Currency: "EUR", OnHand: 5})
	items := []domain.Item{{SKU: "SKU-0002", Quantity: 1}, {SKU: "SKU-0001", Quantity: 2}}
	for _, step := range []struct {
		name string
		fn   func(ctx context.Context) error
		want counts
	}{
		{"reserve", func(c context.Context) error { _, err := s.Reserve(c, orderID(1), items); return err }, counts{2, 1, 2}},
		{"commit once", func(c context.Context) error { return s.CommitOnce(c, "inventory", "ev-1", orderID(1)) }, counts{2, 1, 2}},
		{"reserve other", func(c context.Context) error { _, err := s.Reserve(c, orderID(2), items[:1]); return err }, counts{2, 1, 2}},
		// OrderCancelled before the compensation: the look that finds the reservation HELD, then the
		// pipelined transaction.
		{"release once", func(c context.Context) error { return s.ReleaseOnce(c, "inventory", "ev-2", orderID(2)) }, counts{3, 1, 3}},
		// The compensation released first (payment declined), then OrderCancelled comes.
		{"reserve third", func(c context.Context) error { _, err := s.Reserve(c, orderID(4), items[:1]); return err }, counts{2, 1, 2}},
		{"release", func(c context.Context) error { _, err := s.Release(c, orderID(4)); return err }, counts{2, 1, 2}},
		{"release once after release", func(c context.Context) error {
			return s.ReleaseOnce(c, "inventory", "ev-4", orderID(4))
		}, counts{1, 0, 1}},
		// The order service's settlement commits again later: the repeat reads what settleOne returns.
		{"commit again", func(c context.Context) error {
			r, err := s.Commit(c, orderID(1))
			if err == nil && (r.Status != domain.StatusCommitted || len(r.Lines) != 2 || r.Lines[0] != (domain.Line{SKU: "SKU-0002", Quantity: 1, UnitPriceCents: 1500})) {
				t.Errorf("commit again = %+v", r)
			}
			return err
		}, counts{1, 0, 1}},
		// A release that overtook its reserve (or an order never reserved) leaves a tombstone: the
		// pipelined transaction finds nothing and rolls back, one statement writes the tombstone.
		{"release before reserve", func(c context.Context) error {
			r, err := s.Release(c, orderID(3))
			if err == nil && !r.Tombstone() {
				t.Errorf("release unknown = %+v, want a tombstone", r)
			}
			return err
		}, counts{2, 1, 3}},
		// OrderCancelled of an order never reserved (out of stock): the tombstone and the inbox record
		// in the look's statement.
		{"release once before reserve", func(c context.Context) error {
			return s.ReleaseOnce(c, "inventory", "ev-5", orderID(5))
		}, counts{1, 0, 1}},
	} {
		var err error
		got := rt.count(t, func(c context.Context) { err = step.fn(c) })
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got.check(t, step.name, step.want)
	}
	// A repeated event is one statement: the settling statement, whose inbox record conflicts, rolled
	// back; or the look, when it finds the work done.
	for _, repeat := range []struct {
		name string
		fn   func(c context.Context) error
		tx   int
		rts  int
	}{
		{"OrderConfirmed", func(c context.Context) error { return s.CommitOnce(c, "inventory", "ev-1", orderID(1)) }, 1, 2},
		{"OrderCancelled", func(c context.Context) error { return s.ReleaseOnce(c, "inventory", "ev-4", orderID(4)) }, 0, 1},
	} {
		got := rt.count(t, func(c context.Context) {
			if err := repeat.fn(c); !errors.Is(err, inbox.ErrAlreadyProcessed) {
				t.Errorf("repeated %s: %v", repeat.name, err)
			}
		})
		if got.statements != 1 || got.transactions != repeat.tx || got.roundTrips != repeat.rts {
			t.Errorf("repeated %s: %d statements in %d transactions and %d round trips, want 1 in %d and %d", repeat.name,
				got.statements, got.transactions, got.roundTrips, repeat.tx, repeat.rts)
		}
	}
}

// Every answer of Reserve on PostgreSQL is two round trips: the ones that write nothing end the
// transaction with a ROLLBACK sent with the reads the answer needs (the stored reservation; the
// product out of stock) or alone (mixed currencies). On a pool of one connection, each step runs on
// the connection the one before left, so none leaves a transaction open; and a failed reserve holds
// nothing. (Before: the repeat 5 round trips, out of stock 4, mixed currencies 3.)
func TestReserveRoundTripsOnPostgres(t *testing.T) {
	t.Parallel()
	s, rt := tracedStore(t, sqldb.Options{MaxOpenConns: 1},
		domain.Product{SKU: "SKU-0001", Name: "Cup", PriceCents: 199, Currency: "EUR", OnHand: 10},
		domain.Product{SKU: "SKU-0002", Name: "Mug", PriceCents: 1500, Currency: "EUR", OnHand: 5},
		domain.Product{SKU: "USD-0001", Name: "Cap", PriceCents: 900, Currency: "USD", OnHand: 5})
	items := []domain.Item{{SKU: "SKU-0002", Quantity: 1}, {SKU: "SKU-0001", Quantity: 2}}
	first, err := s.Reserve(ctx(t), orderID(1), items)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name    string
		orderID string
		items   []domain.Item
		ok      func(domain.Reservation, error) bool
		want    counts
	}{
		{"first", orderID(2), items[:1], func(_ domain.Reservation, err error) bool { return err == nil }, counts{2, 1, 2}},
		{"repeat", orderID(1), items, func(r domain.Reservation, err error) bool {
			return err == nil && r.Status == domain.StatusHeld && r.Total() == first.Total() && r.SameItems(items)
		}, counts{3, 1, 2}},
		{"other items", orderID(1), items[:1], func(_ domain.Reservation, err error) bool {
			return errors.Is(err, domain.ErrReservationMismatch)
		}, counts{3, 1, 2}},
		{"out of stock", orderID(3), []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "SKU-0002", Quantity: 5}}, func(_ domain.Reservation, err error) bool {
			var se *domain.StockError
			return errors.Is(err, domain.ErrOutOfStock) && errors.As(err, &se) && se.SKU == "SKU-0002" && se.Available == 3 && se.Requested == 5
		}, counts{2, 1, 2}},
		{"unknown product", orderID(4), []domain.Item{{SKU: "NOPE-1", Quantity: 1}}, func(_ domain.Reservation, err error) bool {
			var se *domain.StockError
			return errors.Is(err, domain.ErrUnknownProduct) && errors.As(err, &se) && se.SKU == "NOPE-1"
		}, counts{2, 1, 2}},
		{"mixed currencies", orderID(5), []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "USD-0001", Quantity: 1}}, func(_ domain.Reservation, err error) bool {
			return errors.Is(err, domain.ErrMixedCurrency)
		}, counts{1, 1, 2}},
		{"after the failures", orderID(6), items, func(_ domain.Reservation, err error) bool { return err == nil }, counts{2, 1, 2}},
	} {
		var (
			r   domain.Reservation
			err error
		)
		got := rt.count(t, func(c context.Context) { r, err = s.Reserve(c, step.orderID, step.items) })
		if !step.ok(r, err) {
			t.Errorf("%s: Reserve = %+v, %v", step.name, r, err)
		}
		got.check(t, step.name, step.want)
	}
	for _, id := range []string{orderID(3), orderID(4), orderID(5)} {
		if _, err := s.Reservation(ctx(t), id); !errors.Is(err, domain.ErrReservationNotFound) {
			t.Errorf("failed reserve %s left a reservation: %v", id, err)
		}
	}
	// Held: order 1's 1 and 2, order 2's 1, order 6's 1 and 2.
	for sku, want := range map[string]int64{"SKU-0001": 4, "SKU-0002": 3, "USD-0001": 0} {
		p, err := s.Product(ctx(t), sku)
		if err != nil || p.Reserved != want {
			t.Errorf("%s: reserved %d, %v; want %d", sku, p.Reserved, err, want)
		}
	}
}
