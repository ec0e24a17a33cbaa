package rpc_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
	"github.com/shopmesh/shopmesh/services/payment/internal/store"
	"github.com/shopmesh/shopmesh/services/payment/migrations"
)

type harness struct {
	client  paymentv1.PaymentServiceClient
	db      *sql.DB
	dialect sqldb.Dialect
	store   *store.Store
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// start serves the payment API on a loopback port through the platform's server (interceptors,
// validation included) over a fresh database, with the given accounts.
func start(t *testing.T, dsn string, accounts ...domain.Account) harness {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	if err := migrate.UpAll(ctx, dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)
	st := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
	if _, err := st.SeedAccounts(ctx, accounts); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	cfg := config.Default(config.Test)
	cfg.Service, cfg.ListenAddr = "payment", "127.0.0.1:0"
	p, err := platform.New(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := p.NewServer()
	uc, err := app.New(app.Deps{Store: st}, app.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	rpc.NewServer(uc, logger).Register(srv)
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(serveCtx, srv, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return harness{client: paymentv1.NewPaymentServiceClient(conn), db: db, dialect: d, store: st}
}

func orderID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

func eur(id string, balance int64) domain.Account {
	return domain.Account{CustomerID: id, Balance: balance, Currency: "EUR"}
}

func TestPaymentAPI(t *testing.T) {
	t.Parallel()
	h := start(t, sqldbtest.SQLite(t), eur("cust-0001", 1000), eur("cust-broke", 0),
		domain.Account{CustomerID: "cust-usd", Balance: 1000, Currency: "USD"})
	ctx := ctxT(t, time.Minute)
	authorize := func(order int, customer string, amount int64) (*paymentv1.Authorization, error) {
		resp, err := h.client.AuthorizePayment(ctx, &paymentv1.AuthorizePaymentRequest{
			OrderId: orderID(order), CustomerId: customer, AmountCents: amount, Currency: "EUR"})
		return resp.GetAuthorization(), err
	}
	capture := func(order int) (*paymentv1.Authorization, error) {
		resp, err := h.client.CapturePayment(ctx, &paymentv1.CapturePaymentRequest{OrderId: orderID(order)})
		return resp.GetAuthorization(), err
	}
	void := func(order int) (*paymentv1.Authorization, error) {
		resp, err := h.client.VoidPayment(ctx, &paymentv1.VoidPaymentRequest{OrderId: orderID(order)})
		return resp.GetAuthorization(), err
	}
	const (
		authorized = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED
		declined   = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_DECLINED
		captured   = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED
		voided     = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED
	)
	steps := []struct {
		name       string
		call       func() (*paymentv1.Authorization, error)
		wantCode   codes.Code
		wantReason string
		wantStatus paymentv1.AuthorizationStatus
		wantDecl   paymentv1.DeclineReason
		wantVer    int64
	}{
		{"authorize holds", func() (*paymentv1.Authorization, error) { return authorize(1, "cust-0001", 400) }, codes.OK, "", authorized, 0, 1},
		{"repeat returns the same", func() (*paymentv1.Authorization, error) { return authorize(1, "cust-0001", 400) }, codes.OK, "", authorized, 0, 1},
		{"repeat with another amount", func() (*paymentv1.Authorization, error) { return authorize(1, "cust-0001", 401) }, codes.AlreadyExists, rpc.ReasonIdempotencyConflict, 0, 0, 0},
		{"repeat with another customer", func() (*paymentv1.Authorization, error) { return authorize(1, "cust-broke", 400) }, codes.AlreadyExists, rpc.ReasonIdempotencyConflict, 0, 0, 0},
		{"over the available declines", func() (*paymentv1.Authorization, error) { return authorize(2, "cust-0001", 601) }, codes.OK, "", declined, paymentv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS, 1},
		{"broke customer declines", func() (*paymentv1.Authorization, error) { return authorize(3, "cust-broke", 1) }, codes.OK, "", declined, paymentv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS, 1},
		{"unknown customer declines", func() (*paymentv1.Authorization, error) { return authorize(4, "cust-nobody", 1) }, codes.OK, "", declined, paymentv1.DeclineReason_DECLINE_REASON_ACCOUNT_NOT_FOUND, 1},
		{"currency mismatch declines", func() (*paymentv1.Authorization, error) { return authorize(5, "cust-usd", 1) }, codes.OK, "", declined, paymentv1.DeclineReason_DECLINE_REASON_CURRENCY_MISMATCH, 1},
		{"capture", func() (*paymentv1.Authorization, error) { return capture(1) }, codes.OK, "", captured, 0, 2},
		{"capture again", func() (*paymentv1.Authorization, error) { return capture(1) }, codes.OK, "", captured, 0, 2},
		{"void a captured one", func() (*paymentv1.Authorization, error) { return void(1) }, codes.FailedPrecondition, rpc.ReasonInvalidState, 0, 0, 0},
		{"capture a declined one", func() (*paymentv1.Authorization, error) { return capture(2) }, codes.FailedPrecondition, rpc.ReasonInvalidState, 0, 0, 0},
		{"void a declined one succeeds", func() (*paymentv1.Authorization, error) { return void(2) }, codes.OK, "", declined, paymentv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS, 1},
		{"authorize to void", func() (*paymentv1.Authorization, error) { return authorize(6, "cust-0001", 100) }, codes.OK, "", authorized, 0, 1},
		{"void", func() (*paymentv1.Authorization, error) { return void(6) }, codes.OK, "", voided, 0, 2},
		{"void again", func() (*paymentv1.Authorization, error) { return void(6) }, codes.OK, "", voided, 0, 2},
		{"capture a voided one", func() (*paymentv1.Authorization, error) { return capture(6) }, codes.FailedPrecondition, rpc.ReasonInvalidState, 0, 0, 0},
		{"repeat of a voided authorize returns it", func() (*paymentv1.Authorization, error) { return authorize(6, "cust-0001", 100) }, codes.OK, "", voided, 0, 2},
		{"capture unknown", func() (*paymentv1.Authorization, error) { return capture(99) }, codes.NotFound, rpc.ReasonAuthorizationNotFound, 0, 0, 0},
		{"void unknown succeeds without authorization", func() (*paymentv1.Authorization, error) { return void(99) }, codes.OK, "", 0, 0, 0},
		{"invalid order id", func() (*paymentv1.Authorization, error) {
			resp, err := h.client.AuthorizePayment(ctx, &paymentv1.AuthorizePaymentRequest{OrderId: "not-a-uuid", CustomerId: "cust-0001", AmountCents: 1, Currency: "EUR"})
			return resp.GetAuthorization(), err
		}, codes.InvalidArgument, rpcerr.ReasonValidation, 0, 0, 0},
		{"non-positive amount", func() (*paymentv1.Authorization, error) { return authorize(7, "cust-0001", 0) }, codes.InvalidArgument, rpcerr.ReasonValidation, 0, 0, 0},
	}
	for _, s := range steps { // in order: each step builds on the previous ones
		a, err := s.call()
		if code := rpcerr.Code(err); code != s.wantCode || rpcerr.Reason(err) != s.wantReason {
			t.Fatalf("%s: code %v reason %q (%v), want %v %q", s.name, code, rpcerr.Reason(err), err, s.wantCode, s.wantReason)
		}
		if a.GetStatus() != s.wantStatus || a.GetDeclineReason() != s.wantDecl || a.GetVersion() != s.wantVer {
			t.Fatalf("%s: got %v/%v v%d, want %v/%v v%d", s.name, a.GetStatus(), a.GetDeclineReason(), a.GetVersion(), s.wantStatus, s.wantDecl, s.wantVer)
		}
	}

	acct, err := h.client.GetAccount(ctx, &paymentv1.GetAccountRequest{CustomerId: "cust-0001"})
	if err != nil {
		t.Fatal(err)
	}
	if a := acct.GetAccount(); a.GetBalanceCents() != 600 || a.GetHeldCents() != 0 || a.GetAvailableCents() != 600 || a.GetCurrency() != "EUR" {
		t.Errorf("cust-0001 = %v, want balance 600 (one capture of 400), nothing held", a)
	}
	_, err = h.client.GetAccount(ctx, &paymentv1.GetAccountRequest{CustomerId: "cust-nobody"})
	if rpcerr.Code(err) != codes.NotFound || rpcerr.Reason(err) != rpc.ReasonAccountNotFound {
		t.Errorf("unknown account: %v", err)
	}
}

// TestConcurrentPaymentsKeepInvariants drives a few hundred concurrent authorize / capture / void calls
// over few accounts — including capture racing void and duplicated calls — then checks the money
// invariants against the database, on every backend.
func TestConcurrentPaymentsKeepInvariants(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			concurrentInvariants(t, b.DSN(t))
		})
	}
}

func concurrentInvariants(t *testing.T, dsn string) {
	const (
		orders  = 200
		balance = 20_000
	)
	customers := []string{"cust-a", "cust-b", "cust-c"}
	var accounts []domain.Account
	for _, c := range customers {
		accounts = append(accounts, eur(c, balance))
	}
	initial := int64(balance * len(customers))
	h := start(t, dsn, accounts...)
	ctx := ctxT(t, 3*time.Minute)

	var (
		calls, preconditions atomic.Int64
		mu                   sync.Mutex
		capturedOK           = map[string]bool{}
		voidedOK             = map[string]bool{}
		failures             []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	doCapture := func(id string) {
		calls.Add(1)
		resp, err := h.client.CapturePayment(ctx, &paymentv1.CapturePaymentRequest{OrderId: id})
		switch {
		case rpcerr.Code(err) == codes.FailedPrecondition:
			preconditions.Add(1)
		case err != nil:
			fail("capture %s: %v", id, err)
		case resp.GetAuthorization().GetStatus() == paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED:
			mu.Lock()
			capturedOK[id] = true
			mu.Unlock()
		}
	}
	doVoid := func(id string) {
		calls.Add(1)
		resp, err := h.client.VoidPayment(ctx, &paymentv1.VoidPaymentRequest{OrderId: id})
		switch {
		case rpcerr.Code(err) == codes.FailedPrecondition:
			preconditions.Add(1)
		case err != nil:
			fail("void %s: %v", id, err)
		case resp.GetAuthorization().GetStatus() == paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED:
			mu.Lock()
			voidedOK[id] = true
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			id := orderID(i)
			req := &paymentv1.AuthorizePaymentRequest{OrderId: id, CustomerId: customers[i%len(customers)],
				AmountCents: int64(100 + (i*137)%900), Currency: "EUR"}
			calls.Add(1)
			if _, err := h.client.AuthorizePayment(ctx, req); err != nil {
				fail("authorize %s: %v", id, err)
				return
			}
			var inner sync.WaitGroup
			switch i % 5 {
			case 0:
				doCapture(id)
			case 1:
				doVoid(id)
			case 2: // capture races void: exactly one may win
				inner.Go(func() { doCapture(id) })
				inner.Go(func() { doVoid(id) })
			case 3: // duplicated calls, as a retrying saga would send them
				inner.Go(func() { doCapture(id) })
				inner.Go(func() { doCapture(id) })
				inner.Go(func() {
					calls.Add(1)
					if _, err := h.client.AuthorizePayment(ctx, req); err != nil {
						fail("repeat authorize %s: %v", id, err)
					}
				})
			case 4: // left open
			}
			inner.Wait()
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}

	q := func(query string, args ...any) int64 {
		t.Helper()
		var n sql.NullInt64
		if err := h.db.QueryRowContext(ctx, h.dialect.Rebind(query), args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n.Int64
	}
	sumBalance := q("SELECT sum(balance_cents) FROM accounts")
	sumHeld := q("SELECT sum(held_cents) FROM accounts")
	sumCaptured := q("SELECT sum(amount_cents) FROM authorizations WHERE status = 'CAPTURED'")
	sumOpen := q("SELECT sum(amount_cents) FROM authorizations WHERE status = 'AUTHORIZED'")
	if sumBalance+sumCaptured != initial {
		t.Errorf("money not conserved: balances %d + captured %d = %d, want %d", sumBalance, sumCaptured, sumBalance+sumCaptured, initial)
	}
	if sumHeld != sumOpen {
		t.Errorf("held %d != open authorizations %d", sumHeld, sumOpen)
	}
	if n := q("SELECT count(*) FROM accounts WHERE balance_cents < 0 OR held_cents < 0 OR held_cents > balance_cents"); n != 0 {
		t.Errorf("%d accounts with negative available", n)
	}
	for _, c := range customers {
		held := q("SELECT held_cents FROM accounts WHERE customer_id = ?", c)
		open := q("SELECT sum(amount_cents) FROM authorizations WHERE customer_id = ? AND status = 'AUTHORIZED'", c)
		bal := q("SELECT balance_cents FROM accounts WHERE customer_id = ?", c)
		debits := q("SELECT sum(amount_cents) FROM ledger_entries WHERE customer_id = ? AND kind = 'DEBIT'", c)
		if held != open || bal != balance-debits {
			t.Errorf("%s: held %d open %d balance %d debits %d", c, held, open, bal, debits)
		}
	}
	if n := q("SELECT count(*) FROM authorizations"); n != orders {
		t.Errorf("authorizations = %d, want %d", n, orders)
	}
	// Each effect happened exactly as often as the final status says.
	effect := func(kind, when string) string {
		return "SELECT count(*) FROM authorizations a WHERE (SELECT count(*) FROM ledger_entries e WHERE e.order_id = a.order_id AND e.kind = '" +
			kind + "') <> CASE WHEN " + when + " THEN 1 ELSE 0 END"
	}
	for kind, when := range map[string]string{"DEBIT": "a.status = 'CAPTURED'", "RELEASE": "a.status = 'VOIDED'", "HOLD": "a.status <> 'DECLINED'"} {
		if n := q(effect(kind, when)); n != 0 {
			t.Errorf("%d orders with a wrong number of %s entries", n, kind)
		}
	}
	if debits := q("SELECT sum(amount_cents) FROM ledger_entries WHERE kind = 'DEBIT'"); debits != sumCaptured {
		t.Errorf("debited %d, captured %d", debits, sumCaptured)
	}
	// What clients were told agrees with the database, and no order was both captured and voided.
	status := map[string]string{}
	rows, err := h.db.QueryContext(ctx, "SELECT order_id, status, version FROM authorizations")
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]int64{}
	for rows.Next() {
		var id, st string
		var v int64
		if err := rows.Scan(&id, &st, &v); err != nil {
			t.Fatal(err)
		}
		status[id], versions[id] = st, v
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	for id := range capturedOK {
		if voidedOK[id] || status[id] != "CAPTURED" {
			t.Errorf("%s: capture acknowledged, voided ack %v, stored %s", id, voidedOK[id], status[id])
		}
	}
	for id := range voidedOK {
		if status[id] != "VOIDED" {
			t.Errorf("%s: void acknowledged, stored %s", id, status[id])
		}
	}
	// Every state change has its event: versions 1..n of each order, no gaps, no duplicates.
	seen := eventVersions(t, ctx, h.db)
	for id, v := range versions {
		got := seen[id]
		if int64(len(got)) != v {
			t.Errorf("%s: %d events for version %d", id, len(got), v)
			continue
		}
		for want := int64(1); want <= v; want++ {
			if !got[want] {
				t.Errorf("%s: no event with aggregate_version %d", id, want)
			}
		}
	}
	counts := map[string]int{}
	for _, st := range status {
		counts[st]++
	}
	t.Logf("%d orders, %d calls, %d FAILED_PRECONDITION (lost capture/void races, captures of declines); final: %v; balances %d + captured %d = %d; held %d",
		orders, calls.Load(), preconditions.Load(), counts, sumBalance, sumCaptured, initial, sumHeld)
	if counts["DECLINED"] == 0 || counts["CAPTURED"] == 0 || counts["VOIDED"] == 0 || counts["AUTHORIZED"] == 0 {
		t.Errorf("the load did not reach every state: %v", counts)
	}
}

// eventVersions decodes every outbox row and returns order id → aggregate versions seen.
func eventVersions(t *testing.T, ctx context.Context, db *sql.DB) map[string]map[int64]bool {
	t.Helper()
	rows, err := db.QueryContext(ctx, "SELECT msg_key, topic, payload, headers FROM outbox")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[int64]bool{}
	for rows.Next() {
		var (
			key, topic      string
			payload, header []byte
			headers         map[string]string
		)
		if err := rows.Scan(&key, &topic, &payload, &header); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(header, &headers); err != nil {
			t.Fatal(err)
		}
		var m interface {
			proto.Message
			GetOrderId() string
			GetAggregateVersion() int64
		}
		switch headers[events.HeaderEventType] {
		case "shopmesh.events.v1.PaymentAuthorized":
			m = &eventsv1.PaymentAuthorized{}
		case "shopmesh.events.v1.PaymentDeclined":
			m = &eventsv1.PaymentDeclined{}
		case "shopmesh.events.v1.PaymentCaptured":
			m = &eventsv1.PaymentCaptured{}
		case "shopmesh.events.v1.PaymentVoided":
			m = &eventsv1.PaymentVoided{}
		default:
			t.Fatalf("event type %q", headers[events.HeaderEventType])
		}
		if err := proto.Unmarshal(payload, m); err != nil {
			t.Fatal(err)
		}
		if topic != events.PaymentTopic || m.GetOrderId() != key {
			t.Errorf("event %v on %s keyed %s", m, topic, key)
		}
		if out[key] == nil {
			out[key] = map[int64]bool{}
		}
		if out[key][m.GetAggregateVersion()] {
			t.Errorf("%s: two events with version %d", key, m.GetAggregateVersion())
		}
		out[key][m.GetAggregateVersion()] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
