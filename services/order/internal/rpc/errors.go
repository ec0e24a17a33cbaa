package rpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// ErrorInfo reasons of the order service.
const (
	ReasonOrderNotFound         = "ORDER_NOT_FOUND"
	ReasonInvalidOrder          = "INVALID_ORDER"
	ReasonOrderConfirmed        = "ORDER_CONFIRMED"
	ReasonIdempotencyKeyReused  = "IDEMPOTENCY_KEY_REUSED"
	ReasonConcurrentUpdate      = "CONCURRENT_UPDATE"
	ReasonCartFull              = "CART_FULL"
	ReasonDependencyUnavailable = "DEPENDENCY_UNAVAILABLE"
	ReasonDependencyRefused     = "DEPENDENCY_REFUSED"
	ReasonStoreUnavailable      = "ORDER_STORE_UNAVAILABLE"
)

// ErrorInfo reasons of inventory and payment that the clients tell apart from other refusals (see
// services/{inventory,payment}/internal/rpc/errors.go): a reserve or authorize that lost the race with
// the order's compensation.
const (
	inventoryReasonReleased      = "RESERVATION_RELEASED"
	inventoryReasonOutOfStock    = "OUT_OF_STOCK"
	inventoryReasonMixedCurrency = "MIXED_CURRENCY"
	inventoryReasonMismatch      = "RESERVATION_MISMATCH"
	paymentReasonVoided          = "AUTHORIZATION_VOIDED"
	paymentReasonNoAccount       = "ACCOUNT_NOT_FOUND"
)

// toStatus maps an application error to the status the client sees; the one place that does.
// The database being unreachable or refusing for the moment (sqldb.Unavailable) is UNAVAILABLE with a
// retry delay, so clients wait an outage out; other unexpected errors become INTERNAL without their
// text, so internals never reach clients.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, domain.ErrNotFound):
		return rpcerr.WithReason(codes.NotFound, ReasonOrderNotFound, "order not found", nil)
	case errors.Is(err, domain.ErrOrderConfirmed):
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonOrderConfirmed, "order is confirmed and cannot change", nil)
	case errors.Is(err, domain.ErrIdempotencyKeyReused):
		return rpcerr.WithReason(codes.AlreadyExists, ReasonIdempotencyKeyReused,
			"idempotency key was already used for a different order", nil)
	case errors.Is(err, domain.ErrCartFull):
		return rpcerr.WithReason(codes.InvalidArgument, ReasonCartFull, "the cart holds at most 50 SKUs", nil)
	case errors.Is(err, domain.ErrInvalidOrder):
		return rpcerr.WithReason(codes.InvalidArgument, ReasonInvalidOrder, err.Error(), nil)
	case errors.Is(err, domain.ErrVersionConflict):
		return rpcerr.WithReason(codes.Aborted, ReasonConcurrentUpdate, "order changed concurrently; retry", nil)
	case errors.Is(err, domain.ErrDependencyRefused):
		// Inventory's or payment's own explanation (e.g. items in several currencies), no internals.
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonDependencyRefused, err.Error(), nil)
	case errors.Is(err, domain.ErrUnavailable):
		return rpcerr.RetryAfter(codes.Unavailable, ReasonDependencyUnavailable, "a dependency is unavailable", retryDelay)
	case sqldb.Unavailable(err):
		return rpcerr.RetryAfter(codes.Unavailable, ReasonStoreUnavailable, "order store unavailable; retry later", retryDelay)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return rpcerr.FromContext(err)
	}
	return status.Error(codes.Internal, "internal error")
}
