package app_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
)

// bookkeeping is one order's follow-up columns of kind ("comp" or "settle").
type bookkeeping struct {
	attempts int
	next     time.Time
	lastErr  string
}

func (in *instance) bookkeeping(t *testing.T, kind, id string) bookkeeping {
	t.Helper()
	var (
		b    bookkeeping
		next int64
	)
	// id is a UUID the service made: literal, so the query needs no dialect-specific placeholder.
	q := fmt.Sprintf(`SELECT %[1]s_attempts, %[1]s_next_at, %[1]s_error FROM orders WHERE id = '%[2]s'`, kind, id)
	if err := in.db.QueryRow(q).Scan(&b.attempts, &next, &b.lastErr); err != nil {
		t.Fatal(err)
	}
	b.next = time.UnixMicro(next)
	return b
}

func (in *instance) settledCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := in.db.QueryRow(`SELECT count(*) FROM orders WHERE settled_at IS NOT NULL AND NOT settle_pending`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// An order is confirmed, and OrderConfirmed never reaches inventory or payment (here there is no
// consumer at all): once SettleAfter has passed, the recovery workers of two instances commit the
// stock and capture the payment of every order exactly once, and mark the orders settled.
func TestSettlementWhenOrderConfirmedNeverArrives(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, b.DSN(t))
			ins := []*instance{w.start(), w.start()}
			ctx := context.Background()
			const n = 30
			var ids []string
			for i := range n {
				o := place(t, ins[i%2], fmt.Sprintf("cust-%d", i), fmt.Sprint("k-", i), line("SKU-A", 1))
				if o.Status != domain.Confirmed {
					t.Fatalf("order %d: %s", i, o.Status)
				}
				ids = append(ids, o.ID)
			}
			st, err := ins[0].app.RecoverOnce(ctx)
			if err != nil || st.Settled != 0 || !st.BacklogRead || st.Unsettled != 0 {
				t.Fatalf("before SettleAfter: %+v %v", st, err)
			}
			if c, p := w.inv.Calls("CommitStock"), w.pay.Calls("CapturePayment"); c+p != 0 {
				t.Fatalf("before SettleAfter: %d commits, %d captures called", c, p)
			}

			w.clock.Advance(settings.SettleAfter + time.Second)
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				settled int
			)
			for _, in := range ins {
				wg.Go(func() {
					st, err := in.app.RecoverOnce(ctx)
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					settled += st.Settled
					mu.Unlock()
				})
			}
			wg.Wait()
			if settled != n {
				t.Fatalf("settled %d, want %d", settled, n)
			}
			// Exactly once: one call of each per order although two instances ran at once.
			if c, p := w.inv.Calls("CommitStock"), w.pay.Calls("CapturePayment"); c != n || p != n {
				t.Fatalf("CommitStock called %d times, CapturePayment %d; want %d each", c, p, n)
			}
			if w.inv.Commits() != n || w.pay.Captures() != n {
				t.Fatalf("%d reservations committed, %d payments captured; want %d", w.inv.Commits(), w.pay.Captures(), n)
			}
			for _, id := range ids {
				if res, auth := w.status(id); res != committed || auth != captured {
					t.Fatalf("order %s: reservation %s, authorization %s", id, res, auth)
				}
			}
			if got := ins[0].settledCount(t); got != n {
				t.Fatalf("%d orders marked settled, want %d", got, n)
			}
			// Settled orders are never settled again.
			w.clock.Advance(24 * time.Hour)
			st, err = ins[1].app.RecoverOnce(ctx)
			if err != nil || st.Settled+st.SettlementsFailed+st.SettlementsRefused != 0 || st.Unsettled != 0 {
				t.Fatalf("a day later: %+v %v", st, err)
			}
			if c, p := w.inv.Calls("CommitStock"), w.pay.Calls("CapturePayment"); c != n || p != n {
				t.Fatalf("calls after settling: %d commits, %d captures", c, p)
			}
		})
	}
}

// With payment down, a settlement pass fails without an error storm: each order is tried once per
// backoff (a pass right after calls nothing), the gauge shows them, the pass itself does not fail, and
// once payment is back every order is captured exactly once.
func TestSettlementRetriedWhileDependencyDown(t *testing.T) {
	t.Parallel()
	w := newWorld(t, sqldbtest.SQLite(t))
	in := w.start()
	ctx := context.Background()
	const n = 10
	var ids []string
	for i := range n {
		ids = append(ids, place(t, in, "cust-1", fmt.Sprint("k-", i), line("SKU-B", 2)).ID)
	}
	w.pay.SetDown(true)
	w.clock.Advance(settings.SettleAfter + time.Second)
	st, err := in.app.RecoverOnce(ctx)
	if err != nil {
		t.Fatalf("a pass with payment down failed: %v", err)
	}
	if st.Settled != 0 || st.SettlementsFailed != n || st.Unsettled != n {
		t.Fatalf("pass with payment down: %+v", st)
	}
	calls := w.pay.Calls("CapturePayment")
	t.Logf("payment down: %d CapturePayment calls reached it for %d orders in one pass", calls, n)
	if calls > 3*n {
		t.Fatalf("%d CapturePayment calls for %d orders in one pass", calls, n)
	}
	first := in.bookkeeping(t, "settle", ids[0])
	if first.attempts != 1 || first.lastErr == "" || !first.next.After(w.clock.Now()) {
		t.Fatalf("after one failure: %+v", first)
	}
	// The next pass, before the backoff ends, calls nobody.
	st, err = in.app.RecoverOnce(ctx)
	if err != nil || st.SettlementsFailed != 0 || w.pay.Calls("CapturePayment") != calls {
		t.Fatalf("pass inside the backoff: %+v %v, calls %d -> %d", st, err, calls, w.pay.Calls("CapturePayment"))
	}
	// After it, the orders are tried again and back off further.
	w.clock.Advance(settings.RetryMin)
	if _, err := in.app.RecoverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	second := in.bookkeeping(t, "settle", ids[0])
	if second.attempts != 2 || second.next.Sub(w.clock.Now()) <= first.next.Sub(w.clock.Now().Add(-settings.RetryMin)) {
		t.Fatalf("after two failures: %+v (first %+v)", second, first)
	}

	w.pay.SetDown(false)
	settled := 0
	for pass := 0; settled < n; pass++ {
		if pass == 20 {
			t.Fatalf("settled %d of %d after 20 passes", settled, n)
		}
		time.Sleep(30 * time.Millisecond) // let the breaker half-open
		w.clock.Advance(settings.RetryMax)
		st, err := in.app.RecoverOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		settled += st.Settled
	}
	if w.pay.Captures() != n || w.inv.Commits() != n || in.settledCount(t) != n {
		t.Fatalf("captures %d, commits %d, settled %d; want %d", w.pay.Captures(), w.inv.Commits(), in.settledCount(t), n)
	}
	if st, _ := in.app.RecoverOnce(ctx); st.Unsettled != 0 {
		t.Fatalf("unsettled after recovery: %d", st.Unsettled)
	}
}

// scriptedInventory answers ReleaseStock with the code scripted for the order (or for every order),
// and counts the calls per order.
type scriptedInventory struct {
	*fakes.Inventory
	mu    sync.Mutex
	all   codes.Code
	codes map[string]codes.Code
	calls map[string]int
}

func (s *scriptedInventory) script(all codes.Code, per map[string]codes.Code) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all, s.codes = all, per
}

func (s *scriptedInventory) releases(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

func (s *scriptedInventory) ReleaseStock(ctx context.Context, req *inventoryv1.ReleaseStockRequest) (*inventoryv1.ReleaseStockResponse, error) {
	s.mu.Lock()
	s.calls[req.GetOrderId()]++
	code := s.all
	if c, ok := s.codes[req.GetOrderId()]; ok {
		code = c
	}
	s.mu.Unlock()
	if code != codes.OK {
		return nil, status.Errorf(code, "scripted %s", code)
	}
	return s.Inventory.ReleaseStock(ctx, req)
}

// Compensations that keep failing at the head of the queue do not starve the others: with six failing
// (three refused for good, three failing for now) ahead of ten healthy ones and a batch of four, the
// healthy ones are all done within two passes; the failing ones back off (attempts grow, the next
// attempt moves out; a refusal waits RetryMax) and show in the stuck gauge.
func TestCompensationsDoNotStarve(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			var inv *scriptedInventory
			w := newWorldWith(t, b.DSN(t), func(f *fakes.Inventory) inventoryv1.InventoryServiceServer {
				inv = &scriptedInventory{Inventory: f, calls: map[string]int{}}
				return inv
			})
			in := w.startWith(func(s *app.Settings) { s.RecoveryBatch = 4 })
			ctx := context.Background()

			// Declined orders whose stock release fails: CANCELLED with the compensation pending. A
			// refusal keeps the breaker closed, so later calls are not failed by it.
			inv.script(codes.FailedPrecondition, nil)
			var ids []string
			for i := range 16 {
				o := place(t, in, fmt.Sprintf("cust-poor-%d", i), "", line("SKU-A", 1))
				if o.Status != domain.Cancelled || o.CancelReason != domain.PaymentDeclined {
					t.Fatalf("order %d: %s %s", i, o.Status, o.CancelReason)
				}
				ids = append(ids, o.ID)
				w.clock.Advance(time.Second) // the first ones are due first
			}
			refused, failing, healthy := ids[:3], ids[3:6], ids[6:]
			per := map[string]codes.Code{}
			for _, id := range refused {
				per[id] = codes.FailedPrecondition
			}
			for _, id := range failing {
				per[id] = codes.Aborted
			}
			inv.script(codes.OK, per)

			w.clock.Advance(settings.RecoveryAfter)
			var total app.RecoveryStats
			for pass := range 2 {
				st, err := in.app.RecoverOnce(ctx)
				if err != nil {
					t.Fatalf("pass %d: %v", pass, err)
				}
				total.Compensated += st.Compensated
				total.CompensationsFailed += st.CompensationsFailed
				total.CompensationsRefused += st.CompensationsRefused
				w.clock.Advance(time.Second)
			}
			if total.Compensated != len(healthy) {
				t.Fatalf("compensated %d in two passes, want %d (%+v)", total.Compensated, len(healthy), total)
			}
			for _, id := range healthy {
				if r := w.inv.Reservation(id); r != released {
					t.Fatalf("healthy order %s: reservation %s", id, r)
				}
			}
			if total.CompensationsRefused != 3 || total.CompensationsFailed != 3 {
				t.Fatalf("refused %d, failed %d; want 3 and 3", total.CompensationsRefused, total.CompensationsFailed)
			}
			now := w.clock.Now()
			for _, id := range refused {
				if b := in.bookkeeping(t, "comp", id); b.attempts != 1 || b.next.Sub(now) < settings.RetryMax-time.Minute || b.lastErr == "" {
					t.Fatalf("refused %s: %+v, want 1 attempt and the next in about %v", id, b, settings.RetryMax)
				}
			}
			refusedCalls := map[string]int{}
			for _, id := range refused {
				refusedCalls[id] = inv.releases(id)
			}
			prev := map[string]bookkeeping{}
			for _, id := range failing {
				b := in.bookkeeping(t, "comp", id)
				if b.attempts != 1 || !b.next.After(now) || b.next.Sub(now) > settings.RetryMin {
					t.Fatalf("failing %s: %+v", id, b)
				}
				prev[id] = b
			}
			// Two more failures each: the attempts grow, the next attempt moves out, and the refused
			// ones are not called meanwhile.
			for range 2 {
				w.clock.Advance(4 * settings.RetryMin)
				st, err := in.app.RecoverOnce(ctx)
				if err != nil || st.CompensationsFailed != 3 || st.CompensationsRefused != 0 {
					t.Fatalf("retry pass: %+v %v", st, err)
				}
				now := w.clock.Now()
				for _, id := range failing {
					b := in.bookkeeping(t, "comp", id)
					if b.attempts != prev[id].attempts+1 || b.next.Sub(now) <= prev[id].next.Sub(now.Add(-4*settings.RetryMin)) {
						t.Fatalf("failing %s: %+v after %+v", id, b, prev[id])
					}
					prev[id] = b
				}
				if st.StuckCompensations != 3 && prev[failing[0]].attempts >= settings.StuckAttempts {
					t.Fatalf("stuck gauge %d with %d attempts each, want 3", st.StuckCompensations, prev[failing[0]].attempts)
				}
			}
			for _, id := range refused {
				if n := inv.releases(id); n != refusedCalls[id] {
					t.Fatalf("refused %s: %d release calls, was %d: retried within RetryMax", id, n, refusedCalls[id])
				}
			}
			// Pending longer than StuckAfter: all six are stuck.
			w.clock.Advance(settings.StuckAfter)
			st, err := in.app.RecoverOnce(ctx)
			if err != nil || st.StuckCompensations != 6 {
				t.Fatalf("after StuckAfter: %+v %v, want 6 stuck", st, err)
			}
			// Repaired: everything is given back and the gauge drops to 0.
			inv.script(codes.OK, nil)
			w.clock.Advance(settings.RetryMax)
			time.Sleep(30 * time.Millisecond) // let the breaker half-open
			st, err = in.app.RecoverOnce(ctx)
			if err != nil || st.StuckCompensations != 0 {
				t.Fatalf("after the repair: %+v %v", st, err)
			}
			for _, id := range ids {
				if r := w.inv.Reservation(id); r != released {
					t.Fatalf("order %s: reservation %s", id, r)
				}
			}
		})
	}
}
