package app_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/fakes"
)

// freeStock is the fake inventory answering every reservation with prices of zero: an answer that
// does not fit the order although it is well formed.
type freeStock struct{ *fakes.Inventory }

func (f freeStock) ReserveStock(ctx context.Context, req *inventoryv1.ReserveStockRequest) (*inventoryv1.ReserveStockResponse, error) {
	resp, err := f.Inventory.ReserveStock(ctx, req)
	if err != nil {
		return nil, err
	}
	free, _ := proto.Clone(resp).(*inventoryv1.ReserveStockResponse)
	for _, l := range free.GetReservation().GetLines() {
		l.UnitPriceCents, l.LineTotalCents = 0, 0
	}
	free.GetReservation().TotalCents = 0
	return free, nil
}

// A reservation priced at zero cancels the order, and the detail a client reads says why, not "<nil>".
func TestZeroPricedReservationCancelsWithAReason(t *testing.T) {
	t.Parallel()
	w := newWorldWith(t, sqldbtest.SQLite(t), func(inv *fakes.Inventory) inventoryv1.InventoryServiceServer {
		return freeStock{inv}
	})
	o := place(t, w.start(), "cust-1", "", line("SKU-A", 2))
	if o.Status != domain.Cancelled || o.CancelReason != domain.DependencyFailed {
		t.Fatalf("order %s %s (%s), want CANCELLED %s", o.Status, o.CancelReason, o.CancelDetail, domain.DependencyFailed)
	}
	if strings.Contains(o.CancelDetail, "nil") || !strings.Contains(o.CancelDetail, "total") {
		t.Fatalf("cancel detail %q, want the reason (a total that is not positive)", o.CancelDetail)
	}
}
