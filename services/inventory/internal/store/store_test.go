package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// The contract suite: every test runs on SQLite and, when DATABASE_URL is set, on PostgreSQL.
func forEachBackend(t *testing.T, test func(t *testing.T, env *env)) {
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db, d := storetest.Open(t, b.DSN(t))
			s := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
			env := &env{store: s, db: db, d: d, received: map[string]int64{}}
			env.seed(t, []domain.Product{
				{SKU: "SKU-0001", Name: "Cup", PriceCents: 199, Currency: "EUR", OnHand: 10},
				{SKU: "SKU-0002", Name: "Mug", PriceCents: 1500, Currency: "EUR", OnHand: 5},
				{SKU: "USD-0001", Name: "Pot", PriceCents: 3000, Currency: "USD", OnHand: 5},
			})
			test(t, env)
			storetest.CheckConserved(t, db, env.received)
		})
	}
}

type env struct {
	store    *store.Store
	db       *sql.DB
	d        sqldb.Dialect
	received map[string]int64
}

func (e *env) seed(t *testing.T, ps []domain.Product) {
	t.Helper()
	n, err := e.store.Seed(ctx(t), ps)
	if err != nil || n != len(ps) {
		t.Fatalf("Seed = %d, %v", n, err)
	}
	for _, p := range ps {
		e.received[p.SKU] += p.OnHand
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func orderID(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func level(t *testing.T, s *store.Store, sku string) (onHand, reserved int64) {
	t.Helper()
	p, err := s.Product(ctx(t), sku)
	if err != nil {
		t.Fatal(err)
	}
	return p.OnHand, p.Reserved
}

func TestReserveCommitRelease(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		items := []domain.Item{{SKU: "SKU-0002", Quantity: 2}, {SKU: "SKU-0001", Quantity: 3}, {SKU: "SKU-0002", Quantity: 1}}
		r, err := s.Reserve(ctx(t), orderID(1), items)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != domain.StatusHeld || r.Currency != "EUR" || r.Total() != 3*1500+3*199 || len(r.Lines) != 3 ||
			r.Lines[1].UnitPriceCents != 199 {
			t.Fatalf("reservation = %+v", r)
		}
		if oh, res := level(t, s, "SKU-0002"); oh != 5 || res != 3 {
			t.Fatalf("SKU-0002 = %d/%d, want 5/3", oh, res)
		}
		again, err := s.Reserve(ctx(t), orderID(1), items)
		if err != nil || again.Total() != r.Total() || again.Status != domain.StatusHeld {
			t.Fatalf("repeat = %+v, %v", again, err)
		}
		if _, err := s.Reserve(ctx(t), orderID(1), items[:1]); !errors.Is(err, domain.ErrReservationMismatch) {
			t.Fatalf("other items: %v, want ErrReservationMismatch", err)
		}
		if oh, res := level(t, s, "SKU-0002"); oh != 5 || res != 3 {
			t.Fatalf("after repeats SKU-0002 = %d/%d, want 5/3 (no double reservation)", oh, res)
		}
		for range 2 {
			c, err := s.Commit(ctx(t), orderID(1))
			if err != nil || c.Status != domain.StatusCommitted {
				t.Fatalf("commit = %+v, %v", c, err)
			}
		}
		if oh, res := level(t, s, "SKU-0002"); oh != 2 || res != 0 {
			t.Fatalf("after commit SKU-0002 = %d/%d, want 2/0", oh, res)
		}
		if _, err := s.Release(ctx(t), orderID(1)); !errors.Is(err, domain.ErrReservationCommitted) {
			t.Fatalf("release committed: %v", err)
		}

		if _, err := s.Reserve(ctx(t), orderID(2), []domain.Item{{SKU: "SKU-0001", Quantity: 4}}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			r, err := s.Release(ctx(t), orderID(2))
			if err != nil || r.Status != domain.StatusReleased {
				t.Fatalf("release = %+v, %v", r, err)
			}
		}
		if _, err := s.Commit(ctx(t), orderID(2)); !errors.Is(err, domain.ErrReservationReleased) {
			t.Fatalf("commit released: %v", err)
		}
		if _, err := s.Commit(ctx(t), orderID(3)); !errors.Is(err, domain.ErrReservationNotFound) {
			t.Fatalf("commit unknown: %v", err)
		}
		if r, err := s.Release(ctx(t), orderID(3)); err != nil || !r.Tombstone() {
			t.Fatalf("release unknown = %+v, %v; want a tombstone", r, err)
		}
		if oh, res := level(t, s, "SKU-0001"); oh != 7 || res != 0 {
			t.Fatalf("SKU-0001 = %d/%d, want 7/0", oh, res)
		}
	})
}

func TestReserveIsAllOrNothing(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		before := storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic)
		var se *domain.StockError
		_, err := s.Reserve(ctx(t), orderID(1), []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "SKU-0002", Quantity: 6}})
		if !errors.Is(err, domain.ErrOutOfStock) || !errors.As(err, &se) || se.SKU != "SKU-0002" || se.Available != 5 || se.Requested != 6 {
			t.Fatalf("out of stock: %v", err)
		}
		_, err = s.Reserve(ctx(t), orderID(1), []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "NOPE-1", Quantity: 1}})
		if !errors.Is(err, domain.ErrUnknownProduct) || !errors.As(err, &se) || se.SKU != "NOPE-1" {
			t.Fatalf("unknown: %v", err)
		}
		if _, err := s.Reserve(ctx(t), orderID(1), []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "USD-0001", Quantity: 1}}); !errors.Is(err, domain.ErrMixedCurrency) {
			t.Fatalf("mixed currency: %v", err)
		}
		if _, err := s.Reserve(ctx(t), "not-a-uuid", []domain.Item{{SKU: "SKU-0001", Quantity: 1}}); !errors.Is(err, domain.ErrInvalid) {
			t.Fatalf("bad id: %v", err)
		}
		if oh, res := level(t, s, "SKU-0001"); oh != 10 || res != 0 {
			t.Fatalf("SKU-0001 = %d/%d after failed reservations", oh, res)
		}
		if _, err := s.Reservation(ctx(t), orderID(1)); !errors.Is(err, domain.ErrReservationNotFound) {
			t.Fatalf("failed reservation stored: %v", err)
		}
		if after := storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic); after != before {
			t.Fatalf("failed reservations wrote %d events", after-before)
		}
		// A successful one can take everything.
		if _, err := s.Reserve(ctx(t), orderID(1), []domain.Item{{SKU: "SKU-0002", Quantity: 5}}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEveryChangeWritesOneEvent(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		count := func() int { return storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic) }
		if got := count(); got != 3 {
			t.Fatalf("seed wrote %d events, want 3", got)
		}
		if _, err := s.Reserve(ctx(t), orderID(1), []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "SKU-0002", Quantity: 1}, {SKU: "SKU-0001", Quantity: 1}}); err != nil {
			t.Fatal(err)
		}
		if got := count(); got != 5 {
			t.Fatalf("after reserve %d events, want 5 (one per SKU)", got)
		}
		if _, err := s.Commit(ctx(t), orderID(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Commit(ctx(t), orderID(1)); err != nil {
			t.Fatal(err)
		}
		if got := count(); got != 7 {
			t.Fatalf("after two commits %d events, want 7", got)
		}
		p, err := s.Product(ctx(t), "SKU-0001")
		if err != nil || p.Version != 3 {
			t.Fatalf("version = %d, %v; want 3 (seed, reserve, commit)", p.Version, err)
		}
	})
}

func TestImport(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		name, price, cur := "Big Mug", int64(2500), "EUR"
		r, err := s.Import(ctx(t), domain.ImportLine{ImportID: "imp-1", Seq: 1, SKU: "SKU-0002", Quantity: 7, Name: &name, PriceCents: &price, Currency: &cur})
		if p := r.Product; err != nil || r.Skipped || p.OnHand != 12 || p.Name != name || p.PriceCents != price || p.Version != 2 {
			t.Fatalf("restock = %+v, %v", r, err)
		}
		e.received["SKU-0002"] += 7
		r, err = s.Import(ctx(t), domain.ImportLine{ImportID: "imp-1", Seq: 2, SKU: "NEW-0001", Quantity: 3, Name: &name, PriceCents: &price, Currency: &cur})
		if p := r.Product; err != nil || p.OnHand != 3 || p.Version != 1 {
			t.Fatalf("new = %+v, %v", r, err)
		}
		e.received["NEW-0001"] = 3
		if _, err := s.Import(ctx(t), domain.ImportLine{ImportID: "imp-1", Seq: 3, SKU: "NEW-0002", Quantity: 3}); !errors.Is(err, domain.ErrInvalid) {
			t.Fatalf("new without price: %v", err)
		}
		if _, err := s.Product(ctx(t), "NEW-0002"); !errors.Is(err, domain.ErrUnknownProduct) {
			t.Fatalf("rejected line created a product: %v", err)
		}
		if _, err := s.Import(ctx(t), domain.ImportLine{SKU: "SKU-0001", Quantity: 1}); !errors.Is(err, domain.ErrInvalid) {
			t.Fatalf("line without import id and seq: %v", err)
		}
		n, err := s.Seed(ctx(t), []domain.Product{{SKU: "SKU-0001", Name: "Cup", PriceCents: 199, Currency: "EUR", OnHand: 10}})
		if err != nil || n != 0 {
			t.Fatalf("re-seed = %d, %v; want 0 inserted", n, err)
		}
	})
}

// TestImportAppliesEachLineOnce: a line sent again under its (import_id, seq) is skipped and writes no
// event; a key reused for other content is refused; a line refused for the stock state is refused again
// even after the state changed; concurrent copies of one line apply once.
func TestImportAppliesEachLineOnce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		eventCount := func() int { return storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic) }
		line := domain.ImportLine{ImportID: "delivery-7", Seq: 1, SKU: "SKU-0001", Quantity: 4}
		if r, err := s.Import(ctx(t), line); err != nil || r.Skipped {
			t.Fatalf("first = %+v, %v", r, err)
		}
		e.received["SKU-0001"] += 4
		before := eventCount()
		for range 3 {
			if r, err := s.Import(ctx(t), line); err != nil || !r.Skipped {
				t.Fatalf("again = %+v, %v; want skipped", r, err)
			}
		}
		if oh, _ := level(t, s, "SKU-0001"); oh != 14 {
			t.Fatalf("SKU-0001 on hand %d, want 14", oh)
		}
		if got := eventCount(); got != before {
			t.Fatalf("skipped lines wrote %d events", got-before)
		}
		// The same seq in another import is another line.
		other := line
		other.ImportID = "delivery-8"
		if r, err := s.Import(ctx(t), other); err != nil || r.Skipped {
			t.Fatalf("other import = %+v, %v", r, err)
		}
		e.received["SKU-0001"] += 4

		reused := line
		reused.Quantity = 5
		var ie *domain.InvalidError
		if _, err := s.Import(ctx(t), reused); !errors.As(err, &ie) || ie.Field != "seq" || ie.Reason != domain.ImportReused {
			t.Fatalf("key reused for other content: %v", err)
		}

		// A new SKU without name and price is refused, and stays refused once a later line created it.
		name, price, cur := "Kettle", int64(3900), "EUR"
		early := domain.ImportLine{ImportID: "delivery-7", Seq: 2, SKU: "NEW-0007", Quantity: 2}
		if _, err := s.Import(ctx(t), early); !errors.As(err, &ie) || ie.Field != "sku" {
			t.Fatalf("new without price: %v", err)
		}
		if _, err := s.Import(ctx(t), domain.ImportLine{ImportID: "delivery-7", Seq: 3, SKU: "NEW-0007", Quantity: 1,
			Name: &name, PriceCents: &price, Currency: &cur}); err != nil {
			t.Fatal(err)
		}
		e.received["NEW-0007"] = 1
		var again *domain.InvalidError
		if _, err := s.Import(ctx(t), early); !errors.As(err, &again) || *again != *ie {
			t.Fatalf("resent refused line: %v, want the first refusal %v", err, ie)
		}

		// Concurrent copies of the same lines: each applies once.
		const copies = 12
		lines := []domain.ImportLine{
			{ImportID: "delivery-9", Seq: 1, SKU: "SKU-0002", Quantity: 3},
			{ImportID: "delivery-9", Seq: 2, SKU: "SKU-0001", Quantity: 2},
		}
		var (
			wg      sync.WaitGroup
			applied [2]atomic.Int32
		)
		for range copies {
			for i, l := range lines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := s.Import(ctx(t), l)
					if err != nil {
						t.Error(err)
						return
					}
					if !r.Skipped {
						applied[i].Add(1)
					}
				}()
			}
		}
		wg.Wait()
		for i := range lines {
			if n := applied[i].Load(); n != 1 {
				t.Errorf("line %d applied %d times by %d concurrent copies, want 1", i+1, n, copies)
			}
			e.received[lines[i].SKU] += lines[i].Quantity
		}
	})
}

func TestEventEffectsHappenOnce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		if _, err := s.Reserve(ctx(t), orderID(1), []domain.Item{{SKU: "SKU-0001", Quantity: 2}}); err != nil {
			t.Fatal(err)
		}
		if err := s.CommitOnce(ctx(t), "inventory", "evt-1", orderID(1)); err != nil {
			t.Fatal(err)
		}
		if err := s.CommitOnce(ctx(t), "inventory", "evt-1", orderID(1)); !errors.Is(err, inbox.ErrAlreadyProcessed) {
			t.Fatalf("redelivery: %v", err)
		}
		if oh, res := level(t, s, "SKU-0001"); oh != 8 || res != 0 {
			t.Fatalf("SKU-0001 = %d/%d, want 8/0", oh, res)
		}
		// A failed effect records nothing: the release of a committed order fails every time.
		for range 2 {
			if err := s.ReleaseOnce(ctx(t), "inventory", "evt-2", orderID(1)); !errors.Is(err, domain.ErrReservationCommitted) {
				t.Fatalf("release committed: %v", err)
			}
		}
		// The settlement's later commit finds the work done and changes nothing.
		if r, err := s.Commit(ctx(t), orderID(1)); err != nil || r.Status != domain.StatusCommitted ||
			len(r.Lines) != 1 || r.Lines[0] != (domain.Line{SKU: "SKU-0001", Quantity: 2, UnitPriceCents: 199}) {
			t.Fatalf("commit again = %+v, %v", r, err)
		}
		// OrderCancelled after the compensation released the stock: recorded once, nothing moves.
		if _, err := s.Reserve(ctx(t), orderID(2), []domain.Item{{SKU: "SKU-0002", Quantity: 1}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Release(ctx(t), orderID(2)); err != nil {
			t.Fatal(err)
		}
		sent := storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic)
		if err := s.ReleaseOnce(ctx(t), "inventory", "evt-3", orderID(2)); err != nil {
			t.Fatalf("OrderCancelled after the release: %v", err)
		}
		if err := s.ReleaseOnce(ctx(t), "inventory", "evt-3", orderID(2)); !errors.Is(err, inbox.ErrAlreadyProcessed) {
			t.Fatalf("redelivered OrderCancelled after the release: %v", err)
		}
		// A commit event for it fails every time, recording nothing.
		for range 2 {
			if err := s.CommitOnce(ctx(t), "inventory", "evt-4", orderID(2)); !errors.Is(err, domain.ErrReservationReleased) {
				t.Fatalf("commit released: %v", err)
			}
		}
		// OrderCancelled of an order never reserved leaves a tombstone, once.
		if err := s.ReleaseOnce(ctx(t), "inventory", "evt-5", orderID(3)); err != nil {
			t.Fatalf("OrderCancelled before the reserve: %v", err)
		}
		if err := s.ReleaseOnce(ctx(t), "inventory", "evt-5", orderID(3)); !errors.Is(err, inbox.ErrAlreadyProcessed) {
			t.Fatalf("redelivered OrderCancelled before the reserve: %v", err)
		}
		if got := storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic); got != sent {
			t.Fatalf("settlements that found the work done wrote %d events", got-sent)
		}
		if oh, res := level(t, s, "SKU-0002"); oh != 5 || res != 0 {
			t.Fatalf("SKU-0002 = %d/%d, want 5/0", oh, res)
		}
		if _, err := s.Commit(ctx(t), orderID(99)); !errors.Is(err, domain.ErrReservationNotFound) {
			t.Fatalf("commit unknown: %v", err)
		}
	})
}

// TestConcurrentOperationsConserveStock races reservations, commits and releases of overlapping SKUs
// and checks the ledger afterwards.
func TestConcurrentOperationsConserveStock(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		const workers = 60
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := orderID(1000 + i)
				items := []domain.Item{{SKU: "SKU-0001", Quantity: 1}, {SKU: "SKU-0002", Quantity: int64(1 + i%2)}}
				if i%3 == 0 {
					items = items[1:]
				}
				_, err := s.Reserve(ctx(t), id, items)
				switch {
				case errors.Is(err, domain.ErrOutOfStock):
					return
				case err != nil:
					errs <- err
					return
				}
				if i%2 == 0 {
					_, err = s.Commit(ctx(t), id)
				} else {
					_, err = s.Release(ctx(t), id)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestConcurrentSettlementsApplyOnce races, per order, two deliveries of its OrderConfirmed or
// OrderCancelled (or both) with the order service's own commit or release: each order ends in one
// terminal state whose stock moved once, every event that applied is recorded once, and stock is
// conserved.
func TestConcurrentSettlementsApplyOnce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		const orders = 10 // the seeded stock: 10 of SKU-0001, 5 of SKU-0002
		for i := range orders {
			items := []domain.Item{{SKU: "SKU-0001", Quantity: 1}}
			if i%2 == 0 {
				items = append(items, domain.Item{SKU: "SKU-0002", Quantity: 1})
			}
			if _, err := s.Reserve(ctx(t), orderID(100+i), items); err != nil {
				t.Fatal(err)
			}
		}
		var (
			wg      sync.WaitGroup
			applied [orders][2]atomic.Int64 // per order: commit events, release events applied
		)
		for i := range orders {
			id := orderID(100 + i)
			run := func(f func() error, count *atomic.Int64, allowed ...error) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := f()
					switch {
					case err == nil:
						if count != nil {
							count.Add(1)
						}
					case errors.Is(err, inbox.ErrAlreadyProcessed):
					default:
						for _, a := range allowed {
							if errors.Is(err, a) {
								return
							}
						}
						t.Errorf("order %d: %v", i, err)
					}
				}()
			}
			commit, release := i%3 != 1, i%3 != 0
			for range 2 {
				if commit {
					run(func() error { return s.CommitOnce(ctx(t), "inventory", fmt.Sprintf("confirmed-%d", i), id) },
						&applied[i][0], domain.ErrReservationReleased)
				}
				if release {
					run(func() error { return s.ReleaseOnce(ctx(t), "inventory", fmt.Sprintf("cancelled-%d", i), id) },
						&applied[i][1], domain.ErrReservationCommitted)
				}
			}
			if commit {
				run(func() error { _, err := s.Commit(ctx(t), id); return err }, nil, domain.ErrReservationReleased)
			} else {
				run(func() error { _, err := s.Release(ctx(t), id); return err }, nil, domain.ErrReservationCommitted)
			}
		}
		wg.Wait()
		for i := range orders {
			r, err := s.Reservation(ctx(t), orderID(100+i))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status == domain.StatusHeld {
				t.Errorf("order %d still HELD", i)
			}
			for k, n := range []int64{applied[i][0].Load(), applied[i][1].Load()} {
				if n > 1 {
					t.Errorf("order %d: event %d applied %d times", i, k, n)
				}
			}
		}
	})
}
