package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

func TestNeedsSumsPerSKUInOrder(t *testing.T) {
	t.Parallel()
	got := domain.Needs([]domain.Item{{SKU: "SKU-2", Quantity: 1}, {SKU: "SKU-1", Quantity: 2}, {SKU: "SKU-2", Quantity: 3}})
	want := []domain.Need{{SKU: "SKU-1", Quantity: 2}, {SKU: "SKU-2", Quantity: 4}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Needs = %v, want %v", got, want)
	}
}

func TestTransitions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		from       domain.Status
		commit     domain.Transition
		commitErr  error
		release    domain.Transition
		releaseErr error
	}{
		{domain.StatusHeld, domain.Apply, nil, domain.Apply, nil},
		{domain.StatusCommitted, domain.NoOp, nil, 0, domain.ErrReservationCommitted},
		{domain.StatusReleased, 0, domain.ErrReservationReleased, domain.NoOp, nil},
		{"", 0, domain.ErrReservationNotFound, 0, domain.ErrReservationNotFound},
	}
	for _, tt := range tests {
		t.Run(string(tt.from), func(t *testing.T) {
			t.Parallel()
			c, err := tt.from.Commit()
			if c != tt.commit || !errors.Is(err, tt.commitErr) || (tt.commitErr == nil) != (err == nil) {
				t.Errorf("Commit() = %v, %v; want %v, %v", c, err, tt.commit, tt.commitErr)
			}
			r, err := tt.from.Release()
			if r != tt.release || !errors.Is(err, tt.releaseErr) || (tt.releaseErr == nil) != (err == nil) {
				t.Errorf("Release() = %v, %v; want %v, %v", r, err, tt.release, tt.releaseErr)
			}
		})
	}
}

func TestValidateReservation(t *testing.T) {
	t.Parallel()
	const id = "0190f0c8-3f6e-7a41-9a3b-5d2c1e0f4a21"
	many := make([]domain.Item, 51)
	for i := range many {
		many[i] = domain.Item{SKU: "SKU-1", Quantity: 1}
	}
	tests := []struct {
		name    string
		orderID string
		items   []domain.Item
		field   string
	}{
		{"ok", id, []domain.Item{{SKU: "SKU-0001", Quantity: 3}}, ""},
		{"bad order id", "ORDER-1", []domain.Item{{SKU: "SKU-0001", Quantity: 3}}, "order_id"},
		{"no items", id, nil, "items"},
		{"too many items", id, many, "items"},
		{"bad sku", id, []domain.Item{{SKU: "sku 1", Quantity: 1}}, "items.sku"},
		{"zero quantity", id, []domain.Item{{SKU: "SKU-0001", Quantity: 0}}, "items.quantity"},
		{"too large quantity", id, []domain.Item{{SKU: "SKU-0001", Quantity: 1001}}, "items.quantity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := domain.ValidateReservation(tt.orderID, tt.items)
			var ie *domain.InvalidError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.field != "" && (!errors.As(err, &ie) || ie.Field != tt.field || !errors.Is(err, domain.ErrInvalid)):
				t.Fatalf("err = %v, want invalid %s", err, tt.field)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestImportLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		line     domain.ImportLine
		validErr string // field of the Validate error
		newErr   string // field of the NewProduct error
	}{
		{"restock", domain.ImportLine{ImportID: "imp-1", Seq: 1, SKU: "SKU-1", Quantity: 5}, "", "sku"},
		{"new product", domain.ImportLine{ImportID: "imp-1", Seq: 2, SKU: "NEW-1", Quantity: 5, Name: ptr("Mug"), PriceCents: ptr(int64(250)), Currency: ptr("EUR")}, "", ""},
		{"zero quantity", domain.ImportLine{ImportID: "imp-1", Seq: 3, SKU: "SKU-1", Quantity: 0}, "quantity", "quantity"},
		{"price without currency", domain.ImportLine{ImportID: "imp-1", Seq: 4, SKU: "SKU-1", Quantity: 1, PriceCents: ptr(int64(1))}, "currency", "currency"},
		{"bad currency", domain.ImportLine{ImportID: "imp-1", Seq: 5, SKU: "SKU-1", Quantity: 1, PriceCents: ptr(int64(1)), Currency: ptr("eur")}, "currency", "currency"},
		{"empty name", domain.ImportLine{ImportID: "imp-1", Seq: 6, SKU: "SKU-1", Quantity: 1, Name: ptr("")}, "name", "name"},
		{"new without price", domain.ImportLine{ImportID: "imp-1", Seq: 7, SKU: "NEW-2", Quantity: 1, Name: ptr("Mug")}, "", "sku"},
		{"no import id", domain.ImportLine{Seq: 1, SKU: "SKU-1", Quantity: 1}, "import_id", "import_id"},
		{"import id with a space", domain.ImportLine{ImportID: "imp 1", Seq: 1, SKU: "SKU-1", Quantity: 1}, "import_id", "import_id"},
		{"import id too long", domain.ImportLine{ImportID: strings.Repeat("a", 129), Seq: 1, SKU: "SKU-1", Quantity: 1}, "import_id", "import_id"},
		{"longest import id", domain.ImportLine{ImportID: strings.Repeat("a", 128), Seq: 1, SKU: "SKU-1", Quantity: 1}, "", "sku"},
		{"no seq", domain.ImportLine{ImportID: "imp-1", SKU: "SKU-1", Quantity: 1}, "seq", "seq"},
	}
	field := func(err error) string {
		var ie *domain.InvalidError
		if errors.As(err, &ie) {
			return ie.Field
		}
		if err != nil {
			return "?" + err.Error()
		}
		return ""
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := field(tt.line.Validate()); got != tt.validErr {
				t.Errorf("Validate field = %q, want %q", got, tt.validErr)
			}
			p, err := tt.line.NewProduct(testTime)
			if got := field(err); got != tt.newErr {
				t.Errorf("NewProduct field = %q, want %q", got, tt.newErr)
			}
			if err == nil && (p.OnHand != tt.line.Quantity || p.Version != 1 || p.Available() != tt.line.Quantity) {
				t.Errorf("NewProduct = %+v", p)
			}
		})
	}
}

// TestImportLineFingerprint: the fingerprint covers the content, not the identity, and tells an absent
// optional field from an empty one.
func TestImportLineFingerprint(t *testing.T) {
	t.Parallel()
	base := domain.ImportLine{ImportID: "imp-1", Seq: 1, SKU: "SKU-1", Quantity: 5, Name: ptr("Mug")}
	same := base
	same.ImportID, same.Seq = "imp-2", 9
	if base.Fingerprint() != same.Fingerprint() {
		t.Error("identity changed the fingerprint")
	}
	for name, l := range map[string]domain.ImportLine{
		"quantity":    {SKU: "SKU-1", Quantity: 6, Name: ptr("Mug")},
		"sku":         {SKU: "SKU-2", Quantity: 5, Name: ptr("Mug")},
		"no name":     {SKU: "SKU-1", Quantity: 5},
		"empty name":  {SKU: "SKU-1", Quantity: 5, Name: ptr("")},
		"price added": {SKU: "SKU-1", Quantity: 5, Name: ptr("Mug"), PriceCents: ptr(int64(1)), Currency: ptr("EUR")},
	} {
		if l.Fingerprint() == base.Fingerprint() {
			t.Errorf("%s: same fingerprint as the base line", name)
		}
	}
}

func TestReservationTotals(t *testing.T) {
	t.Parallel()
	r := domain.Reservation{Lines: []domain.Line{{SKU: "A1", Quantity: 2, UnitPriceCents: 199}, {SKU: "B1", Quantity: 3, UnitPriceCents: 1000}}}
	if got := r.Total(); got != 2*199+3*1000 {
		t.Fatalf("Total = %d", got)
	}
	if !r.SameItems([]domain.Item{{SKU: "A1", Quantity: 2}, {SKU: "B1", Quantity: 3}}) || r.SameItems([]domain.Item{{SKU: "A1", Quantity: 2}}) {
		t.Fatal("SameItems disagrees")
	}
}

var testTime = mustTime()

func mustTime() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

func TestTombstone(t *testing.T) {
	t.Parallel()
	line := []domain.Line{{SKU: "SKU-0001", Quantity: 1, UnitPriceCents: 199}}
	for _, tt := range []struct {
		r    domain.Reservation
		want bool
	}{
		{domain.Reservation{Status: domain.StatusReleased}, true},
		{domain.Reservation{Status: domain.StatusReleased, Lines: line}, false},
		{domain.Reservation{Status: domain.StatusHeld}, false},
		{domain.Reservation{Status: domain.StatusCommitted, Lines: line}, false},
	} {
		if got := tt.r.Tombstone(); got != tt.want {
			t.Errorf("%s with %d lines: Tombstone() = %v, want %v", tt.r.Status, len(tt.r.Lines), got, tt.want)
		}
	}
}
