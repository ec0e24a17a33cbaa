package store_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// testVoidBeforeAuthorize: compensation that overtakes its action leaves a tombstone, and the late
// action is refused without moving money (RELIABILITY.md R13).
func testVoidBeforeAuthorize(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	seedOne(t, f, "c1", 1000)
	req := func(id string) domain.AuthorizeRequest {
		return domain.AuthorizeRequest{OrderID: id, CustomerID: "c1", Amount: 300, Currency: "EUR"}
	}

	for range 2 { // the void itself is idempotent
		if a, found, err := f.svc.Void(ctx, "o1"); err != nil || found || a != (domain.Authorization{}) {
			t.Fatalf("void unknown = %+v, %v, %v; want nothing found", a, found, err)
		}
	}
	for range 2 {
		if _, err := f.svc.Authorize(ctx, req("o1")); !errors.Is(err, domain.ErrAuthorizationVoided) {
			t.Fatalf("authorize after void: err = %v, want ErrAuthorizationVoided", err)
		}
	}
	if _, err := f.svc.Capture(ctx, "o1"); !errors.Is(err, domain.ErrAuthorizationVoided) {
		t.Fatalf("capture after void: err = %v, want ErrAuthorizationVoided", err)
	}

	// OrderCancelled for an order without a payment leaves the tombstone too; OrderConfirmed does not.
	if out, err := f.svc.OrderCancelled(ctx, "evt-1", "o2"); err != nil || out != app.OutcomeNoPayment {
		t.Fatalf("OrderCancelled o2 = %s, %v", out, err)
	}
	if _, err := f.svc.Authorize(ctx, req("o2")); !errors.Is(err, domain.ErrAuthorizationVoided) {
		t.Fatalf("authorize after OrderCancelled: err = %v, want ErrAuthorizationVoided", err)
	}
	if out, err := f.svc.OrderConfirmed(ctx, confirmed("evt-2", "o3")); err != nil || out != app.OutcomeNoPayment {
		t.Fatalf("OrderConfirmed o3 = %s, %v", out, err)
	}
	if a, err := f.svc.Authorize(ctx, req("o3")); err != nil || a.Status != domain.StatusAuthorized {
		t.Fatalf("authorize o3 = %+v, %v", a, err)
	}
	if f.account(t, "c1").Held != 300 {
		t.Fatalf("held = %d, want 300 (o3 only)", f.account(t, "c1").Held)
	}

	// Authorize → void → retried authorize: the retry gets the voided authorization back, holds nothing;
	// capture after void is refused.
	if _, err := f.svc.Authorize(ctx, req("o4")); err != nil {
		t.Fatal(err)
	}
	if a, found, err := f.svc.Void(ctx, "o4"); err != nil || !found || a.Status != domain.StatusVoided {
		t.Fatalf("void o4 = %+v, %v, %v", a, found, err)
	}
	if a, err := f.svc.Authorize(ctx, req("o4")); err != nil || a.Status != domain.StatusVoided {
		t.Fatalf("retried authorize o4 = %+v, %v; want the VOIDED authorization", a, err)
	}
	if _, err := f.svc.Capture(ctx, "o4"); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("capture voided o4: err = %v, want ErrInvalidTransition", err)
	}

	if a := f.account(t, "c1"); a.Balance != 1000 || a.Held != 300 {
		t.Errorf("c1 = %+v, want balance 1000 held 300", a)
	}
	if n := f.count(t, "SELECT count(*) FROM void_tombstones"); n != 2 {
		t.Errorf("tombstones = %d, want 2 (o1, o2)", n)
	}
	if n := f.count(t, "SELECT count(*) FROM authorizations WHERE order_id IN ('o1', 'o2')"); n != 0 {
		t.Errorf("%d authorizations of voided orders", n)
	}
	if n := f.count(t, "SELECT count(*) FROM ledger_entries WHERE order_id IN ('o1', 'o2')"); n != 0 {
		t.Errorf("%d ledger entries of voided orders", n)
	}
}

// testVoidRacesAuthorize sends, per order, an authorize, its duplicate and a void at the same time.
// Whatever wins, an order ends either authorized-then-voided or tombstoned-without-authorization:
// never holding money, never both. Without the per-order lock on PostgreSQL this fails (seen: 6–12
// of 60 orders both tombstoned and authorized, their money held forever).
func testVoidRacesAuthorize(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	const orders = 60
	seedOne(t, f, "c1", 1_000_000)
	var (
		wg                      sync.WaitGroup
		authorized, refused     atomic.Int64
		voidedFound, tombstoned atomic.Int64
		mu                      sync.Mutex
		failures                []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for i := range orders {
		id := fmt.Sprintf("race-%03d", i)
		authorize := func() {
			a, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: id, CustomerID: "c1", Amount: int64(100 + i), Currency: "EUR"})
			switch {
			case errors.Is(err, domain.ErrAuthorizationVoided):
				refused.Add(1)
			case err != nil:
				fail("authorize %s: %v", id, err)
			case a.Status == domain.StatusAuthorized || a.Status == domain.StatusVoided:
				authorized.Add(1)
			default:
				fail("authorize %s: status %s", id, a.Status)
			}
		}
		wg.Go(authorize)
		wg.Go(authorize)
		wg.Go(func() {
			_, found, err := f.svc.Void(ctx, id)
			switch {
			case err != nil:
				fail("void %s: %v", id, err)
			case found:
				voidedFound.Add(1)
			default:
				tombstoned.Add(1)
			}
		})
	}
	wg.Wait()
	for _, m := range failures {
		t.Error(m)
	}
	// Either the void came first (tombstone; both authorizes refused) or an authorize did (the void
	// released it; the other authorize got the voided one back): nothing may be held now.
	if n := f.count(t, "SELECT count(*) FROM authorizations a JOIN void_tombstones v ON v.order_id = a.order_id"); n != 0 {
		t.Errorf("%d orders both tombstoned and authorized", n)
	}
	if n := f.count(t, "SELECT count(*) FROM authorizations WHERE status <> 'VOIDED'"); n != 0 {
		t.Errorf("%d authorizations not voided", n)
	}
	tomb := f.count(t, "SELECT count(*) FROM void_tombstones")
	auths := f.count(t, "SELECT count(*) FROM authorizations")
	if tomb+auths != orders {
		t.Errorf("tombstones %d + authorizations %d != %d orders", tomb, auths, orders)
	}
	if a := f.account(t, "c1"); a.Balance != 1_000_000 || a.Held != 0 {
		t.Errorf("c1 = %+v, want balance 1000000 held 0", a)
	}
	holds := f.count(t, "SELECT count(*) FROM ledger_entries WHERE kind = 'HOLD'")
	releases := f.count(t, "SELECT count(*) FROM ledger_entries WHERE kind = 'RELEASE'")
	if holds != auths || releases != auths || f.count(t, "SELECT count(*) FROM ledger_entries WHERE kind = 'DEBIT'") != 0 {
		t.Errorf("ledger: %d holds, %d releases for %d authorizations", holds, releases, auths)
	}
	t.Logf("%d orders: authorize ok %d, refused (tombstone) %d; void found %d, tombstoned %d; final: %d voided authorizations, %d tombstones, held %d",
		orders, authorized.Load(), refused.Load(), voidedFound.Load(), tombstoned.Load(), auths, tomb, f.account(t, "c1").Held)
}
