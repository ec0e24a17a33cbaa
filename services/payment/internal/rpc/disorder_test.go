package rpc_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sagatest"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
)

// TestSagaDisorder is RELIABILITY.md R13 for payment: over real loopback gRPC, 200 orders get their
// authorize / capture / void calls duplicated and in random order (compensation before action
// included), sequentially for half the orders and all at once for the other half. Only the capture
// plan gets one more capture afterwards (the saga retries a capture until it is answered); a void sent
// once, in whatever order, must be enough. Then: money conserved, nothing held, 0 double charges,
// every order captured once or released, never an order both tombstoned and authorized.
func TestSagaDisorder(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			sagaDisorder(t, b.DSN(t))
		})
	}
}

func sagaDisorder(t *testing.T, dsn string) {
	const (
		orders   = 200
		balance  = 100_000
		nCustomr = 5
	)
	var accounts []domain.Account
	for c := range nCustomr {
		accounts = append(accounts, eur(fmt.Sprintf("cust-r13-%d", c), balance))
	}
	initial := int64(balance * nCustomr)
	h := start(t, dsn, accounts...)
	ctx := ctxT(t, 3*time.Minute)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 13))
	// The sagatest plans in payment's terms, for the log.
	planName := [...]string{sagatest.PlanConfirm: "capture", sagatest.PlanCompensate: "void", sagatest.PlanConflict: "conflict"}
	scripts := sagatest.Scripts(rng, orders, func(i int) string { return orderID(13_000 + i) },
		func(i int, id string) *paymentv1.AuthorizePaymentRequest {
			return &paymentv1.AuthorizePaymentRequest{OrderId: id, CustomerId: accounts[i%nCustomr].CustomerID,
				AmountCents: int64(100 + rng.IntN(900)), Currency: "EUR"}
		})

	var (
		authRefused, captureNotFound, capturePrecond, voidPrecond, voidBeforeAuth atomic.Int64
		rec                                                                       sagatest.Recorder
	)
	calls := sagatest.Drive(scripts, func(s sagatest.Script[*paymentv1.AuthorizePaymentRequest], c sagatest.Call) {
		switch c {
		case sagatest.CallAction:
			resp, err := h.client.AuthorizePayment(ctx, s.Req)
			switch {
			case rpcerr.Code(err) == codes.FailedPrecondition && rpcerr.Reason(err) == rpc.ReasonAuthorizationVoided:
				authRefused.Add(1)
			case err != nil:
				rec.Fail("authorize %s: %v", s.ID, err)
			case resp.GetAuthorization().GetStatus() == paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_DECLINED:
				rec.Fail("authorize %s declined: balances are meant to cover every order", s.ID)
			}
		case sagatest.CallConfirm:
			resp, err := h.client.CapturePayment(ctx, &paymentv1.CapturePaymentRequest{OrderId: s.ID})
			switch {
			case rpcerr.Code(err) == codes.NotFound: // arrived before any authorize
				captureNotFound.Add(1)
			case rpcerr.Code(err) == codes.FailedPrecondition: // voided first (tombstone or VOIDED)
				capturePrecond.Add(1)
			case err != nil:
				rec.Fail("capture %s: %v", s.ID, err)
			case resp.GetAuthorization().GetStatus() == paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED:
				rec.Confirmed(s.ID)
			}
		case sagatest.CallCompensate:
			resp, err := h.client.VoidPayment(ctx, &paymentv1.VoidPaymentRequest{OrderId: s.ID})
			switch {
			case rpcerr.Code(err) == codes.FailedPrecondition: // captured first
				voidPrecond.Add(1)
			case err != nil:
				rec.Fail("void %s: %v", s.ID, err)
			case resp.GetAuthorization() == nil:
				voidBeforeAuth.Add(1)
			}
		}
	})
	// The saga retries a capture until it is answered; an authorize of these orders has landed by now.
	for _, s := range scripts {
		if s.Plan != sagatest.PlanConfirm {
			continue
		}
		if resp, err := h.client.CapturePayment(ctx, &paymentv1.CapturePaymentRequest{OrderId: s.ID}); err != nil ||
			resp.GetAuthorization().GetStatus() != paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED {
			rec.Fail("final capture %s = %v, %v", s.ID, resp, err)
		} else {
			rec.Confirmed(s.ID)
		}
	}
	rec.Report(t)

	q := func(query string, args ...any) int64 {
		t.Helper()
		var n int64
		if err := h.db.QueryRowContext(ctx, h.dialect.Rebind("SELECT COALESCE(("+query+"), 0)"), args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	sumBalance := q("SELECT sum(balance_cents) FROM accounts")
	sumHeld := q("SELECT sum(held_cents) FROM accounts")
	sumCaptured := q("SELECT sum(amount_cents) FROM authorizations WHERE status = 'CAPTURED'")
	debits := q("SELECT sum(amount_cents) FROM ledger_entries WHERE kind = 'DEBIT'")
	doubleCharges := q("SELECT count(*) FROM (SELECT order_id FROM ledger_entries WHERE kind = 'DEBIT' GROUP BY order_id HAVING count(*) > 1) d")
	both := q("SELECT count(*) FROM authorizations a JOIN void_tombstones v ON v.order_id = a.order_id")
	open := q("SELECT count(*) FROM authorizations WHERE status = 'AUTHORIZED'")
	// Captured once (HOLD + DEBIT, no RELEASE) or released (HOLD + RELEASE, or nothing at all).
	badLedger := q(`SELECT count(*) FROM authorizations a WHERE NOT (
		(a.status = 'CAPTURED' AND (SELECT count(*) FROM ledger_entries e WHERE e.order_id = a.order_id AND e.kind = 'DEBIT') = 1
			AND (SELECT count(*) FROM ledger_entries e WHERE e.order_id = a.order_id AND e.kind = 'RELEASE') = 0)
		OR (a.status = 'VOIDED' AND (SELECT count(*) FROM ledger_entries e WHERE e.order_id = a.order_id AND e.kind = 'DEBIT') = 0
			AND (SELECT count(*) FROM ledger_entries e WHERE e.order_id = a.order_id AND e.kind = 'RELEASE') = 1))`)
	if sumBalance+sumCaptured != initial {
		t.Errorf("money not conserved: balances %d + captured %d = %d, want %d", sumBalance, sumCaptured, sumBalance+sumCaptured, initial)
	}
	if debits != sumCaptured {
		t.Errorf("debited %d, captured %d", debits, sumCaptured)
	}
	if doubleCharges != 0 {
		t.Errorf("%d orders charged twice", doubleCharges)
	}
	if sumHeld != 0 || open != 0 {
		t.Errorf("after the saga: %d cents still held, %d authorizations open", sumHeld, open)
	}
	if both != 0 {
		t.Errorf("%d orders both tombstoned and authorized", both)
	}
	if badLedger != 0 {
		t.Errorf("%d orders neither captured once nor released", badLedger)
	}

	final := map[string]string{}
	rows, err := h.db.QueryContext(ctx, "SELECT order_id, status FROM authorizations")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			t.Fatal(err)
		}
		final[id] = st
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	tombstones := map[string]bool{}
	rows, err = h.db.QueryContext(ctx, "SELECT order_id FROM void_tombstones")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		tombstones[id] = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	perPlan := sagatest.Tally{}
	for _, s := range scripts {
		st := final[s.ID]
		if tombstones[s.ID] {
			st = "TOMBSTONE"
		}
		perPlan.Add(planName[s.Plan], st)
		switch {
		case s.Plan == sagatest.PlanConfirm && st != "CAPTURED":
			t.Errorf("%s (capture plan) ended %s", s.ID, st)
		case s.Plan == sagatest.PlanCompensate && st != "VOIDED" && st != "TOMBSTONE":
			t.Errorf("%s (void plan) ended %s", s.ID, st)
		case s.Plan == sagatest.PlanConflict && st != "CAPTURED" && st != "VOIDED" && st != "TOMBSTONE":
			t.Errorf("%s (conflict) ended %s", s.ID, st)
		}
		if rec.WasConfirmed(s.ID) && st != "CAPTURED" {
			t.Errorf("%s: capture acknowledged, ended %s", s.ID, st)
		}
	}
	t.Logf("R13 payment %s: seed %d, %d orders, %d calls; AUTHORIZATION_VOIDED refusals %d, voids before authorize %d, "+
		"captures before authorize %d, captures refused %d, voids refused (captured) %d; final by plan %v; "+
		"balances %d + captured %d = %d (initial %d), held %d, double charges %d",
		t.Name(), seed, orders, calls, authRefused.Load(), voidBeforeAuth.Load(), captureNotFound.Load(), capturePrecond.Load(),
		voidPrecond.Load(), perPlan, sumBalance, sumCaptured, sumBalance+sumCaptured, initial, sumHeld, doubleCharges)
	if authRefused.Load() == 0 || voidBeforeAuth.Load() == 0 {
		t.Errorf("the run never put a void before its authorize; the disorder was not exercised")
	}
}
