package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func pending(t *testing.T) domain.Order {
	t.Helper()
	o, err := domain.NewOrder("id-1", "cust-1", "k", []domain.Line{{SKU: "SKU-1", Quantity: 2}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func priced(t *testing.T) domain.Order {
	t.Helper()
	o, err := pending(t).Priced([]domain.Line{{SKU: "SKU-1", Quantity: 2, UnitPriceCents: 150}}, "EUR")
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestNewOrder(t *testing.T) {
	t.Parallel()
	many := make([]domain.Line, domain.MaxLines+1)
	for i := range many {
		many[i] = domain.Line{SKU: "SKU-" + string(rune('A'+i%26)) + string(rune('A'+i/26)), Quantity: 1}
	}
	tests := []struct {
		name  string
		lines []domain.Line
		ok    bool
	}{
		{"one line", []domain.Line{{SKU: "SKU-1", Quantity: 1}}, true},
		{"max quantity", []domain.Line{{SKU: "SKU-1", Quantity: domain.MaxQuantity}}, true},
		{"no lines", nil, false},
		{"zero quantity", []domain.Line{{SKU: "SKU-1", Quantity: 0}}, false},
		{"too many units", []domain.Line{{SKU: "SKU-1", Quantity: domain.MaxQuantity + 1}}, false},
		{"empty sku", []domain.Line{{SKU: "", Quantity: 1}}, false},
		{"duplicate sku", []domain.Line{{SKU: "SKU-1", Quantity: 1}, {SKU: "SKU-1", Quantity: 2}}, false},
		{"too many lines", many, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := domain.NewOrder("id", "cust", "", tt.lines, t0)
			if tt.ok != (err == nil) {
				t.Fatalf("ok=%v, err=%v", tt.ok, err)
			}
			if err != nil {
				if !errors.Is(err, domain.ErrInvalidOrder) {
					t.Fatalf("err = %v, want ErrInvalidOrder", err)
				}
				return
			}
			if o.Status != domain.Pending || o.Version != 1 || o.TotalCents != 0 {
				t.Fatalf("new order = %+v", o)
			}
		})
	}
}

func TestTransitions(t *testing.T) {
	t.Parallel()
	confirm := func(o domain.Order) (domain.Order, error) { return o.Confirm(t0.Add(time.Second)) }
	cancel := func(r domain.CancelReason) func(domain.Order) (domain.Order, error) {
		return func(o domain.Order) (domain.Order, error) { return o.Cancel(r, "why", t0.Add(time.Second)) }
	}
	must := func(o domain.Order, err error) domain.Order {
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	confirmed := must(priced(t).Confirm(t0))
	cancelled := must(pending(t).Cancel(domain.OutOfStock, "", t0))

	tests := []struct {
		name    string
		from    domain.Order
		do      func(domain.Order) (domain.Order, error)
		want    domain.Status
		wantErr error
	}{
		{"pending priced -> confirmed", priced(t), confirm, domain.Confirmed, nil},
		{"pending unpriced -> confirmed is refused", pending(t), confirm, "", domain.ErrInvalidOrder},
		{"pending -> cancelled out of stock", pending(t), cancel(domain.OutOfStock), domain.Cancelled, nil},
		{"pending -> cancelled unknown product", pending(t), cancel(domain.UnknownProduct), domain.Cancelled, nil},
		{"pending -> cancelled declined", priced(t), cancel(domain.PaymentDeclined), domain.Cancelled, nil},
		{"pending -> cancelled by customer", pending(t), cancel(domain.CustomerRequested), domain.Cancelled, nil},
		{"pending -> cancelled dependency failed", pending(t), cancel(domain.DependencyFailed), domain.Cancelled, nil},
		{"pending -> cancelled without reason", pending(t), cancel(domain.NoReason), "", domain.ErrInvalidOrder},
		{"confirmed -> confirmed", confirmed, confirm, "", domain.ErrNotPending},
		{"confirmed -> cancelled", confirmed, cancel(domain.CustomerRequested), "", domain.ErrOrderConfirmed},
		{"cancelled -> confirmed", cancelled, confirm, "", domain.ErrNotPending},
		{"cancelled -> cancelled", cancelled, cancel(domain.CustomerRequested), "", domain.ErrNotPending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := tt.from
			got, err := tt.do(tt.from)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tt.want || !got.Status.Terminal() {
				t.Fatalf("status = %s, want %s", got.Status, tt.want)
			}
			if got.Version != before.Version+1 {
				t.Fatalf("version = %d, want %d", got.Version, before.Version+1)
			}
			if (got.Status == domain.Cancelled) != (got.CancelReason != domain.NoReason) {
				t.Fatalf("reason %q with status %s", got.CancelReason, got.Status)
			}
			if before.Status != domain.Pending || before.Version != tt.from.Version {
				t.Fatal("transition mutated its receiver")
			}
		})
	}
}

func TestPriced(t *testing.T) {
	t.Parallel()
	o, err := domain.NewOrder("id", "c", "", []domain.Line{{SKU: "A1", Quantity: 3}, {SKU: "B1", Quantity: 1}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := o.Priced([]domain.Line{{SKU: "A1", Quantity: 3, UnitPriceCents: 100}, {SKU: "B1", Quantity: 1, UnitPriceCents: 250}}, "EUR")
	if err != nil {
		t.Fatal(err)
	}
	if p.TotalCents != 550 || p.Lines[0].LineTotalCents != 300 || p.Currency != "EUR" {
		t.Fatalf("priced = %+v", p)
	}
	if o.TotalCents != 0 || o.Lines[0].UnitPriceCents != 0 {
		t.Fatal("Priced mutated its receiver")
	}
	if _, err := o.Priced([]domain.Line{{SKU: "A1", Quantity: 2}}, "EUR"); !errors.Is(err, domain.ErrInvalidOrder) {
		t.Fatalf("mismatched reservation: err = %v", err)
	}
}

func TestCart(t *testing.T) {
	t.Parallel()
	c := domain.NewCart()
	steps := []struct {
		sku     string
		qty     int32
		wantErr error
		lines   int
		rev     int64
	}{
		{"B1", 2, nil, 1, 1},
		{"A1", 1, nil, 2, 2},
		{"A1", 5, nil, 2, 3},
		{"B1", 0, nil, 1, 4},
		{"C1", -1, domain.ErrInvalidOrder, 1, 4},
	}
	for i, s := range steps {
		err := c.Set(s.sku, s.qty)
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("step %d: err = %v", i, err)
		}
		if len(c.Lines()) != s.lines || c.Revision != s.rev {
			t.Fatalf("step %d: lines %v rev %d", i, c.Lines(), c.Revision)
		}
	}
	for i := range domain.MaxCartLines - 1 {
		if err := c.Set("X"+string(rune('A'+i%26))+string(rune('A'+i/26)), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set("ZZ", 1); !errors.Is(err, domain.ErrCartFull) {
		t.Fatalf("51st sku: err = %v", err)
	}
	if err := c.Set("A1", 7); err != nil {
		t.Fatalf("changing an existing sku in a full cart: %v", err)
	}
	c.Clear()
	if len(c.Lines()) != 0 {
		t.Fatal("clear left lines")
	}
}
