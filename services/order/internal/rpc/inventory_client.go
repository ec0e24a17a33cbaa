package rpc

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// InventoryClient adapts the inventory service to the application's ports.
type InventoryClient struct {
	c       inventoryv1.InventoryServiceClient
	timeout time.Duration
}

var (
	_ app.StockReserver = (*InventoryClient)(nil)
	_ app.Catalog       = (*InventoryClient)(nil)
)

// NewInventoryClient returns an adapter whose every call ends within timeout.
func NewInventoryClient(c inventoryv1.InventoryServiceClient, timeout time.Duration) *InventoryClient {
	return &InventoryClient{c: c, timeout: timeout}
}

// ReserveStock implements app.StockReserver. A reserve that lands after the order's release is
// domain.ErrStockReleased.
func (i *InventoryClient) ReserveStock(ctx context.Context, orderID string, lines []domain.Line) (app.Reservation, error) {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	req := &inventoryv1.ReserveStockRequest{OrderId: orderID}
	for _, l := range lines {
		req.Items = append(req.Items, &inventoryv1.ReservationItem{Sku: l.SKU, Quantity: l.Quantity})
	}
	resp, err := i.c.ReserveStock(ctx, req)
	if err != nil {
		return app.Reservation{}, fmt.Errorf("reserve stock: %w", dependencyError(err))
	}
	r := resp.GetReservation()
	out := app.Reservation{Currency: r.GetCurrency(), Released: r.GetStatus() == inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED}
	for _, l := range r.GetLines() {
		out.Lines = append(out.Lines, domain.Line{
			SKU: l.GetSku(), Quantity: l.GetQuantity(), UnitPriceCents: l.GetUnitPriceCents(), LineTotalCents: l.GetLineTotalCents(),
		})
	}
	return out, nil
}

// ReleaseStock implements app.StockReserver.
func (i *InventoryClient) ReleaseStock(ctx context.Context, orderID string) error {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	if _, err := i.c.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: orderID}); err != nil {
		return fmt.Errorf("release stock: %w", dependencyError(err))
	}
	return nil
}

// CommitStock implements app.StockReserver.
func (i *InventoryClient) CommitStock(ctx context.Context, orderID string) error {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	if _, err := i.c.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: orderID}); err != nil {
		return fmt.Errorf("commit stock: %w", followupError("inventory", err))
	}
	return nil
}

// Product implements app.Catalog.
func (i *InventoryClient) Product(ctx context.Context, sku string) (app.Product, error) {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	resp, err := i.c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: sku})
	if err != nil {
		return app.Product{}, fmt.Errorf("get product: %w", dependencyError(err))
	}
	p := resp.GetProduct()
	return app.Product{
		SKU: p.GetSku(), Name: p.GetName(), PriceCents: p.GetPriceCents(), Currency: p.GetCurrency(), Available: p.GetAvailable(),
	}, nil
}

// dependencyError turns an inventory status into a domain error: the business refusals keep their
// meaning — FAILED_PRECONDITION OUT_OF_STOCK (or without a reason): not enough stock;
// RESERVATION_RELEASED: the order's stock was already released; MIXED_CURRENCY or RESERVATION_MISMATCH,
// and INVALID_ARGUMENT / ALREADY_EXISTS: refused for good; NOT_FOUND: unknown SKU. Anything else —
// UNAVAILABLE and DEADLINE_EXCEEDED after the platform's retries, an open breaker, or an unexpected
// answer — means "try again later", which leaves an order PENDING for recovery.
func dependencyError(err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.FailedPrecondition:
		switch rpcerr.Reason(err) {
		case inventoryReasonReleased:
			return fmt.Errorf("%w: %s", domain.ErrStockReleased, st.Message())
		case inventoryReasonMixedCurrency, inventoryReasonMismatch:
			return fmt.Errorf("%w: inventory: %s", domain.ErrDependencyRefused, st.Message())
		}
		return fmt.Errorf("%w: %s", domain.ErrOutOfStock, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%w: %s", domain.ErrUnknownProduct, st.Message())
	case codes.InvalidArgument, codes.AlreadyExists:
		return fmt.Errorf("%w: inventory: %s", domain.ErrDependencyRefused, st.Message())
	}
	return fmt.Errorf("%w: %s: %s", domain.ErrUnavailable, st.Code(), st.Message())
}

// followupError turns the status of a call that finishes an order (commit, capture, void) into a
// domain error: the refusals retrying cannot change — FAILED_PRECONDITION (released, voided, captured),
// NOT_FOUND (nothing to finish), INVALID_ARGUMENT, ALREADY_EXISTS, PERMISSION_DENIED — are
// domain.ErrDependencyRefused; anything else is domain.ErrUnavailable.
func followupError(service string, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.FailedPrecondition, codes.NotFound, codes.InvalidArgument, codes.AlreadyExists, codes.PermissionDenied:
		if reason := rpcerr.Reason(err); reason != "" {
			return fmt.Errorf("%w: %s: %s: %s", domain.ErrDependencyRefused, service, reason, st.Message())
		}
		return fmt.Errorf("%w: %s: %s: %s", domain.ErrDependencyRefused, service, st.Code(), st.Message())
	}
	return fmt.Errorf("%w: %s: %s: %s", domain.ErrUnavailable, service, st.Code(), st.Message())
}
