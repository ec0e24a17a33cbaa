package app_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

const (
	held       = inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD
	committed  = inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
	captured   = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED
	released   = inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	noHold     = inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED
	authorized = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED
	voided     = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED
	declined   = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_DECLINED
	noAuth     = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_UNSPECIFIED
)

func place(t *testing.T, in *instance, customer, key string, l ...domain.Line) domain.Order {
	t.Helper()
	o, err := in.app.PlaceOrder(context.Background(), app.PlaceOrder{CustomerID: customer, IdempotencyKey: key, Lines: l})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestSagaOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		customer    string
		lines       []domain.Line
		status      domain.Status
		reason      domain.CancelReason
		total       int64
		reservation inventoryv1.ReservationStatus
		auth        paymentv1.AuthorizationStatus
		calls       map[string]int // calls at the fakes
	}{
		{
			name: "happy path", customer: "cust-1", lines: lines(line("SKU-A", 2), line("SKU-B", 1)),
			status: domain.Confirmed, total: 380, reservation: held, auth: authorized,
			calls: map[string]int{"ReserveStock": 1, "AuthorizePayment": 1, "ReleaseStock": 0, "VoidPayment": 0},
		},
		{
			name: "out of stock", customer: "cust-1", lines: lines(line("SKU-A", 1), line("SKU-LOW", 6)),
			status: domain.Cancelled, reason: domain.OutOfStock, reservation: noHold, auth: noAuth,
			calls: map[string]int{"ReserveStock": 1, "AuthorizePayment": 0, "ReleaseStock": 0, "VoidPayment": 0},
		},
		{
			name: "unknown product", customer: "cust-1", lines: lines(line("SKU-NOPE", 1)),
			status: domain.Cancelled, reason: domain.UnknownProduct, reservation: noHold, auth: noAuth,
			calls: map[string]int{"ReserveStock": 1, "AuthorizePayment": 0, "ReleaseStock": 0},
		},
		{
			name: "payment declined", customer: "cust-poor-1", lines: lines(line("SKU-LOW", 5)),
			status: domain.Cancelled, reason: domain.PaymentDeclined, total: 4995, reservation: released, auth: declined,
			calls: map[string]int{"ReserveStock": 1, "AuthorizePayment": 1, "ReleaseStock": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, sqldbtest.SQLite(t))
			in := w.start()
			o := place(t, in, tt.customer, "", tt.lines...)
			if o.Status != tt.status || o.CancelReason != tt.reason || o.TotalCents != tt.total {
				t.Fatalf("order %s %s total %d (%s), want %s %s total %d", o.Status, o.CancelReason, o.TotalCents,
					o.CancelDetail, tt.status, tt.reason, tt.total)
			}
			if stored, _ := in.orders.Get(context.Background(), o.ID); stored.Version != 2 || stored.Status != tt.status {
				t.Fatalf("stored %+v", stored)
			}
			res, auth := w.status(o.ID)
			if res != tt.reservation || auth != tt.auth {
				t.Fatalf("reservation %s auth %s, want %s %s", res, auth, tt.reservation, tt.auth)
			}
			for m, n := range tt.calls {
				got := w.inv.Calls(m) + w.pay.Calls(m)
				if got != n {
					t.Errorf("%s called %d times, want %d", m, got, n)
				}
			}
			if w.inv.Available("SKU-LOW") != 5 {
				t.Errorf("SKU-LOW available %d, want 5 (nothing may stay held)", w.inv.Available("SKU-LOW"))
			}
		})
	}
}

func TestIdempotentRetry(t *testing.T) {
	t.Parallel()
	w := newWorld(t, sqldbtest.SQLite(t))
	in := w.start()
	first := place(t, in, "cust-1", "key-42", line("SKU-A", 1))
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			o, err := in.app.PlaceOrder(context.Background(), app.PlaceOrder{CustomerID: "cust-1", IdempotencyKey: "key-42",
				Lines: lines(line("SKU-A", 1))})
			if err != nil || o.ID != first.ID || o.Status != domain.Confirmed {
				t.Errorf("retry: %v %+v", err, o)
			}
		})
	}
	wg.Wait()
	if r, a := w.inv.Calls("ReserveStock"), w.pay.Calls("AuthorizePayment"); r != 1 || a != 1 {
		t.Fatalf("reserve called %d, authorize %d times; want 1 and 1", r, a)
	}
	_, err := in.app.PlaceOrder(context.Background(), app.PlaceOrder{CustomerID: "cust-1", IdempotencyKey: "key-42",
		Lines: lines(line("SKU-B", 1))})
	if !errors.Is(err, domain.ErrIdempotencyKeyReused) {
		t.Fatalf("same key, other lines: %v", err)
	}
}

func TestUnavailableThenRecovered(t *testing.T) {
	t.Parallel()
	for _, down := range []string{"inventory", "payment"} {
		t.Run(down, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, sqldbtest.SQLite(t))
			in := w.start()
			setDown := w.inv.SetDown
			if down == "payment" {
				setDown = w.pay.SetDown
			}
			setDown(true)
			o := place(t, in, "cust-1", "k", line("SKU-A", 3))
			if o.Status != domain.Pending {
				t.Fatalf("with %s down: %s, want PENDING", down, o.Status)
			}
			// Recovery while still down changes nothing.
			w.clock.Advance(2 * settings.RecoveryAfter)
			if _, err := in.app.RecoverOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got, _ := in.app.Get(context.Background(), o.ID); got.Status != domain.Pending || got.Version != 1 {
				t.Fatalf("during the outage: %+v", got)
			}
			setDown(false)
			w.recoverUntil(in, o.ID)
			got, _ := in.app.Get(context.Background(), o.ID)
			if got.Status != domain.Confirmed || got.TotalCents != 450 || got.Version != 2 {
				t.Fatalf("after recovery: %+v", got)
			}
			if created, _ := w.inv.Holds(); created != 1 {
				t.Fatalf("%d reservations, want 1", created)
			}
			if a, _, _ := w.pay.Counts(); a != 1 {
				t.Fatalf("%d authorizations, want 1", a)
			}
			// A retry of the request after the outage returns the same, now confirmed, order.
			if again := place(t, in, "cust-1", "k", line("SKU-A", 3)); again.ID != o.ID || again.Status != domain.Confirmed {
				t.Fatalf("retry: %+v", again)
			}
		})
	}
}

func TestRecoveryAfterCrash(t *testing.T) {
	t.Parallel()
	w := newWorld(t, sqldbtest.SQLite(t))
	a := w.start()
	w.pay.SetDown(true)
	o := place(t, a, "cust-1", "", line("SKU-LOW", 2))
	if o.Status != domain.Pending || w.inv.Reservation(o.ID) != held {
		t.Fatalf("before the crash: %s, reservation %s", o.Status, w.inv.Reservation(o.ID))
	}
	// The process dies: nothing of it survives but the database.
	if err := a.db.Close(); err != nil {
		t.Fatal(err)
	}
	w.pay.SetDown(false)
	b := w.start()
	w.recoverUntil(b, o.ID)
	got, _ := b.app.Get(context.Background(), o.ID)
	if got.Status != domain.Confirmed {
		t.Fatalf("after restart: %+v", got)
	}
	if created, _ := w.inv.Holds(); created != 1 || w.pay.Status(o.ID) != authorized {
		t.Fatalf("holds %d, auth %s", created, w.pay.Status(o.ID))
	}
}

func TestGiveUpCompensates(t *testing.T) {
	t.Parallel()
	w := newWorld(t, sqldbtest.SQLite(t))
	in := w.start()
	w.pay.SetDown(true)
	o := place(t, in, "cust-1", "", line("SKU-LOW", 1))
	w.inv.SetDown(true)
	w.clock.Advance(2 * settings.GiveUpAfter)
	if _, err := in.app.RecoverOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := in.app.Get(context.Background(), o.ID)
	if got.Status != domain.Cancelled || got.CancelReason != domain.DependencyFailed {
		t.Fatalf("after giving up: %+v", got)
	}
	if w.inv.Reservation(o.ID) != held {
		t.Fatal("released while inventory was down?")
	}
	w.inv.SetDown(false)
	w.pay.SetDown(false)
	w.recoverUntil(in, o.ID)
	if w.inv.Reservation(o.ID) != released || w.inv.Available("SKU-LOW") != 5 {
		t.Fatalf("compensation not retried: reservation %s", w.inv.Reservation(o.ID))
	}
	if again, _ := in.app.Get(context.Background(), o.ID); again.Version != got.Version || again.Status != domain.Cancelled {
		t.Fatalf("terminal order changed: %+v", again)
	}
}

func TestCancelOrder(t *testing.T) {
	t.Parallel()
	w := newWorld(t, sqldbtest.SQLite(t))
	in := w.start()
	ctx := context.Background()

	w.pay.SetDown(true)
	o := place(t, in, "cust-1", "", line("SKU-LOW", 3))
	w.pay.SetDown(false)
	c, err := in.app.CancelOrder(ctx, o.ID, "changed my mind")
	if err != nil || c.Status != domain.Cancelled || c.CancelReason != domain.CustomerRequested || c.CancelDetail != "changed my mind" {
		t.Fatalf("cancel: %v %+v", err, c)
	}
	if w.inv.Reservation(o.ID) != released {
		t.Fatalf("stock not released: %s", w.inv.Reservation(o.ID))
	}
	again, err := in.app.CancelOrder(ctx, o.ID, "again")
	if err != nil || again.Version != c.Version || again.CancelDetail != "changed my mind" {
		t.Fatalf("second cancel: %v %+v", err, again)
	}
	// The interrupted saga must not resurrect it.
	w.recoverUntil(in, o.ID)
	if got, _ := in.app.Get(ctx, o.ID); got.Status != domain.Cancelled || got.Version != c.Version {
		t.Fatalf("after recovery: %+v", got)
	}
	if w.pay.Status(o.ID) == authorized {
		t.Fatal("cancelled order left authorized")
	}

	done := place(t, in, "cust-1", "", line("SKU-A", 1))
	if _, err := in.app.CancelOrder(ctx, done.ID, ""); !errors.Is(err, domain.ErrOrderConfirmed) {
		t.Fatalf("cancel confirmed: %v", err)
	}
	if _, err := in.app.CancelOrder(ctx, "00000000-0000-0000-0000-000000000000", ""); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("cancel unknown: %v", err)
	}
}

// TestConcurrentOrders places 200 orders at once on two instances sharing one database, with mixed
// outcomes: the first 100 while payment is down (they stay PENDING with stock held), the other 100
// while customers cancel a third of the first ones and both instances' recovery workers race to
// finish them. Then every order must be in exactly one terminal state consistent with the fakes' books.
// A customer's cancel that lands while the saga waits for its reservation wins: the saga does not
// re-read the order between its steps, so it may authorize after the cancel; its final update then
// meets the cancel's version and gives back what it holds. The order ends CANCELLED for the customer's
// reason, the stock is released and no authorization is left standing.
func TestCancelWhileReserving(t *testing.T) {
	t.Parallel()
	w := newWorld(t, sqldbtest.SQLite(t))
	in := w.start()
	ctx := context.Background()
	cancels := make(chan error, 1)
	w.inv.OnReserved(func(orderID string) {
		w.inv.OnReserved(nil)
		_, err := in.app.CancelOrder(ctx, orderID, "changed my mind")
		cancels <- err
	})
	before := w.inv.Available("SKU-A")
	o := place(t, in, "cust-1", "", line("SKU-A", 2))
	if err := <-cancels; err != nil {
		t.Fatalf("cancel while reserving: %v", err)
	}
	got, err := in.app.Get(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != domain.Cancelled || got.CancelReason != domain.CustomerRequested || o.Status != domain.Cancelled {
		t.Fatalf("placed %s, stored %s (%s); want the customer's cancel", o.Status, got.Status, got.CancelReason)
	}
	if w.inv.Reservation(o.ID) != released || w.inv.Available("SKU-A") != before {
		t.Fatalf("stock: reservation %s, available %d (before %d)", w.inv.Reservation(o.ID), w.inv.Available("SKU-A"), before)
	}
	if st := w.pay.Status(o.ID); st == authorized || st == captured {
		t.Fatalf("payment left %s", st)
	}
	if w.pay.Captures() != 0 {
		t.Fatal("a cancelled order was captured")
	}
}

func TestConcurrentOrders(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, b.DSN(t))
			ins := []*instance{w.start(), w.start()}
			ctx := context.Background()
			const n = 200
			ids := make([]string, n)
			placeOne := func(i int) {
				customer := fmt.Sprintf("cust-%d", i%17)
				if i%5 == 0 {
					customer = fmt.Sprintf("cust-poor-%d", i)
				}
				l := lines(line("SKU-A", int32(1+i%3)))
				if i%4 == 1 {
					l = append(l, line("SKU-LOW", 1))
				}
				o, err := ins[i%2].app.PlaceOrder(ctx, app.PlaceOrder{CustomerID: customer, IdempotencyKey: fmt.Sprint("k-", i), Lines: l})
				if err != nil {
					t.Errorf("place %d: %v", i, err)
					return
				}
				ids[i] = o.ID
			}

			w.pay.SetDown(true)
			var wg sync.WaitGroup
			for i := range n / 2 {
				wg.Go(func() { placeOne(i) })
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			w.pay.SetDown(false)

			stop := make(chan struct{})
			var rwg sync.WaitGroup
			for _, in := range ins {
				rwg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						w.clock.Advance(settings.RecoveryAfter / 4)
						if _, err := in.app.RecoverOnce(ctx); err != nil {
							t.Errorf("recover: %v", err)
							return
						}
					}
				})
			}
			for i := n / 2; i < n; i++ {
				wg.Go(func() { placeOne(i) })
			}
			for i := 0; i < n/2; i += 3 {
				wg.Go(func() {
					_, err := ins[i%2].app.CancelOrder(ctx, ids[i], "race")
					if err != nil && !errors.Is(err, domain.ErrOrderConfirmed) {
						t.Errorf("cancel %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			close(stop)
			rwg.Wait()
			if t.Failed() {
				return
			}
			w.pay.SetDown(false)
			w.recoverUntil(ins[rand.IntN(2)], ids...)

			counts := map[string]int{}
			for i, id := range ids {
				o, err := ins[0].orders.Get(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				res, auth := w.status(id)
				counts[string(o.Status)+" "+string(o.CancelReason)]++
				switch o.Status {
				case domain.Confirmed:
					// Settled (committed and captured) once the recovery worker's clock passed SettleAfter.
					if (res != held && res != committed) || (auth != authorized && auth != captured) || o.Version != 2 {
						t.Errorf("order %d confirmed with reservation %s, auth %s, version %d", i, res, auth, o.Version)
					}
				case domain.Cancelled:
					if res == held || auth == authorized || o.Version != 2 {
						t.Errorf("order %d cancelled (%s) with reservation %s, auth %s, version %d", i, o.CancelReason, res, auth, o.Version)
					}
				default:
					t.Errorf("order %d is %s", i, o.Status)
				}
			}
			holds, releases := w.inv.Holds()
			auths, voids, denials := w.pay.Counts()
			confirmed := counts["CONFIRMED "]
			if holds-releases != confirmed || auths-voids != confirmed {
				t.Errorf("books: holds %d - releases %d, auths %d - voids %d, want %d confirmed each",
					holds, releases, auths, voids, confirmed)
			}
			if 5-w.inv.Available("SKU-LOW") > int64(confirmed) {
				t.Errorf("SKU-LOW: %d units gone", 5-w.inv.Available("SKU-LOW"))
			}
			t.Logf("%d orders: %v; reservations %d (released %d), authorizations %d (voided %d), declines %d; calls: reserve %d, authorize %d, release %d, void %d",
				n, counts, holds, releases, auths, voids, denials, w.inv.Calls("ReserveStock"), w.pay.Calls("AuthorizePayment"),
				w.inv.Calls("ReleaseStock"), w.pay.Calls("VoidPayment"))
		})
	}
}

// A payment outage leaves a backlog of many batches; once payment is back, RunRecovery drains it in
// back-to-back passes instead of one batch per interval (the interval here never ticks: only the
// first pass at start and the backlog passes can finish the orders).
func TestRunRecoveryDrainsABacklogWithoutWaitingForTheInterval(t *testing.T) {
	t.Parallel()
	w := newWorld(t, sqldbtest.SQLite(t))
	in := w.start()
	w.pay.SetDown(true)
	const n = 5*20 + 7 // five full batches of settings.RecoveryBatch and a partial one
	ids := make([]string, 0, n)
	for i := range n {
		o := place(t, in, "cust-1", fmt.Sprintf("backlog-%d", i), line("SKU-A", 1))
		if o.Status != domain.Pending {
			t.Fatalf("with payment down: %s, want PENDING", o.Status)
		}
		ids = append(ids, o.ID)
	}
	w.pay.SetDown(false)
	// Payment is back once a new order goes through (the breaker has closed again).
	for i := 0; ; i++ {
		if o := place(t, in, "cust-2", fmt.Sprintf("probe-%d", i), line("SKU-B", 1)); o.Status == domain.Confirmed {
			break
		}
		if i == 200 {
			t.Fatal("payment did not come back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.clock.Advance(2 * settings.RecoveryAfter)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.app.RunRecovery(ctx, time.Hour) }()
	deadline := time.Now().Add(20 * time.Second)
	for _, id := range ids {
		for {
			got, err := in.app.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status == domain.Confirmed {
				break
			}
			if time.Now().After(deadline) {
				confirmed := 0
				for _, id := range ids {
					if o, _ := in.app.Get(context.Background(), id); o.Status == domain.Confirmed {
						confirmed++
					}
				}
				t.Fatalf("order %s still %s (%d of %d confirmed): the backlog was not drained without the interval", id, got.Status, confirmed, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if a, _, _ := w.pay.Counts(); a < n {
		t.Fatalf("%d authorizations, want at least the %d backlog orders", a, n)
	}
}
