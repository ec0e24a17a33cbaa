package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// batchSKUs are the few hot SKUs of the batch tests, as in the bench.
var batchSKUs = []string{"SKU-0001", "SKU-0002", "SKU-0003", "SKU-0004", "SKU-0005", "SKU-0006"}

// batchEnv is a PostgreSQL inventory with batchSKUs seeded (onHand each), its commits counted.
type batchEnv struct {
	s        *store.Store
	db       *sql.DB
	d        sqldb.Dialect
	commits  *atomic.Int64
	received map[string]int64
}

func newBatchEnv(t *testing.T, dsn string, tp *sdktrace.TracerProvider, onHand int64) batchEnv {
	t.Helper()
	_, _ = storetest.Open(t, dsn) // migrates
	opts := sqldb.Options{}
	if tp != nil {
		opts.TracerProvider = tp
	}
	db, d, err := sqldb.Open(ctx(t), dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	e := batchEnv{db: db, d: d, commits: new(atomic.Int64), received: map[string]int64{}}
	e.s = store.New(db, d, events.NewOutbox(outbox.New(d, nil)), store.WithAfterCommit(func() { e.commits.Add(1) }))
	var ps []domain.Product
	for _, sku := range batchSKUs {
		ps = append(ps, domain.Product{SKU: sku, Name: sku, PriceCents: 100, Currency: "EUR", OnHand: onHand})
		e.received[sku] = onHand
	}
	if _, err := e.s.Seed(ctx(t), ps); err != nil {
		t.Fatal(err)
	}
	return e
}

// batchItems are order n's items: two SKUs three apart (n's, n+3's), and a second line of n's SKU
// for every third order, so that the orders of a batch overlap and each locks SKUs far apart.
func batchItems(n int) []domain.Item {
	a, b := batchSKUs[n%len(batchSKUs)], batchSKUs[(n+3)%len(batchSKUs)]
	items := []domain.Item{{SKU: b, Quantity: int64(1 + n%2)}, {SKU: a, Quantity: 1}}
	if n%3 == 0 {
		items = append(items, domain.Item{SKU: a, Quantity: 2})
	}
	return items
}

// reserveBatch reserves the orders from..to-1 and returns their confirmations, event "evt-<n>".
func (e batchEnv) reserveBatch(t *testing.T, from, to int) []app.Confirmation {
	t.Helper()
	var es []app.Confirmation
	for n := from; n < to; n++ {
		if _, err := e.s.Reserve(ctx(t), orderID(n), batchItems(n)); err != nil {
			t.Fatal(err)
		}
		es = append(es, app.Confirmation{EventID: fmt.Sprintf("evt-%d", n), OrderID: orderID(n)})
	}
	return es
}

// batchState is what order events change: the ledgers, the reservations' statuses, the inbox and the
// StockChanged events (their levels, deltas, causes and orders, in outbox order).
type batchState struct {
	Ledgers  map[string]storetest.Ledger
	Statuses map[string]string
	Inbox    int
	Events   []string
}

func (e batchEnv) state(t *testing.T) batchState {
	t.Helper()
	st := batchState{Ledgers: storetest.Ledgers(t, e.db),
		Statuses: sqldbtest.StringMap(t, e.db, "SELECT order_id, status FROM reservations")}
	if err := e.db.QueryRowContext(ctx(t), "SELECT count(*) FROM inbox").Scan(&st.Inbox); err != nil {
		t.Fatal(err)
	}
	st.Events = e.stockEvents(t, 0)
	return st
}

// stockEvents are the StockChanged events after outbox seq after, as sku/on_hand/reserved@version
// delta cause order.
func (e batchEnv) stockEvents(t *testing.T, after int64) []string {
	t.Helper()
	rows, err := e.db.QueryContext(ctx(t), "SELECT payload FROM outbox WHERE topic = $1 AND seq > $2 ORDER BY seq",
		events.InventoryTopic, after)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		var ev eventsv1.StockChanged
		if err := proto.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d/%d@%d %+d %s %s", ev.GetSku(), ev.GetOnHand(), ev.GetReserved(),
			ev.GetAggregateVersion(), ev.GetDelta(), ev.GetCause(), ev.GetOrderId()))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e batchEnv) lastSeq(t *testing.T) int64 {
	t.Helper()
	var seq int64
	if err := e.db.QueryRowContext(ctx(t), "SELECT COALESCE(max(seq), 0) FROM outbox").Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

// refuse gives batch to CommitBatchOnce, which must refuse it (not done, no error) without changing
// the state or notifying a commit.
func (e batchEnv) refuse(t *testing.T, batch []app.Confirmation) {
	t.Helper()
	before := e.state(t)
	e.commits.Store(0)
	if done, err := e.s.CommitBatchOnce(ctx(t), "inventory", batch); err != nil || done {
		t.Fatalf("batch = %v, %v; want not done, no error", done, err)
	}
	if after := e.state(t); !reflect.DeepEqual(after, before) {
		t.Errorf("refused batch changed the state:\n before %+v\n after  %+v", before, after)
	}
	if n := e.commits.Load(); n != 0 {
		t.Errorf("refused batch notified %d commits", n)
	}
}

// oneByOne applies es as the consumer's Handler does (app.OnOrderConfirmed): one CommitOnce each, a
// repeat or a reservation not to commit acknowledged.
func (e batchEnv) oneByOne(t *testing.T, es []app.Confirmation) {
	t.Helper()
	if err := e.applyOneByOne(ctx(t), es); err != nil {
		t.Fatal(err)
	}
}

func (e batchEnv) applyOneByOne(ctx context.Context, es []app.Confirmation) error {
	for _, c := range es {
		err := e.s.CommitOnce(ctx, "inventory", c.EventID, c.OrderID)
		switch {
		case err == nil, errors.Is(err, inbox.ErrAlreadyProcessed), errors.Is(err, domain.ErrReservationNotFound),
			errors.Is(err, domain.ErrReservationReleased):
		default:
			return fmt.Errorf("%s: %w", c.EventID, err)
		}
	}
	return nil
}

// A batch of 6 OrderConfirmed over overlapping SKUs commits them all in one transaction of 2
// statements (commitBatch: the reservations, the inbox records and every product row's stock at once;
// one outbox insert of all the StockChanged) in two round trips, [BEGIN; commitBatch] and [outbox
// insert; COMMIT]; one at a time the same commits cost 2 statements, one transaction and two round
// trips each (12, 6 and 12). Each StockChanged carries the levels right after its own order's commit,
// as one at a time: where orders of the batch share an SKU, each sees the ones before it.
func TestCommitBatchOnPostgres(t *testing.T) {
	t.Parallel()
	const n = 6
	rt := roundTrips{spans: tracetest.NewInMemoryExporter()}
	rt.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(rt.spans))
	batched := newBatchEnv(t, sqldbtest.Postgres(t), rt.tp, 50)
	alone := newBatchEnv(t, sqldbtest.Postgres(t), nil, 50)
	es := batched.reserveBatch(t, 0, n)
	alone.reserveBatch(t, 0, n)
	// Not in order id or SKU order: the events come in the batch's order.
	es = []app.Confirmation{es[4], es[1], es[5], es[0], es[3], es[2]}
	seq := batched.lastSeq(t)
	batched.commits.Store(0)
	var (
		done bool
		err  error
	)
	got := rt.count(t, func(c context.Context) { done, err = batched.s.CommitBatchOnce(c, "inventory", es) })
	if err != nil || !done {
		t.Fatalf("batch = %v, %v; want done", done, err)
	}
	got.check(t, fmt.Sprintf("batch of %d", n), counts{statements: 2, transactions: 1, roundTrips: 2})
	if n := batched.commits.Load(); n != 1 {
		t.Errorf("after-commit calls = %d, want 1 (one transaction)", n)
	}
	aloneSeq := alone.lastSeq(t)
	alone.oneByOne(t, es)
	b, a := batched.state(t), alone.state(t)
	if !reflect.DeepEqual(b.Ledgers, a.Ledgers) || !reflect.DeepEqual(b.Statuses, a.Statuses) || b.Inbox != a.Inbox {
		t.Errorf("after the batch:\n %+v\none at a time:\n %+v", b, a)
	}
	if gotEv, wantEv := batched.stockEvents(t, seq), alone.stockEvents(t, aloneSeq); !reflect.DeepEqual(gotEv, wantEv) {
		t.Errorf("StockChanged of the batch:\n %q\none at a time:\n %q", gotEv, wantEv)
	}
	for _, c := range es {
		if b.Statuses[c.OrderID] != string(domain.StatusCommitted) {
			t.Errorf("%s: %s, want COMMITTED", c.OrderID, b.Statuses[c.OrderID])
		}
	}
	if b.Inbox != n {
		t.Errorf("inbox = %d, want %d", b.Inbox, n)
	}
	// Exact stock: every unit of the orders left on_hand, nothing stays reserved.
	sold := map[string]int64{}
	for i := range n {
		for _, it := range batchItems(i) {
			sold[it.SKU] += it.Quantity
		}
	}
	for _, sku := range batchSKUs {
		if l := b.Ledgers[sku]; l.OnHand != 50-sold[sku] || l.Reserved != 0 || l.Sold != sold[sku] {
			t.Errorf("%s = %+v, want on_hand %d, reserved 0, sold %d", sku, l, 50-sold[sku], sold[sku])
		}
	}
	storetest.CheckConserved(t, batched.db, batched.received)
	// One event per order and SKU (Needs), in the batch's order.
	var wantOrders []string
	for _, c := range es {
		for range domain.Needs(batchItems(orderNumber(t, c.OrderID))) {
			wantOrders = append(wantOrders, c.OrderID)
		}
	}
	evs := batched.stockEvents(t, seq)
	if len(evs) != len(wantOrders) {
		t.Fatalf("%d StockChanged, want %d: %q", len(evs), len(wantOrders), evs)
	}
	for i, ev := range evs {
		if want := "COMMITTED " + wantOrders[i]; len(ev) < len(want) || ev[len(ev)-len(want):] != want {
			t.Errorf("event %d = %s, want one of %s", i, ev, wantOrders[i])
		}
	}
}

func orderNumber(t *testing.T, id string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(id, "00000000-0000-4000-8000-%d", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A batch with one commit that is not the plain one applies none of them: the consumer then gives
// each to the Handler, and the result is what the Handler alone makes of them.
func TestCommitBatchNotPlainAppliesNothing(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		prepare func(t *testing.T, e batchEnv, es []app.Confirmation)
		extra   app.Confirmation // added to the batch when set
	}{
		"released reservation": {prepare: func(t *testing.T, e batchEnv, _ []app.Confirmation) {
			if _, err := e.s.Release(ctx(t), orderID(2)); err != nil {
				t.Fatal(err)
			}
		}},
		"committed by the order service": {prepare: func(t *testing.T, e batchEnv, _ []app.Confirmation) {
			if _, err := e.s.Commit(ctx(t), orderID(2)); err != nil {
				t.Fatal(err)
			}
		}},
		"repeat of an applied event": {prepare: func(t *testing.T, e batchEnv, es []app.Confirmation) {
			e.oneByOne(t, es[2:3])
		}},
		"unknown order":  {extra: app.Confirmation{EventID: "evt-x", OrderID: orderID(99)}},
		"an order twice": {extra: app.Confirmation{EventID: "evt-x", OrderID: orderID(1)}},
		"an event twice": {extra: app.Confirmation{EventID: "evt-1", OrderID: orderID(1)}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			batched, alone := newBatchEnv(t, sqldbtest.Postgres(t), nil, 50), newBatchEnv(t, sqldbtest.Postgres(t), nil, 50)
			var batch []app.Confirmation
			for _, e := range []batchEnv{batched, alone} {
				es := e.reserveBatch(t, 0, 5)
				if tc.prepare != nil {
					tc.prepare(t, e, es)
				}
				batch = es
				if tc.extra.OrderID != "" {
					batch = append(slices.Clone(es[:3]), tc.extra)
					batch = append(batch, es[3:]...)
				}
			}
			batched.refuse(t, batch)
			batched.oneByOne(t, batch)
			alone.oneByOne(t, batch)
			got, want := batched.state(t), alone.state(t)
			if !reflect.DeepEqual(got.Ledgers, want.Ledgers) || !reflect.DeepEqual(got.Statuses, want.Statuses) ||
				got.Inbox != want.Inbox || len(got.Events) != len(want.Events) {
				t.Errorf("end state after the refused batch:\n %+v\nwithout batching:\n %+v", got, want)
			}
			if got.Statuses[orderID(0)] != string(domain.StatusCommitted) || got.Statuses[orderID(4)] != string(domain.StatusCommitted) {
				t.Errorf("orders 0, 4 = %s, %s; want COMMITTED", got.Statuses[orderID(0)], got.Statuses[orderID(4)])
			}
			storetest.CheckConserved(t, batched.db, batched.received)
		})
	}
}

// A batch delivered again (the consumer crashed after the commit, before the offsets) commits
// nothing the second time: the batch is refused, and the Handler finds each event a duplicate.
func TestRepeatedCommitBatchCommitsOnce(t *testing.T) {
	t.Parallel()
	e := newBatchEnv(t, sqldbtest.Postgres(t), nil, 50)
	es := e.reserveBatch(t, 0, 6)
	if done, err := e.s.CommitBatchOnce(ctx(t), "inventory", es); err != nil || !done {
		t.Fatalf("first batch = %v, %v", done, err)
	}
	first := e.state(t)
	e.refuse(t, es)
	for _, c := range es {
		if err := e.s.CommitOnce(ctx(t), "inventory", c.EventID, c.OrderID); !errors.Is(err, inbox.ErrAlreadyProcessed) {
			t.Errorf("%s one by one after the repeat: %v, want already processed", c.EventID, err)
		}
	}
	if again := e.state(t); !reflect.DeepEqual(again, first) {
		t.Errorf("the repeats changed the state:\n before %+v\n after  %+v", first, again)
	}
	storetest.CheckConserved(t, e.db, e.received)
}

// Batches of the same SKUs run at once in opposite orders, while reserves of those SKUs and the order
// service's commit of an order of each batch run too, never deadlock: the batch locks its
// reservations, then all its product rows in SKU order, as reserves and settlements lock theirs.
// (Locking the products in the batch's order, or in no order — one UPDATE of them without the sorted
// lock: checked, "deadlock detected" in the first round — a batch takes SKU-0004 then SKU-0001 while
// a reserve takes SKU-0001 then SKU-0004; locking the products before the reservations, a batch waits
// for the reservation the settlement's commit holds while that commit waits for the batch's
// products.)
func TestConcurrentCommitBatchesAndReservesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	e := newBatchEnv(t, sqldbtest.Postgres(t), nil, 1_000_000)
	const rounds = 8
	next := 0
	var refused atomic.Int64
	for r := range rounds {
		var batches [2][]app.Confirmation
		for b := range batches {
			batches[b] = e.reserveBatch(t, next, next+len(batchSKUs))
			next += len(batchSKUs)
			if b == 1 {
				for i, j := 0, len(batches[b])-1; i < j; i, j = i+1, j-1 {
					batches[b][i], batches[b][j] = batches[b][j], batches[b][i]
				}
			}
		}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			mu    sync.Mutex
			errs  []error
		)
		fail := func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		for b := range batches {
			wg.Go(func() {
				<-start
				done, err := e.s.CommitBatchOnce(context.WithoutCancel(ctx(t)), "inventory", batches[b])
				if err != nil {
					fail(fmt.Errorf("batch %d: %w", b, err))
					return
				}
				if !done {
					refused.Add(1)
					if err := e.applyOneByOne(context.WithoutCancel(ctx(t)), batches[b]); err != nil { // as the consumer does
						fail(fmt.Errorf("batch %d one by one: %w", b, err))
					}
				}
			})
			// The order service's settlement commits an order of the batch meanwhile: it takes the
			// reservation, then the products.
			wg.Go(func() {
				<-start
				if _, err := e.s.Commit(context.WithoutCancel(ctx(t)), batches[b][2].OrderID); err != nil {
					fail(fmt.Errorf("commit %s: %w", batches[b][2].OrderID, err))
				}
			})
		}
		for i := range 4 {
			wg.Go(func() {
				<-start
				id := 1_000_000 + r*10 + i
				items := []domain.Item{{SKU: batchSKUs[(i+1)%len(batchSKUs)], Quantity: 1}, {SKU: batchSKUs[(i+4)%len(batchSKUs)], Quantity: 1}}
				if _, err := e.s.Reserve(context.WithoutCancel(ctx(t)), orderID(id), items); err != nil {
					fail(fmt.Errorf("reserve %d: %w", id, err))
				}
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			t.Errorf("round %d: %v", r, err)
		}
		if len(errs) > 0 {
			break
		}
	}
	storetest.CheckConserved(t, e.db, e.received)
	// Every order of the batches committed, each event recorded once (when the settlement committed
	// an order before its batch, the event is recorded by the Handler's CommitOnce).
	st := e.state(t)
	if st.Inbox != 2*rounds*len(batchSKUs) {
		t.Errorf("inbox = %d, want %d", st.Inbox, 2*rounds*len(batchSKUs))
	}
	for id, status := range st.Statuses {
		if n := orderNumber(t, id); n < next && status != string(domain.StatusCommitted) {
			t.Errorf("%s = %s, want COMMITTED", id, status)
		}
	}
	t.Logf("%d of %d batches refused (an order committed first by the settlement)", refused.Load(), 2*rounds)
}

// On SQLite every event keeps its own inbox transaction: the batch is always left to CommitOnce.
func TestCommitBatchOnSQLiteIsLeftToTheHandler(t *testing.T) {
	t.Parallel()
	db, d := storetest.Open(t, sqldbtest.SQLite(t))
	s := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
	if done, err := s.CommitBatchOnce(ctx(t), "inventory", []app.Confirmation{{EventID: "evt-1", OrderID: orderID(1)}}); err != nil || done {
		t.Fatalf("batch on SQLite = %v, %v; want not done", done, err)
	}
}
