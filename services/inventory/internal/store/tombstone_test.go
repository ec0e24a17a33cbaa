package store_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// TestReleaseBeforeReserve: a release that overtakes its reserve leaves a tombstone; the late reserve
// is refused and holds nothing (RELIABILITY.md R13).
func TestReleaseBeforeReserve(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		items := []domain.Item{{SKU: "SKU-0001", Quantity: 2}}
		before := storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic)
		for range 2 {
			r, err := s.Release(ctx(t), orderID(1))
			if err != nil || !r.Tombstone() || r.OrderID != orderID(1) {
				t.Fatalf("release unknown = %+v, %v; want a tombstone", r, err)
			}
		}
		for range 2 {
			if _, err := s.Reserve(ctx(t), orderID(1), items); !errors.Is(err, domain.ErrReservationReleased) {
				t.Fatalf("reserve after release: err = %v, want ErrReservationReleased", err)
			}
		}
		if _, err := s.Commit(ctx(t), orderID(1)); !errors.Is(err, domain.ErrReservationReleased) {
			t.Fatalf("commit after release: err = %v, want ErrReservationReleased", err)
		}
		// The event path (OrderCancelled before anything was reserved) leaves one too.
		if err := s.ReleaseOnce(ctx(t), "inventory", "evt-1", orderID(2)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Reserve(ctx(t), orderID(2), items); !errors.Is(err, domain.ErrReservationReleased) {
			t.Fatalf("reserve after OrderCancelled: err = %v, want ErrReservationReleased", err)
		}
		if oh, res := level(t, s, "SKU-0001"); oh != 10 || res != 0 {
			t.Fatalf("SKU-0001 = %d/%d, want 10/0", oh, res)
		}
		if after := storetest.OutboxCount(t, e.db, e.d, events.InventoryTopic); after != before {
			t.Fatalf("tombstones wrote %d stock events", after-before)
		}
		// Reserve → release → retried reserve: the retry gets the released reservation back.
		if _, err := s.Reserve(ctx(t), orderID(3), items); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Release(ctx(t), orderID(3)); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Reserve(ctx(t), orderID(3), items); err != nil || r.Status != domain.StatusReleased || r.Tombstone() {
			t.Fatalf("retried reserve = %+v, %v; want the RELEASED reservation", r, err)
		}
		if oh, res := level(t, s, "SKU-0001"); oh != 10 || res != 0 {
			t.Fatalf("SKU-0001 = %d/%d, want 10/0", oh, res)
		}
	})
}

// TestReleaseRacesReserve sends, per order, a reserve, its duplicate and a release at the same time —
// the order service's release, or for every other order two deliveries of its OrderCancelled:
// afterwards nothing may stay reserved, and each event is recorded once.
func TestReleaseRacesReserve(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.store
		e.seed(t, []domain.Product{{SKU: "RACE-1", Name: "Race", PriceCents: 100, Currency: "EUR", OnHand: 10_000}})
		const orders = 60
		var (
			wg                   sync.WaitGroup
			reserved, refused    atomic.Int64
			released, tombstoned atomic.Int64
			mu                   sync.Mutex
			failures             []string
		)
		fail := func(format string, args ...any) {
			mu.Lock()
			failures = append(failures, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
		for i := range orders {
			id := orderID(1000 + i)
			reserve := func() {
				_, err := s.Reserve(ctx(t), id, []domain.Item{{SKU: "RACE-1", Quantity: int64(1 + i%7)}})
				switch {
				case errors.Is(err, domain.ErrReservationReleased):
					refused.Add(1)
				case err != nil:
					fail("reserve %s: %v", id, err)
				default:
					reserved.Add(1)
				}
			}
			wg.Go(reserve)
			wg.Go(reserve)
			if i%2 == 1 {
				for range 2 {
					wg.Go(func() {
						err := s.ReleaseOnce(ctx(t), "inventory", "cancelled-"+id, id)
						if err != nil && !errors.Is(err, inbox.ErrAlreadyProcessed) {
							fail("OrderCancelled %s: %v", id, err)
						}
					})
				}
				continue
			}
			wg.Go(func() {
				r, err := s.Release(ctx(t), id)
				switch {
				case err != nil:
					fail("release %s: %v", id, err)
				case r.Tombstone():
					tombstoned.Add(1)
				default:
					released.Add(1)
				}
			})
		}
		wg.Wait()
		for _, m := range failures {
			t.Error(m)
		}
		// Either the release came first (tombstone; both reserves refused) or a reserve did (the release
		// gave it back; the other reserve got the released one): nothing may be reserved now.
		if oh, res := level(t, s, "RACE-1"); oh != 10_000 || res != 0 {
			t.Errorf("RACE-1 = %d/%d, want 10000/0", oh, res)
		}
		var notReleased, tombs int
		q := e.d.Rebind("SELECT count(*) FROM reservations WHERE order_id LIKE ? AND status <> 'RELEASED'")
		if err := e.db.QueryRow(q, "00000000-0000-4000-8000-0000000010%").Scan(&notReleased); err != nil {
			t.Fatal(err)
		}
		if err := e.db.QueryRow(`SELECT count(*) FROM reservations r WHERE NOT EXISTS
			(SELECT 1 FROM reservation_lines l WHERE l.order_id = r.order_id)`).Scan(&tombs); err != nil {
			t.Fatal(err)
		}
		var recorded int
		if err := e.db.QueryRow(e.d.Rebind("SELECT count(*) FROM inbox WHERE event_id LIKE ?"), "cancelled-%").Scan(&recorded); err != nil {
			t.Fatal(err)
		}
		if recorded != orders/2 {
			t.Errorf("%d OrderCancelled recorded, want %d", recorded, orders/2)
		}
		if notReleased != 0 {
			t.Errorf("%d race orders not released", notReleased)
		}
		t.Logf("%d orders: reserve ok %d, refused (tombstone) %d; release found %d, tombstoned %d; tombstones stored %d",
			orders, reserved.Load(), refused.Load(), released.Load(), tombstoned.Load(), tombs)
	})
}
