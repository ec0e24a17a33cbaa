package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	s  *store.Store
	db *sql.DB
}

func open(t *testing.T, dsn string) env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, dsn, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)
	return env{s: store.New(db, d, outbox.New(d, nil), nil), db: db}
}

func (e env) outboxRows(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow("SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func newOrder(t *testing.T, id, key string) domain.Order {
	t.Helper()
	o, err := domain.NewOrder(id, "cust-1", key, []domain.Line{{SKU: "SKU-1", Quantity: 2}, {SKU: "SKU-2", Quantity: 1}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func confirmed(t *testing.T, o domain.Order) domain.Order {
	t.Helper()
	p, err := o.Priced([]domain.Line{{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 100}, {SKU: "SKU-2", Quantity: 1, UnitPriceCents: 50}}, "EUR")
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Confirm(t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStoreContract is the one contract suite every backend must pass.
func TestStoreContract(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			cases := []struct {
				name string
				run  func(t *testing.T, e env)
			}{
				{"create and get", testCreateGet},
				{"idempotency key", testIdempotencyKey},
				{"update is versioned and terminal states are final", testUpdate},
				{"concurrent finishers: exactly one wins", testConcurrentUpdate},
				{"claim stale orders once", testClaimStale},
				{"compensation bookkeeping", testCompensation},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, open(t, b.DSN(t)))
				})
			}
		})
	}
}

func testCreateGet(t *testing.T, e env) {
	ctx := context.Background()
	o := newOrder(t, "00000000-0000-0000-0000-000000000001", "")
	got, created, err := e.s.Create(ctx, o, t0.Add(time.Minute))
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	if got.ID != o.ID || got.Status != domain.Pending || got.Version != 1 || len(got.Lines) != 2 ||
		got.Lines[0] != o.Lines[0] || !got.CreatedAt.Equal(t0) {
		t.Fatalf("stored %+v, want %+v", got, o)
	}
	// Create returns what it wrote without reading it back: it must be exactly what a read returns.
	if read, err := e.s.Get(ctx, o.ID); err != nil || !reflect.DeepEqual(read, got) {
		t.Fatalf("get after create = %+v, %v; create returned %+v", read, err, got)
	}
	if st, err := e.s.Status(ctx, o.ID); err != nil || st != domain.Pending {
		t.Fatalf("status = %q, %v; want PENDING", st, err)
	}
	if _, err := e.s.Status(ctx, "00000000-0000-0000-0000-00000000ffff"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("status of unknown: %v", err)
	}
	if _, err := e.s.Get(ctx, "00000000-0000-0000-0000-00000000ffff"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if n := e.outboxRows(t); n != 2 {
		t.Fatalf("outbox rows = %d, want 2 (Kafka + NATS copies of OrderCreated)", n)
	}
	// Without a key, nothing deduplicates: a second order of the same customer is a new order.
	if _, created, err := e.s.Create(ctx, newOrder(t, "00000000-0000-0000-0000-000000000002", ""), t0); err != nil || !created {
		t.Fatalf("second keyless order: created=%v err=%v", created, err)
	}
}

func testIdempotencyKey(t *testing.T, e env) {
	ctx := context.Background()
	first, created, err := e.s.Create(ctx, newOrder(t, "00000000-0000-0000-0000-000000000001", "key-1"), t0)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	const n = 8
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			o := newOrder(t, fmt.Sprintf("00000000-0000-0000-0000-1000000000%02d", i), "key-1")
			got, created, err := e.s.Create(ctx, o, t0)
			if created {
				err = errors.New("created a duplicate")
			}
			ids[i], errs[i] = got.ID, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != first.ID {
			t.Fatalf("retry %d: id %s err %v, want %s", i, ids[i], errs[i], first.ID)
		}
	}
	if rows := e.outboxRows(t); rows != 2 {
		t.Fatalf("outbox rows = %d, want 2", rows)
	}
	// The same key of another customer is another order.
	other := newOrder(t, "00000000-0000-0000-0000-000000000003", "key-1")
	other.CustomerID = "cust-2"
	if _, created, err := e.s.Create(ctx, other, t0); err != nil || !created {
		t.Fatalf("other customer: %v %v", created, err)
	}
}

func testUpdate(t *testing.T, e env) {
	ctx := context.Background()
	o, _, err := e.s.Create(ctx, newOrder(t, "00000000-0000-0000-0000-000000000001", ""), t0)
	if err != nil {
		t.Fatal(err)
	}
	c := confirmed(t, o)
	if err := e.s.Update(ctx, c, false); err != nil {
		t.Fatal(err)
	}
	got, err := e.s.Get(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != domain.Confirmed || got.Version != 2 || got.TotalCents != 250 || got.Currency != "EUR" ||
		got.Lines[0].UnitPriceCents != 100 || got.Lines[0].LineTotalCents != 200 {
		t.Fatalf("after confirm: %+v", got)
	}
	// A writer that read version 1 cannot cancel it now, and nobody can move it again.
	x, err := o.Cancel(domain.CustomerRequested, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Update(ctx, x, true); !errors.Is(err, domain.ErrVersionConflict) {
		t.Fatalf("stale cancel: %v", err)
	}
	y := got
	y.Status, y.Version = domain.Cancelled, got.Version+1 // even a forged transition from a terminal state
	if err := e.s.Update(ctx, y, false); !errors.Is(err, domain.ErrVersionConflict) {
		t.Fatalf("update of a terminal order: %v", err)
	}
	ghost := newOrder(t, "00000000-0000-0000-0000-00000000ffff", "")
	ghost.Version = 2
	if err := e.s.Update(ctx, ghost, false); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown order: %v", err)
	}
	if again, _ := e.s.Get(ctx, o.ID); again.Status != domain.Confirmed || again.Version != 2 {
		t.Fatalf("terminal order changed: %+v", again)
	}
	if n := e.outboxRows(t); n != 4 {
		t.Fatalf("outbox rows = %d, want 4 (created + confirmed, twice each)", n)
	}
}

func testConcurrentUpdate(t *testing.T, e env) {
	ctx := context.Background()
	o, _, err := e.s.Create(ctx, newOrder(t, "00000000-0000-0000-0000-000000000001", ""), t0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		wins, conflicts int
		winner          domain.Order
	)
	for i := range n {
		wg.Go(func() {
			var next domain.Order
			if i%2 == 0 {
				next = confirmed(t, o)
			} else {
				next, _ = o.Cancel(domain.CustomerRequested, fmt.Sprint(i), t0)
			}
			err := e.s.Update(ctx, next, false)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
				winner = next
			case errors.Is(err, domain.ErrVersionConflict):
				conflicts++
			default:
				t.Errorf("update: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || conflicts != n-1 {
		t.Fatalf("wins=%d conflicts=%d, want 1 and %d", wins, conflicts, n-1)
	}
	got, _ := e.s.Get(ctx, o.ID)
	if got.Status != winner.Status || got.CancelDetail != winner.CancelDetail || got.Version != 2 {
		t.Fatalf("stored %+v, winner %+v", got, winner)
	}
	if rows := e.outboxRows(t); rows != 4 {
		t.Fatalf("outbox rows = %d, want 4: losers must not write events", rows)
	}
}

func testClaimStale(t *testing.T, e env) {
	ctx := context.Background()
	const n = 10
	for i := range n {
		o := newOrder(t, fmt.Sprintf("00000000-0000-0000-0000-0000000000%02d", i), "")
		if _, _, err := e.s.Create(ctx, o, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	done, _, err := e.s.Create(ctx, newOrder(t, "00000000-0000-0000-0000-0000000000ff", ""), t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Update(ctx, confirmed(t, done), false); err != nil {
		t.Fatal(err)
	}
	if got, err := e.s.ClaimStale(ctx, t0.Add(30*time.Second), t0.Add(2*time.Minute), 100); err != nil || len(got) != 0 {
		t.Fatalf("leased orders claimed: %d %v", len(got), err)
	}
	// Four claimers race for the expired leases: every order goes to exactly one of them.
	now := t0.Add(time.Minute)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[string]int{}
	)
	for range 4 {
		wg.Go(func() {
			for {
				got, err := e.s.ClaimStale(ctx, now, now.Add(time.Minute), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, o := range got {
					if o.Status != domain.Pending {
						t.Errorf("claimed %s order", o.Status)
					}
					seen[o.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("claimed %d orders, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("order %s claimed %d times", id, c)
		}
	}
	if got, _ := e.s.ClaimStale(ctx, now.Add(time.Minute), now, 100); len(got) != n {
		t.Fatalf("after the new lease ended: claimed %d, want %d", len(got), n)
	}
}

func testCompensation(t *testing.T, e env) {
	ctx := context.Background()
	o, _, err := e.s.Create(ctx, newOrder(t, "00000000-0000-0000-0000-000000000001", ""), t0)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := o.Cancel(domain.CustomerRequested, "changed my mind", t0.Add(time.Second))
	if err := e.s.Update(ctx, x, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.s.PendingCompensation(ctx, t0, 10); len(got) != 0 {
		t.Fatalf("too recent, yet listed: %d", len(got))
	}
	got, err := e.s.PendingCompensation(ctx, t0.Add(time.Minute), 10)
	if err != nil || len(got) != 1 || got[0].ID != o.ID || got[0].CancelDetail != "changed my mind" {
		t.Fatalf("pending compensations: %+v %v", got, err)
	}
	if err := e.s.CompensationDone(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.s.PendingCompensation(ctx, t0.Add(time.Minute), 10); len(got) != 0 {
		t.Fatalf("still pending after done: %d", len(got))
	}
	if after, _ := e.s.Get(ctx, o.ID); after.Version != x.Version || after.Status != domain.Cancelled {
		t.Fatalf("bookkeeping changed the order: %+v", after)
	}
}
