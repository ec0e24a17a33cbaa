package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
	"github.com/shopmesh/shopmesh/services/payment/internal/store"
	"github.com/shopmesh/shopmesh/services/payment/migrations"
)

type fixture struct {
	db      *sql.DB
	dialect sqldb.Dialect
	store   *store.Store
	svc     *app.App
	commits *int64
	mu      *sync.Mutex
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newFixture migrates dsn and returns the store and the use cases on it, writing events through the
// service's outbox writer (wrapped by wrap when not nil).
func newFixture(t *testing.T, dsn string, wrap func(store.EventWriter) store.EventWriter) fixture {
	t.Helper()
	if err := migrate.UpAll(ctxT(t), dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)
	f := fixture{db: db, dialect: d, commits: new(int64), mu: &sync.Mutex{}}
	var w store.EventWriter = events.NewOutbox(outbox.New(d, nil))
	if wrap != nil {
		w = wrap(w)
	}
	st := store.New(db, d, w, store.WithAfterCommit(func() {
		f.mu.Lock()
		*f.commits++
		f.mu.Unlock()
	}))
	svc, err := app.New(app.Deps{Store: st}, app.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	f.store, f.svc = st, svc
	return f
}

// writerFunc is a store.EventWriter in one function.
type writerFunc func(ctx context.Context, tx *sql.Tx, e domain.Event) error

func (f writerFunc) WriteEvent(ctx context.Context, tx *sql.Tx, e domain.Event) error {
	return f(ctx, tx, e)
}

func (f fixture) count(t *testing.T, query string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := f.db.QueryRowContext(ctxT(t), f.dialect.Rebind(query), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

func (f fixture) account(t *testing.T, id string) domain.Account {
	t.Helper()
	a, err := f.store.Account(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestStoreContract runs the same suite on every backend: SQLite always, PostgreSQL with DATABASE_URL.
func TestStoreContract(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			for name, test := range map[string]func(*testing.T, string){
				"seed is idempotent":                       testSeed,
				"lifecycle writes state, ledger, events":   testLifecycle,
				"failed transaction leaves nothing":        testRollback,
				"concurrent authorize of one order":        testConcurrentSameOrder,
				"concurrent holds on one account":          testConcurrentHoldsOneAccount,
				"concurrent moves on one account":          testConcurrentMovesOneAccount,
				"inbox applies an event once":              testInbox,
				"ledger refuses a second debit":            testLedgerGuard,
				"void before authorize leaves a tombstone": testVoidBeforeAuthorize,
				"void races authorize (R13)":               testVoidRacesAuthorize,
			} {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					test(t, b.DSN(t))
				})
			}
		})
	}
}

func testSeed(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	n, err := f.svc.SeedDev(ctx)
	if err != nil || n != app.DevAccounts+1 {
		t.Fatalf("first seed = %d, %v; want %d", n, err, app.DevAccounts+1)
	}
	if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o1", CustomerID: "cust-0001", Amount: 5, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	n, err = f.svc.SeedDev(ctx)
	if err != nil || n != 0 {
		t.Fatalf("second seed = %d, %v; want 0", n, err)
	}
	if a := f.account(t, "cust-0001"); a.Balance != app.DevBalance || a.Held != 5 || a.Currency != "EUR" {
		t.Errorf("cust-0001 after reseed = %+v, want balance %d held 5 (seed must not reset)", a, app.DevBalance)
	}
	if a := f.account(t, "cust-1000"); a.Balance != app.DevBalance {
		t.Errorf("cust-1000 = %+v", a)
	}
	if a := f.account(t, app.BrokeID); a.Balance != 0 || a.Held != 0 {
		t.Errorf("cust-broke = %+v", a)
	}
	if got := f.count(t, "SELECT count(*) FROM accounts"); got != app.DevAccounts+1 {
		t.Errorf("accounts = %d", got)
	}
	if _, err := f.store.Account(ctx, "cust-1001"); !errors.Is(err, domain.ErrAccountNotFound) {
		t.Errorf("unknown account: err = %v", err)
	}
}

// confirmed is the OrderConfirmed event of an order of customer c1 for 300 EUR.
func confirmed(eventID, orderID string) app.Confirmation {
	return app.Confirmation{EventID: eventID, OrderID: orderID, CustomerID: "c1", Amount: 300, Currency: "EUR"}
}

func seedOne(t *testing.T, f fixture, id string, balance int64) {
	t.Helper()
	if _, err := f.store.SeedAccounts(ctxT(t), []domain.Account{{CustomerID: id, Balance: balance, Currency: "EUR"}}); err != nil {
		t.Fatal(err)
	}
}

func testLifecycle(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	seedOne(t, f, "c1", 1000)
	a1, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c1", Amount: 300, Currency: "EUR"})
	if err != nil || a1.Status != domain.StatusAuthorized || a1.Version != 1 {
		t.Fatalf("authorize o1 = %+v, %v", a1, err)
	}
	if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o2", CustomerID: "c1", Amount: 200, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	d, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o3", CustomerID: "c1", Amount: 501, Currency: "EUR"})
	if err != nil || d.Status != domain.StatusDeclined || d.DeclineReason != domain.DeclineInsufficientFunds {
		t.Fatalf("authorize o3 = %+v, %v; want declined", d, err)
	}
	if a := f.account(t, "c1"); a.Balance != 1000 || a.Held != 500 {
		t.Fatalf("after holds: %+v", a)
	}
	c, err := f.svc.Capture(ctx, "o1")
	if err != nil || c.Status != domain.StatusCaptured || c.Version != 2 {
		t.Fatalf("capture o1 = %+v, %v", c, err)
	}
	v, found, err := f.svc.Void(ctx, "o2")
	if err != nil || !found || v.Status != domain.StatusVoided || v.Version != 2 {
		t.Fatalf("void o2 = %+v %v %v", v, found, err)
	}
	if a := f.account(t, "c1"); a.Balance != 700 || a.Held != 0 {
		t.Fatalf("after capture and void: %+v", a)
	}
	// Round trip of the stored times.
	again, err := f.svc.Capture(ctx, "o1")
	if err != nil || !again.CreatedAt.Equal(a1.CreatedAt) || again.Version != 2 {
		t.Fatalf("capture again = %+v, %v; created %v", again, err, a1.CreatedAt)
	}

	for _, w := range []struct {
		order, kind string
		want        int64
	}{{"o1", "HOLD", 1}, {"o1", "DEBIT", 1}, {"o1", "RELEASE", 0}, {"o2", "HOLD", 1}, {"o2", "RELEASE", 1}, {"o2", "DEBIT", 0}, {"o3", "HOLD", 0}} {
		if got := f.count(t, "SELECT count(*) FROM ledger_entries WHERE order_id = ? AND kind = ?", w.order, w.kind); got != w.want {
			t.Errorf("ledger %s %s = %d, want %d", w.order, w.kind, got, w.want)
		}
	}
	// One event per version, in the payment topic, keyed by order.
	for order, want := range map[string]int64{"o1": 2, "o2": 2, "o3": 1} {
		if got := f.count(t, "SELECT count(*) FROM outbox WHERE msg_key = ? AND topic = ?", order, events.PaymentTopic); got != want {
			t.Errorf("events of %s = %d, want %d", order, got, want)
		}
	}
	// 5 changes committed events; the repeated capture committed none.
	f.mu.Lock()
	defer f.mu.Unlock()
	if *f.commits != 5 {
		t.Errorf("commit notifications = %d, want 5", *f.commits)
	}
}

func testRollback(t *testing.T, dsn string) {
	boom := errors.New("event writer down")
	fail := false
	var mu sync.Mutex
	f := newFixture(t, dsn, func(w store.EventWriter) store.EventWriter {
		return writerFunc(func(ctx context.Context, tx *sql.Tx, e domain.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return boom
			}
			return w.WriteEvent(ctx, tx, e)
		})
	})
	ctx := ctxT(t)
	seedOne(t, f, "c1", 1000)
	if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c1", Amount: 300, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if _, err := f.svc.Capture(ctx, "o1"); !errors.Is(err, boom) {
		t.Fatalf("capture with failing event writer: err = %v", err)
	}
	if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o2", CustomerID: "c1", Amount: 1, Currency: "EUR"}); !errors.Is(err, boom) {
		t.Fatalf("authorize with failing event writer: err = %v", err)
	}
	if a := f.account(t, "c1"); a.Balance != 1000 || a.Held != 300 {
		t.Errorf("account = %+v, want the state before the failed calls", a)
	}
	if got := f.count(t, "SELECT count(*) FROM authorizations WHERE order_id = 'o2' OR status = 'CAPTURED'"); got != 0 {
		t.Errorf("%d authorizations survived a rolled-back transaction", got)
	}
	if got := f.count(t, "SELECT count(*) FROM ledger_entries"); got != 1 {
		t.Errorf("ledger entries = %d, want 1 (the first hold)", got)
	}
	if got := f.count(t, "SELECT count(*) FROM outbox"); got != 1 {
		t.Errorf("outbox rows = %d, want 1", got)
	}
}

func testConcurrentSameOrder(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	seedOne(t, f, "c1", 1000)
	const n = 20
	var wg sync.WaitGroup
	results := make([]domain.Authorization, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c1", Amount: 300, Currency: "EUR"})
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i].Status != domain.StatusAuthorized || results[i].Version != 1 {
			t.Fatalf("call %d = %+v, %v", i, results[i], errs[i])
		}
	}
	if a := f.account(t, "c1"); a.Held != 300 {
		t.Errorf("held = %d after %d identical authorizations, want 300", a.Held, n)
	}
	if got := f.count(t, "SELECT count(*) FROM ledger_entries WHERE kind = 'HOLD'"); got != 1 {
		t.Errorf("holds = %d, want 1", got)
	}
	if got := f.count(t, "SELECT count(*) FROM outbox"); got != 1 {
		t.Errorf("events = %d, want 1", got)
	}
	_, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c1", Amount: 301, Currency: "EUR"})
	if !errors.Is(err, domain.ErrIdempotencyConflict) {
		t.Errorf("different amount: err = %v, want ErrIdempotencyConflict", err)
	}
}

func testInbox(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	seedOne(t, f, "c1", 1000)
	if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c1", Amount: 300, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	want := []app.Outcome{app.OutcomeApplied, app.OutcomeDuplicate, app.OutcomeDuplicate}
	for i, w := range want {
		got, err := f.svc.OrderConfirmed(ctx, confirmed("evt-1", "o1"))
		if err != nil || got != w {
			t.Fatalf("delivery %d: %q, %v; want %q", i+1, got, err, w)
		}
	}
	if got, err := f.svc.OrderConfirmed(ctx, confirmed("evt-2", "o1")); err != nil || got != app.OutcomeUnchanged {
		t.Errorf("second confirmation event: %q, %v", got, err)
	}
	if got, err := f.svc.OrderCancelled(ctx, "evt-3", "o1"); err != nil || got != app.OutcomeConflict {
		t.Errorf("cancel after capture: %q, %v; want conflict (settled, not retried)", got, err)
	}
	if got, err := f.svc.OrderCancelled(ctx, "evt-4", "o-unknown"); err != nil || got != app.OutcomeNoPayment {
		t.Errorf("cancel of an order without payment: %q, %v", got, err)
	}
	if a := f.account(t, "c1"); a.Balance != 700 || a.Held != 0 {
		t.Errorf("account = %+v, want one capture of 300", a)
	}
	if got := f.count(t, "SELECT count(*) FROM ledger_entries WHERE kind = 'DEBIT'"); got != 1 {
		t.Errorf("debits = %d, want 1", got)
	}
	if got := f.count(t, "SELECT count(*) FROM inbox WHERE consumer = ?", app.Consumer); got != 4 {
		t.Errorf("inbox records = %d, want 4 distinct events", got)
	}
}

func testLedgerGuard(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	insert := f.dialect.Rebind("INSERT INTO ledger_entries (order_id, kind, customer_id, amount_cents, created_at) VALUES (?, 'DEBIT', 'c1', 5, ?)")
	if _, err := f.db.ExecContext(ctx, insert, "o1", time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.ExecContext(ctx, insert, "o1", time.Now().UTC()); err == nil {
		t.Fatal("a second DEBIT of one order was accepted")
	}
	if got := f.count(t, "SELECT count(*) FROM ledger_entries"); got != 1 {
		t.Errorf("entries = %d", got)
	}
}

// testConcurrentHoldsOneAccount authorizes many orders of one account at once, more than it can
// afford: exactly what the balance covers is held, the rest declined, and no call fails.
func testConcurrentHoldsOneAccount(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	const n, affordable = 40, 10
	seedOne(t, f, "c1", affordable*100)
	var wg sync.WaitGroup
	results := make([]domain.Authorization, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: fmt.Sprintf("o%d", i), CustomerID: "c1", Amount: 100, Currency: "EUR"})
		})
	}
	wg.Wait()
	held := 0
	for i := range n {
		switch {
		case errs[i] != nil:
			t.Errorf("authorize o%d: %v", i, errs[i])
		case results[i].Status == domain.StatusAuthorized:
			held++
		case results[i].DeclineReason != domain.DeclineInsufficientFunds:
			t.Errorf("authorize o%d = %+v", i, results[i])
		}
	}
	if a := f.account(t, "c1"); held != affordable || a.Held != affordable*100 || a.Balance != affordable*100 {
		t.Errorf("%d authorized, account %+v; want %d holding all of it", held, a, affordable)
	}
	if got := f.count(t, "SELECT count(*) FROM ledger_entries WHERE kind = 'HOLD'"); got != affordable {
		t.Errorf("holds = %d, want %d", got, affordable)
	}
}

// testConcurrentMovesOneAccount authorizes orders of one account at once while others are voided,
// captured by call and captured by their OrderConfirmed event: every call answers, and money is
// conserved (balance + captured = the seed, nothing left held). A hold decided on one version of the
// account while another was updated failed here (CHECK violations, PostgreSQL).
func testConcurrentMovesOneAccount(t *testing.T, dsn string) {
	f := newFixture(t, dsn, nil)
	ctx := ctxT(t)
	const n, seed = 120, 3000
	seedOne(t, f, "c1", seed)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("o%d", i)
			a, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: id, CustomerID: "c1", Amount: 300, Currency: "EUR"})
			if err != nil {
				t.Errorf("authorize %s: %v", id, err)
				return
			}
			if a.Status != domain.StatusAuthorized {
				return
			}
			switch i % 3 {
			case 0:
				_, _, err = f.svc.Void(ctx, id)
			case 1:
				_, err = f.svc.Capture(ctx, id)
			default:
				var out app.Outcome
				out, err = f.svc.OrderConfirmed(ctx, confirmed("evt-"+id, id))
				if err == nil && out != app.OutcomeApplied {
					t.Errorf("OrderConfirmed %s: %s", id, out)
				}
			}
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
		})
	}
	wg.Wait()
	captured := f.count(t, "SELECT sum(amount_cents) FROM authorizations WHERE status = 'CAPTURED'")
	if a := f.account(t, "c1"); a.Held != 0 || a.Balance+captured != seed {
		t.Errorf("account %+v, captured %d: want nothing held and balance + captured = %d", a, captured, seed)
	}
	if open := f.count(t, "SELECT count(*) FROM authorizations WHERE status = 'AUTHORIZED'"); open != 0 {
		t.Errorf("%d authorizations left open", open)
	}
	debits := f.count(t, "SELECT sum(amount_cents) FROM ledger_entries WHERE kind = 'DEBIT'")
	holds := f.count(t, "SELECT sum(amount_cents) FROM ledger_entries WHERE kind = 'HOLD'")
	releases := f.count(t, "SELECT sum(amount_cents) FROM ledger_entries WHERE kind = 'RELEASE'")
	if debits != captured || holds != debits+releases {
		t.Errorf("ledger: holds %d, debits %d, releases %d; captured %d", holds, debits, releases, captured)
	}
	if events := f.count(t, "SELECT count(*) FROM outbox"); events != n+f.count(t, "SELECT count(*) FROM authorizations WHERE version = 2") {
		t.Errorf("%d events, want one per authorization and one per capture or void", events)
	}
}
