package store_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// state is what the order events change, without the times and the ids the store makes up.
type state struct {
	Accounts       map[string][2]int64 // balance, held
	Authorizations map[string]string   // status@version
	Ledger         map[string]int64    // per kind
	Inbox, Outbox  int64
}

func (f fixture) state(t *testing.T) state {
	t.Helper()
	ctx := ctxT(t)
	s := state{Accounts: map[string][2]int64{}, Ledger: map[string]int64{}}
	rows, err := f.db.QueryContext(ctx, "SELECT customer_id, balance_cents, held_cents FROM accounts")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var (
			id            string
			balance, held int64
		)
		if err := rows.Scan(&id, &balance, &held); err != nil {
			t.Fatal(err)
		}
		s.Accounts[id] = [2]int64{balance, held}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	s.Authorizations = sqldbtest.StringMap(t, f.db, "SELECT order_id, status || '@' || version FROM authorizations")
	for _, k := range []domain.EntryKind{domain.EntryHold, domain.EntryDebit, domain.EntryRelease} {
		s.Ledger[string(k)] = f.count(t, "SELECT count(*) FROM ledger_entries WHERE kind = ?", string(k))
	}
	s.Inbox = f.count(t, "SELECT count(*) FROM inbox")
	s.Outbox = f.count(t, "SELECT count(*) FROM outbox")
	return s
}

// batchOrders are the orders of the batch tests: o1, o3 of c1 and o2, o4 of c2, each authorized, o3
// then voided and o2 captured on its event evt-2.
func batchOrders(t *testing.T, f fixture) []app.Confirmation {
	t.Helper()
	ctx := ctxT(t)
	seedOne(t, f, "c1", 10000)
	seedOne(t, f, "c2", 10000)
	var es []app.Confirmation
	for i, cust := range []string{"c1", "c2", "c1", "c2"} {
		e := app.Confirmation{EventID: fmt.Sprintf("evt-%d", i+1), OrderID: fmt.Sprintf("o%d", i+1), CustomerID: cust,
			Amount: int64(100 * (i + 3)), Currency: "EUR"}
		if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: e.OrderID, CustomerID: cust, Amount: e.Amount, Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if _, found, err := f.svc.Void(ctx, "o3"); err != nil || !found {
		t.Fatalf("void o3: %v %v", found, err)
	}
	if out, err := f.svc.OrderConfirmed(ctx, es[1]); err != nil || out != app.OutcomeApplied {
		t.Fatalf("capture o2: %s %v", out, err)
	}
	return es
}

// refuse gives batch to OrderConfirmedBatch, which must refuse it (not done, no error) without
// changing the state or notifying a commit.
func (f fixture) refuse(t *testing.T, batch []app.Confirmation) {
	t.Helper()
	before := f.state(t)
	*f.commits = 0
	if done, err := f.svc.OrderConfirmedBatch(ctxT(t), batch); err != nil || done {
		t.Fatalf("batch = %v, %v; want not done, no error", done, err)
	}
	if after := f.state(t); !reflect.DeepEqual(after, before) {
		t.Errorf("refused batch changed the state:\n before %+v\n after  %+v", before, after)
	}
	if *f.commits != 0 {
		t.Errorf("refused batch notified %d commits", *f.commits)
	}
}

// oneByOne applies es as the consumer's Handler does, one at a time.
func oneByOne(t *testing.T, f fixture, es []app.Confirmation) []app.Outcome {
	t.Helper()
	var outs []app.Outcome
	for _, e := range es {
		out, err := f.svc.OrderConfirmed(ctxT(t), e)
		if err != nil {
			t.Fatalf("%s: %v", e.EventID, err)
		}
		outs = append(outs, out)
	}
	return outs
}

// A batch with one event that is not the plain capture applies none of them: the consumer then gives
// each to the Handler, and the result is what the Handler alone makes of them.
func TestBatchWithAnEventNotPlainAppliesNothing(t *testing.T) {
	t.Parallel()
	for name, pick := range map[string][]int{
		"voided authorization":       {0, 2, 3}, // o3 was voided
		"repeat of a captured event": {0, 1, 3}, // evt-2 is in the inbox, o2 captured
		"event without its payment":  {0, 3, -1},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			batched, alone := newFixture(t, sqldbtest.Postgres(t), nil), newFixture(t, sqldbtest.Postgres(t), nil)
			var batch []app.Confirmation
			for _, f := range []fixture{batched, alone} {
				es := batchOrders(t, f)
				batch = batch[:0]
				for _, i := range pick {
					if i < 0 {
						batch = append(batch, app.Confirmation{EventID: "evt-x", OrderID: "o1"}) // only the order
						continue
					}
					batch = append(batch, es[i])
				}
			}
			batched.refuse(t, batch)
			gotOuts, wantOuts := oneByOne(t, batched, batch), oneByOne(t, alone, batch)
			if !reflect.DeepEqual(gotOuts, wantOuts) {
				t.Errorf("outcomes after the refused batch %v, without batching %v", gotOuts, wantOuts)
			}
			got, want := batched.state(t), alone.state(t)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("end state after the refused batch:\n %+v\nwithout batching:\n %+v", got, want)
			}
			if got.Authorizations["o1"] != "CAPTURED@2" || got.Authorizations["o4"] != "CAPTURED@2" {
				t.Errorf("o1, o4 = %s, %s; want captured", got.Authorizations["o1"], got.Authorizations["o4"])
			}
		})
	}
}

// A batch delivered again (the consumer crashed after the commit, before the offsets) captures
// nothing the second time: each capture statement finds its event in the inbox (and its
// authorization CAPTURED), so the batch is refused and the Handler finds each a duplicate.
func TestRepeatedBatchCapturesOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, sqldbtest.Postgres(t), nil)
	ctx := ctxT(t)
	seedOne(t, f, "c1", 10000)
	seedOne(t, f, "c2", 10000)
	var (
		es    []app.Confirmation
		total int64
	)
	for i := range 4 {
		e := app.Confirmation{EventID: fmt.Sprintf("evt-%d", i), OrderID: fmt.Sprintf("o%d", i),
			CustomerID: []string{"c1", "c2"}[i%2], Amount: int64(100 * (i + 1)), Currency: "EUR"}
		if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: e.OrderID, CustomerID: e.CustomerID, Amount: e.Amount, Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		es, total = append(es, e), total+e.Amount
	}
	if done, err := f.svc.OrderConfirmedBatch(ctx, es); err != nil || !done {
		t.Fatalf("first batch = %v, %v", done, err)
	}
	first := f.state(t)
	if first.Ledger["DEBIT"] != 4 || first.Inbox != 4 || first.Outbox != 8 {
		t.Fatalf("after the first batch: %+v", first)
	}
	f.refuse(t, es)
	for i, out := range oneByOne(t, f, es) {
		if out != app.OutcomeDuplicate {
			t.Errorf("%s one by one after the repeat: %s, want duplicate", es[i].EventID, out)
		}
	}
	end := f.state(t)
	if !reflect.DeepEqual(end, first) {
		t.Errorf("the Handler's pass changed the state:\n before %+v\n after  %+v", first, end)
	}
	// Money: every amount debited once, nothing held.
	if got := end.Accounts["c1"][0] + end.Accounts["c2"][0]; got != 20000-total || end.Accounts["c1"][1]+end.Accounts["c2"][1] != 0 {
		t.Errorf("accounts %v; want %d in all, nothing held", end.Accounts, 20000-total)
	}
}

// Batches of different orders of the same customers, run at once in opposite orders, both commit:
// the store runs each in (customer, order) order, so they take the account rows in one order and
// cannot deadlock (in the batch's order, PostgreSQL aborts one with "deadlock detected").
func TestConcurrentBatchesTakeAccountsInOneOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, sqldbtest.Postgres(t), nil)
	ctx := ctxT(t)
	customers := []string{"c1", "c2", "c3", "c4", "c5", "c6"}
	for _, c := range customers {
		seedOne(t, f, c, 1_000_000)
	}
	const rounds = 10
	for r := range rounds {
		var batches [2][]app.Confirmation
		for b := range batches {
			for i := range customers {
				cust := customers[i]
				if b == 1 {
					cust = customers[len(customers)-1-i] // the other batch in the opposite order
				}
				e := app.Confirmation{EventID: fmt.Sprintf("evt-%d-%d-%s", r, b, cust), OrderID: fmt.Sprintf("o-%d-%d-%s", r, b, cust),
					CustomerID: cust, Amount: 10, Currency: "EUR"}
				if _, err := f.svc.Authorize(ctx, domain.AuthorizeRequest{OrderID: e.OrderID, CustomerID: cust, Amount: 10, Currency: "EUR"}); err != nil {
					t.Fatal(err)
				}
				batches[b] = append(batches[b], e)
			}
		}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  [2]error
		)
		for b := range batches {
			wg.Go(func() {
				<-start
				done, err := f.svc.OrderConfirmedBatch(context.WithoutCancel(ctx), batches[b])
				if err == nil && !done {
					err = fmt.Errorf("not done")
				}
				errs[b] = err
			})
		}
		close(start)
		wg.Wait()
		for b, err := range errs {
			if err != nil {
				t.Fatalf("round %d, batch %d: %v", r, b, err)
			}
		}
	}
	end := f.state(t)
	if end.Ledger["DEBIT"] != 2*rounds*int64(len(customers)) {
		t.Errorf("debits = %d, want %d", end.Ledger["DEBIT"], 2*rounds*len(customers))
	}
	for _, c := range customers {
		if a := end.Accounts[c]; a[0] != 1_000_000-2*rounds*10 || a[1] != 0 {
			t.Errorf("%s = %v", c, a)
		}
	}
}
