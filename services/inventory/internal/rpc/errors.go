package rpc

import (
	"context"
	"errors"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// ErrorInfo reasons inventory adds to the platform's.
const (
	ReasonOutOfStock           = "OUT_OF_STOCK"
	ReasonUnknownProduct       = "UNKNOWN_PRODUCT"
	ReasonMixedCurrency        = "MIXED_CURRENCY"
	ReasonReservationNotFound  = "RESERVATION_NOT_FOUND"
	ReasonReservationReleased  = "RESERVATION_RELEASED"
	ReasonReservationCommitted = "RESERVATION_COMMITTED"
	ReasonReservationMismatch  = "RESERVATION_MISMATCH"
	ReasonStoreUnavailable     = "INVENTORY_STORE_UNAVAILABLE"
)

// retryAfterUnavailable is the RetryInfo delay sent while the database cannot be reached.
const retryAfterUnavailable = time.Second

// toStatus maps domain errors to gRPC statuses — the one place that does. The database being
// unreachable or refusing for the moment (sqldb.Unavailable) is UNAVAILABLE with a retry delay, so
// clients wait an outage out instead of seeing INTERNAL; anything else unexpected becomes INTERNAL
// without its text; context errors keep their meaning.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var se *domain.StockError
	var ie *domain.InvalidError
	switch {
	case errors.As(err, &se) && errors.Is(err, domain.ErrOutOfStock):
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonOutOfStock, se.Error(), map[string]string{
			"sku": se.SKU, "requested": strconv.FormatInt(se.Requested, 10), "available": strconv.FormatInt(se.Available, 10),
		})
	case errors.As(err, &se) && errors.Is(err, domain.ErrUnknownProduct):
		return rpcerr.WithReason(codes.NotFound, ReasonUnknownProduct, se.Error(), map[string]string{"sku": se.SKU})
	case errors.As(err, &ie):
		return rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: ie.Field, Description: ie.Reason})
	case errors.Is(err, domain.ErrMixedCurrency):
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonMixedCurrency, domain.ErrMixedCurrency.Error(), nil)
	case errors.Is(err, domain.ErrReservationNotFound):
		return rpcerr.WithReason(codes.NotFound, ReasonReservationNotFound, domain.ErrReservationNotFound.Error(), nil)
	case errors.Is(err, domain.ErrReservationReleased):
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonReservationReleased, domain.ErrReservationReleased.Error(), nil)
	case errors.Is(err, domain.ErrReservationCommitted):
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonReservationCommitted, domain.ErrReservationCommitted.Error(), nil)
	case errors.Is(err, domain.ErrReservationMismatch):
		return rpcerr.WithReason(codes.AlreadyExists, ReasonReservationMismatch, domain.ErrReservationMismatch.Error(), nil)
	case sqldb.Unavailable(err):
		return rpcerr.RetryAfter(codes.Unavailable, ReasonStoreUnavailable, "inventory store unavailable; retry later", retryAfterUnavailable)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return rpcerr.FromContext(err)
	case rpcerr.IsStatus(err):
		return err
	}
	return status.Error(codes.Internal, "internal error")
}
