package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	s  *store.Store
	db *sql.DB
	// commits counts the after-commit calls (WithAfterCommit: the relay's Notify in the service).
	commits *atomic.Int64
}

// migrateAll applies every schema of the order database, as the service command does.
func migrateAll(ctx context.Context, t *testing.T, dsn string) {
	t.Helper()
	if err := migrate.UpAll(ctx, dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, dsn string) env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	migrateAll(ctx, t, dsn)
	db, d := sqldbtest.Open(t, dsn)
	commits := new(atomic.Int64)
	return env{s: store.New(db, d, outbox.New(d, nil), store.WithAfterCommit(func() { commits.Add(1) })), db: db, commits: commits}
}

// outboxRows counts the events written, checking each is one row for the order topic (the relay
// derives its status subject copy).
func (e env) outboxRows(t *testing.T) int {
	t.Helper()
	rows, err := e.db.Query("SELECT topic, msg_key FROM outbox")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var topic, key string
		if err := rows.Scan(&topic, &key); err != nil {
			t.Fatal(err)
		}
		if topic != events.Topic || key == "" {
			t.Errorf("outbox row for topic %q key %q, want %s keyed by the order id", topic, key, events.Topic)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// announced asserts the after-commit hook ran once per transaction that wrote events.
func (e env) announced(t *testing.T, want int64) {
	t.Helper()
	if n := e.commits.Load(); n != want {
		t.Fatalf("after-commit calls = %d, want %d (one per transaction that wrote events)", n, want)
	}
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
				{"follow-ups: earliest due first, failing rows back off", testFollowupOrder},
				{"settlement: claimed once, settled_at recorded", testSettlement},
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
	if _, err := e.s.Get(ctx, "00000000-0000-0000-0000-00000000ffff"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if n := e.outboxRows(t); n != 1 {
		t.Fatalf("outbox rows = %d, want 1 (OrderCreated, one row for both brokers)", n)
	}
	e.announced(t, 1)
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
	if rows := e.outboxRows(t); rows != 1 {
		t.Fatalf("outbox rows = %d, want 1", rows)
	}
	e.announced(t, 1) // the retries wrote nothing
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
	if err := e.s.Update(ctx, c, time.Time{}); err != nil {
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
	if err := e.s.Update(ctx, x, t0.Add(time.Minute)); !errors.Is(err, domain.ErrVersionConflict) {
		t.Fatalf("stale cancel: %v", err)
	}
	y := got
	y.Status, y.Version = domain.Cancelled, got.Version+1 // even a forged transition from a terminal state
	if err := e.s.Update(ctx, y, time.Time{}); !errors.Is(err, domain.ErrVersionConflict) {
		t.Fatalf("update of a terminal order: %v", err)
	}
	ghost := newOrder(t, "00000000-0000-0000-0000-00000000ffff", "")
	ghost.Version = 2
	if err := e.s.Update(ctx, ghost, time.Time{}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown order: %v", err)
	}
	if again, _ := e.s.Get(ctx, o.ID); again.Status != domain.Confirmed || again.Version != 2 {
		t.Fatalf("terminal order changed: %+v", again)
	}
	if n := e.outboxRows(t); n != 2 {
		t.Fatalf("outbox rows = %d, want 2 (created + confirmed)", n)
	}
	e.announced(t, 2) // the refused updates wrote nothing
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
			err := e.s.Update(ctx, next, time.Time{})
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
	if rows := e.outboxRows(t); rows != 2 {
		t.Fatalf("outbox rows = %d, want 2: losers must not write events", rows)
	}
	e.announced(t, 2)
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
	if err := e.s.Update(ctx, confirmed(t, done), time.Time{}); err != nil {
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
	due := t0.Add(30 * time.Second)
	if err := e.s.Update(ctx, x, due); err != nil {
		t.Fatal(err)
	}
	if got, err := e.s.ClaimFollowups(ctx, app.Compensation, due.Add(-time.Millisecond), due.Add(time.Minute), 10); err != nil || len(got) != 0 {
		t.Fatalf("not due yet, yet claimed: %d %v", len(got), err)
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Settlement, due.Add(time.Hour), due.Add(2*time.Hour), 10); len(got) != 0 {
		t.Fatalf("a cancelled order claimed for settlement: %d", len(got))
	}
	got, err := e.s.ClaimFollowups(ctx, app.Compensation, due, due.Add(time.Minute), 10)
	if err != nil || len(got) != 1 || got[0].OrderID != o.ID || got[0].Status != domain.Cancelled || got[0].CustomerID != "cust-1" || got[0].Attempts != 0 {
		t.Fatalf("due compensations: %+v %v", got, err)
	}
	// Claimed until due+1m: nobody else gets it before.
	if again, _ := e.s.ClaimFollowups(ctx, app.Compensation, due.Add(59*time.Second), due.Add(2*time.Minute), 10); len(again) != 0 {
		t.Fatalf("claimed twice: %d", len(again))
	}
	// A failure counts an attempt, keeps its error and moves the next attempt.
	next := due.Add(10 * time.Second)
	if err := e.s.FollowupFailed(ctx, app.Compensation, o.ID, next, "inventory: UNAVAILABLE"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Compensation, next.Add(-time.Millisecond), next.Add(time.Minute), 10); len(got) != 0 {
		t.Fatalf("claimed before its next attempt: %d", len(got))
	}
	if n, err := e.s.FollowupBacklog(ctx, app.Compensation, t0, 1); err != nil || n != 1 {
		t.Fatalf("backlog with attempts >= 1: %d %v, want 1", n, err)
	}
	if n, _ := e.s.FollowupBacklog(ctx, app.Compensation, t0, 2); n != 0 {
		t.Fatalf("backlog with attempts >= 2: %d, want 0", n)
	}
	if n, _ := e.s.FollowupBacklog(ctx, app.Compensation, t0.Add(2*time.Second), 0); n != 1 {
		t.Fatalf("backlog of orders cancelled before t0+2s: %d, want 1", n)
	}
	got, err = e.s.ClaimFollowups(ctx, app.Compensation, next, next.Add(time.Minute), 10)
	if err != nil || len(got) != 1 || got[0].Attempts != 1 || got[0].LastError != "inventory: UNAVAILABLE" {
		t.Fatalf("claim after a failure: %+v %v", got, err)
	}
	if err := e.s.FollowupDone(ctx, app.Compensation, o.ID, next); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Compensation, next.Add(time.Hour), next.Add(2*time.Hour), 10); len(got) != 0 {
		t.Fatalf("still pending after done: %d", len(got))
	}
	if n, _ := e.s.FollowupBacklog(ctx, app.Compensation, next.Add(time.Hour), 1); n != 0 {
		t.Fatalf("backlog after done: %d", n)
	}
	if after, _ := e.s.Get(ctx, o.ID); after.Version != x.Version || after.Status != domain.Cancelled {
		t.Fatalf("bookkeeping changed the order: %+v", after)
	}
	// A cancellation without follow-up work leaves nothing to claim.
	o2, _, _ := e.s.Create(ctx, newOrder(t, "00000000-0000-0000-0000-000000000002", ""), t0)
	x2, _ := o2.Cancel(domain.OutOfStock, "", t0)
	if err := e.s.Update(ctx, x2, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Compensation, t0.Add(time.Hour), t0.Add(2*time.Hour), 10); len(got) != 0 {
		t.Fatalf("claimed an order without follow-up: %d", len(got))
	}
}

// Failing rows at the head do not starve the others: claims take the earliest due first, and a row
// whose next attempt moved out is not claimed.
func testFollowupOrder(t *testing.T, e env) {
	ctx := context.Background()
	var failing, healthy []string
	for i := range 6 {
		o, _, err := e.s.Create(ctx, newOrder(t, fmt.Sprintf("00000000-0000-0000-0000-0000000000%02d", i), ""), t0)
		if err != nil {
			t.Fatal(err)
		}
		x, _ := o.Cancel(domain.DependencyFailed, "", t0.Add(time.Duration(i)*time.Second))
		if err := e.s.Update(ctx, x, x.UpdatedAt); err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			failing = append(failing, o.ID)
		} else {
			healthy = append(healthy, o.ID)
		}
	}
	now := t0.Add(time.Minute)
	for _, id := range failing {
		if err := e.s.FollowupFailed(ctx, app.Compensation, id, now.Add(time.Hour), "refused"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.s.ClaimFollowups(ctx, app.Compensation, now, now.Add(time.Minute), 3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, f := range got {
		ids = append(ids, f.OrderID)
	}
	if !reflect.DeepEqual(ids, healthy) {
		t.Fatalf("claimed %v, want the healthy %v", ids, healthy)
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Compensation, now.Add(time.Hour), now.Add(2*time.Hour), 10); len(got) != 6 {
		t.Fatalf("after every next attempt passed: claimed %d, want 6", len(got))
	}
}

func testSettlement(t *testing.T, e env) {
	ctx := context.Background()
	const n = 10
	due := t0.Add(time.Minute)
	for i := range n {
		o, _, err := e.s.Create(ctx, newOrder(t, fmt.Sprintf("00000000-0000-0000-0000-0000000000%02d", i), ""), t0)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.s.Update(ctx, confirmed(t, o), due); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Compensation, due.Add(time.Hour), due.Add(2*time.Hour), 100); len(got) != 0 {
		t.Fatalf("a confirmed order claimed for compensation: %d", len(got))
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Settlement, due.Add(-time.Second), due, 100); len(got) != 0 {
		t.Fatalf("settlement claimed before it is due: %d", len(got))
	}
	if n, _ := e.s.FollowupBacklog(ctx, app.Settlement, t0, 0); n != 0 {
		t.Fatalf("unsettled older than t0: %d, want 0", n)
	}
	if got, _ := e.s.FollowupBacklog(ctx, app.Settlement, due, 0); got != n {
		t.Fatalf("unsettled older than due: %d, want %d", got, n)
	}
	// Four instances claim at once: every order goes to exactly one.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[string]int{}
	)
	for range 4 {
		wg.Go(func() {
			for {
				got, err := e.s.ClaimFollowups(ctx, app.Settlement, due, due.Add(time.Minute), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, f := range got {
					if f.Status != domain.Confirmed {
						t.Errorf("claimed a %s order for settlement", f.Status)
					}
					seen[f.OrderID]++
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
		if err := e.s.FollowupDone(ctx, app.Settlement, id, due.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		var settled sql.NullInt64
		if err := e.db.QueryRow(`SELECT settled_at FROM orders WHERE id = '` + id + `'`).Scan(&settled); err != nil {
			t.Fatal(err)
		}
		if !settled.Valid || settled.Int64 != due.Add(time.Second).UnixMicro() {
			t.Fatalf("settled_at of %s = %v", id, settled)
		}
	}
	if got, _ := e.s.ClaimFollowups(ctx, app.Settlement, due.Add(time.Hour), due.Add(2*time.Hour), 100); len(got) != 0 {
		t.Fatalf("settled orders claimed again: %d", len(got))
	}
	if got, _ := e.s.FollowupBacklog(ctx, app.Settlement, due.Add(time.Hour), 0); got != 0 {
		t.Fatalf("unsettled after done: %d", got)
	}
}

// Orders confirmed before the follow-up columns existed are not known to be settled: the migration
// leaves them to the settlement worker, due at once. Down and up again keeps the schema usable.
func TestMigrationSettlesEarlierConfirmedOrders(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := b.DSN(t)
			e := open(t, dsn)
			if err := migrate.Command(ctx, dsn, migrations.FS, migrate.Options{}, []string{"down", "1"}, io.Discard); err != nil {
				t.Fatal(err)
			}
			for i, st := range []domain.Status{domain.Confirmed, domain.Cancelled, domain.Pending} {
				if _, err := e.db.Exec(fmt.Sprintf(`INSERT INTO orders (id, customer_id, status, version, created_at,
					updated_at, lease_until) VALUES ('00000000-0000-0000-0000-00000000000%d', 'cust-1', '%s', 2, 1, 1, 1)`, i, st)); err != nil {
					t.Fatal(err)
				}
			}
			migrateAll(ctx, t, dsn)
			got, err := e.s.ClaimFollowups(ctx, app.Settlement, t0, t0.Add(time.Minute), 10)
			if err != nil || len(got) != 1 || got[0].OrderID != "00000000-0000-0000-0000-000000000000" {
				t.Fatalf("settlements after the migration: %+v %v, want the confirmed order", got, err)
			}
		})
	}
}
