package rpc_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
)

// The refusals inventory and payment send when a late reserve / authorize lands after the order's
// release / void (their tombstones; services/{inventory,payment}/internal/rpc/errors.go).
func errReleased() error {
	return rpcerr.WithReason(codes.FailedPrecondition, "RESERVATION_RELEASED", "the order's reservation was released before it was made", nil)
}

func errVoided() error {
	return rpcerr.WithReason(codes.FailedPrecondition, "AUTHORIZATION_VOIDED", "the order was voided before it was authorized", nil)
}

// Permanent refusals that are not about a compensation (inventory's and payment's errors.go).
func errMixedCurrency() error {
	return rpcerr.WithReason(codes.FailedPrecondition, "MIXED_CURRENCY", "items are priced in EUR and USD", nil)
}

func errPaymentConflict() error {
	return rpcerr.WithReason(codes.AlreadyExists, "IDEMPOTENCY_CONFLICT", "order already has a different authorization", nil)
}

func errNoAccount() error {
	return rpcerr.WithReason(codes.NotFound, "ACCOUNT_NOT_FOUND", "account not found", nil)
}

// refusingInventory is the fake inventory whose ReserveStock answers refuse when it is set.
type refusingInventory struct {
	*fakes.Inventory
	refuse   func() error
	reserves atomic.Int64
}

func (f *refusingInventory) ReserveStock(ctx context.Context, req *inventoryv1.ReserveStockRequest) (*inventoryv1.ReserveStockResponse, error) {
	f.reserves.Add(1)
	if f.refuse != nil {
		return nil, f.refuse()
	}
	return f.Inventory.ReserveStock(ctx, req)
}

// refusingPayment is the fake payment whose AuthorizePayment answers refuse when it is set.
type refusingPayment struct {
	*fakes.Payment
	refuse     func() error
	authorizes atomic.Int64
}

func (f *refusingPayment) AuthorizePayment(ctx context.Context, req *paymentv1.AuthorizePaymentRequest) (*paymentv1.AuthorizePaymentResponse, error) {
	f.authorizes.Add(1)
	if f.refuse != nil {
		return nil, f.refuse()
	}
	return f.Payment.AuthorizePayment(ctx, req)
}

// refusingWorld is the order application on SQLite over loopback gRPC to the refusing fakes.
type refusingWorld struct {
	*world
	inv *refusingInventory
	pay *refusingPayment
}

func newRefusingWorld(t *testing.T, reserve, authorize func() error) *refusingWorld {
	t.Helper()
	w := &refusingWorld{
		inv: &refusingInventory{Inventory: fakes.NewInventory(map[string]fakes.Product{"SKU-A": {Name: "Apple", PriceCents: 150, OnHand: 1000}}), refuse: reserve},
		pay: &refusingPayment{Payment: fakes.NewPayment(), refuse: authorize},
	}
	w.world = newWorld(t, w.inv, w.pay)
	return w
}

// The clients tell "a compensation already ran for this order" apart from out of stock and from an
// outage, over real gRPC with the ErrorInfo reasons the services send.
func TestClientsMapCompensatedRefusals(t *testing.T) {
	t.Parallel()
	line := []domain.Line{{SKU: "SKU-A", Quantity: 1}}
	authReq := app.AuthorizeRequest{OrderID: "o-1", CustomerID: "alice", AmountCents: 150, Currency: "EUR"}
	for _, tc := range []struct {
		name              string
		reserve, authoriz func() error
		want, notWant     []error
	}{
		{"reservation released", errReleased, nil,
			[]error{domain.ErrStockReleased}, []error{domain.ErrOutOfStock, domain.ErrUnavailable, domain.ErrPaymentVoided}},
		{"out of stock", func() error {
			return rpcerr.WithReason(codes.FailedPrecondition, "OUT_OF_STOCK", "SKU-A: requested 1, available 0", nil)
		}, nil, []error{domain.ErrOutOfStock}, []error{domain.ErrStockReleased}},
		{"authorization voided", nil, errVoided,
			[]error{domain.ErrPaymentVoided}, []error{domain.ErrUnavailable, domain.ErrStockReleased}},
		{"other payment refusal", nil, func() error {
			return rpcerr.WithReason(codes.FailedPrecondition, "INVALID_AUTHORIZATION_STATE", "captured", nil)
		}, []error{domain.ErrDependencyRefused}, []error{domain.ErrPaymentVoided, domain.ErrUnavailable}},
		{"mixed currencies", errMixedCurrency, nil,
			[]error{domain.ErrDependencyRefused}, []error{domain.ErrOutOfStock, domain.ErrUnavailable}},
		{"reservation mismatch", func() error {
			return rpcerr.WithReason(codes.FailedPrecondition, "RESERVATION_MISMATCH", "order o-1 was reserved with other items", nil)
		}, nil, []error{domain.ErrDependencyRefused}, []error{domain.ErrOutOfStock, domain.ErrUnavailable}},
		{"payment idempotency conflict", nil, errPaymentConflict,
			[]error{domain.ErrDependencyRefused}, []error{domain.ErrUnavailable}},
		{"inventory outage", func() error { return status.Error(codes.Unavailable, "down") }, nil,
			[]error{domain.ErrUnavailable}, []error{domain.ErrDependencyRefused}},
		{"payment outage", nil, func() error { return status.Error(codes.Unavailable, "down") },
			[]error{domain.ErrUnavailable}, []error{domain.ErrDependencyRefused}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newRefusingWorld(t, tc.reserve, tc.authoriz)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var err error
			if tc.reserve != nil {
				_, err = w.stock.ReserveStock(ctx, "o-1", line)
			} else {
				_, err = w.money.AuthorizePayment(ctx, authReq)
			}
			for _, e := range tc.want {
				if !errors.Is(err, e) {
					t.Errorf("err = %v, want %v", err, e)
				}
			}
			for _, e := range tc.notWant {
				if errors.Is(err, e) {
					t.Errorf("err = %v, must not be %v", err, e)
				}
			}
		})
	}
}

// A reserve or authorize refused because the order was already compensated, or refused for good, ends
// the order at once: CANCELLED with DEPENDENCY_FAILED and a detail naming the cause, no retry, nothing
// held, nothing authorized, and a retry of the request finds the same single terminal state.
func TestSagaFailsOrderAlreadyCompensated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		reserve, authoriz func() error
		detail            string
	}{
		{"reservation released", errReleased, nil, "stock was already released"},
		{"authorization voided", nil, errVoided, "payment was already voided"},
		{"inventory refuses: mixed currencies", errMixedCurrency, nil, "priced in EUR and USD"},
		{"payment refuses: idempotency conflict", nil, errPaymentConflict, "different authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newRefusingWorld(t, tc.reserve, tc.authoriz)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			req := app.PlaceOrder{CustomerID: "alice", IdempotencyKey: "k-1", Lines: []domain.Line{{SKU: "SKU-A", Quantity: 3}}}
			o, err := w.app.PlaceOrder(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if o.Status != domain.Cancelled || o.CancelReason != domain.DependencyFailed || !strings.Contains(o.CancelDetail, tc.detail) {
				t.Fatalf("order = %s %s %q, want CANCELLED DEPENDENCY_FAILED naming %q", o.Status, o.CancelReason, o.CancelDetail, tc.detail)
			}
			again, err := w.app.PlaceOrder(ctx, req)
			if err != nil || again.ID != o.ID || again.Status != domain.Cancelled || again.Version != o.Version {
				t.Errorf("retried request: %+v, %v; want the same cancelled order (version %d)", again, err, o.Version)
			}
			stored, err := w.app.Get(ctx, o.ID)
			if err != nil || stored.Status != domain.Cancelled || stored.Version != o.Version {
				t.Errorf("stored: %s v%d, %v", stored.Status, stored.Version, err)
			}
			if n := w.inv.reserves.Load(); n != 1 {
				t.Errorf("%d reserves, want 1 (no retry)", n)
			}
			wantAuthorizes := int64(0)
			if tc.authoriz != nil {
				wantAuthorizes = 1
			}
			if n := w.pay.authorizes.Load(); n != wantAuthorizes {
				t.Errorf("%d authorizes, want %d", n, wantAuthorizes)
			}
			if authorized, _, _ := w.pay.Counts(); authorized != 0 {
				t.Errorf("%d authorizations held", authorized)
			}
			if got := w.inv.Available("SKU-A"); got != 1000 {
				t.Errorf("SKU-A available %d, want 1000 (stock given back)", got)
			}
			if w.inv.Calls("ReleaseStock") == 0 || w.pay.Calls("VoidPayment") == 0 {
				t.Errorf("compensation not run: %d releases, %d voids", w.inv.Calls("ReleaseStock"), w.pay.Calls("VoidPayment"))
			}
			if todo, err := w.orders.FollowupBacklog(ctx, app.Compensation, time.Now().Add(time.Hour), 1); err != nil || todo != 0 {
				t.Errorf("compensations left: %d, %v", todo, err)
			}
			if st, err := w.app.RecoverOnce(ctx); err != nil || st.Claimed != 0 || st.Compensated != 0 {
				t.Errorf("recovery after: %+v, %v", st, err)
			}
		})
	}
}

// A customer without a payment account is a decline, not an outage: the order is cancelled at once
// with PAYMENT_DECLINED naming it, and the stock comes back (before, it stayed PENDING for recovery).
func TestSagaDeclinesCustomerWithoutAccount(t *testing.T) {
	t.Parallel()
	w := newRefusingWorld(t, nil, errNoAccount)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	o, err := w.app.PlaceOrder(ctx, app.PlaceOrder{CustomerID: "nobody", IdempotencyKey: "k-1", Lines: []domain.Line{{SKU: "SKU-A", Quantity: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != domain.Cancelled || o.CancelReason != domain.PaymentDeclined || !strings.Contains(o.CancelDetail, "ACCOUNT_NOT_FOUND") {
		t.Fatalf("order = %s %s %q, want CANCELLED PAYMENT_DECLINED naming ACCOUNT_NOT_FOUND", o.Status, o.CancelReason, o.CancelDetail)
	}
	if got := w.inv.Available("SKU-A"); got != 1000 {
		t.Errorf("SKU-A available %d, want 1000 (stock given back)", got)
	}
	if n := w.pay.authorizes.Load(); n != 1 {
		t.Errorf("%d authorizes, want 1 (no retry)", n)
	}
	if st, err := w.app.RecoverOnce(ctx); err != nil || st.Claimed != 0 {
		t.Errorf("recovery after: %+v, %v", st, err)
	}
}
