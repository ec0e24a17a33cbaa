package rpc

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// ErrorInfo reasons of the payment service.
const (
	ReasonAccountNotFound       = "ACCOUNT_NOT_FOUND"
	ReasonAuthorizationNotFound = "AUTHORIZATION_NOT_FOUND"
	ReasonIdempotencyConflict   = "IDEMPOTENCY_CONFLICT"
	// ReasonAuthorizationVoided: the order was voided (compensated) before it was authorized; nothing
	// was held and nothing can be captured. Retrying cannot change the answer.
	ReasonAuthorizationVoided = "AUTHORIZATION_VOIDED"
	ReasonInvalidState        = "INVALID_AUTHORIZATION_STATE"
	ReasonUnavailable         = "PAYMENT_STORE_UNAVAILABLE"
	ReasonInternal            = "INTERNAL"
)

// retryAfterUnavailable is the RetryInfo delay sent with a store failure.
const retryAfterUnavailable = 200 * time.Millisecond

// toStatus maps an error of the use cases to the status the client sees: domain errors by errors.Is,
// the database unreachable or refusing for the moment (sqldb.Unavailable, which includes a connect
// timing out) to UNAVAILABLE, context errors to CANCELED / DEADLINE_EXCEEDED, and anything else — the
// database failing — to UNAVAILABLE too, which is safe to retry because every payment call is
// idempotent. Details of internal errors are logged, never sent.
func (s *Server) toStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, domain.ErrInvalidRequest):
		return rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: "request", Description: err.Error()})
	case errors.Is(err, domain.ErrAccountNotFound):
		return rpcerr.WithReason(codes.NotFound, ReasonAccountNotFound, "account not found", nil)
	case errors.Is(err, domain.ErrAuthorizationNotFound):
		return rpcerr.WithReason(codes.NotFound, ReasonAuthorizationNotFound, "no authorization for this order", nil)
	case errors.Is(err, domain.ErrIdempotencyConflict):
		return rpcerr.WithReason(codes.AlreadyExists, ReasonIdempotencyConflict,
			"order already has an authorization with a different customer, amount or currency", nil)
	case errors.Is(err, domain.ErrAuthorizationVoided):
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonAuthorizationVoided,
			"the order was voided before it was authorized", nil)
	case errors.Is(err, domain.ErrInvalidTransition):
		return rpcerr.WithReason(codes.FailedPrecondition, ReasonInvalidState, err.Error(), nil)
	case errors.Is(err, domain.ErrInconsistent):
		s.log.ErrorContext(ctx, "payment state inconsistent", "err", err)
		return rpcerr.WithReason(codes.Internal, ReasonInternal, "internal error", nil)
	case sqldb.Unavailable(err):
		s.log.WarnContext(ctx, "payment store unavailable", "err", err)
		return rpcerr.RetryAfter(codes.Unavailable, ReasonUnavailable, "payment store unavailable", retryAfterUnavailable)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return rpcerr.FromContext(err)
	}
	s.log.WarnContext(ctx, "payment store failed", "err", err)
	return rpcerr.RetryAfter(codes.Unavailable, ReasonUnavailable, "payment store unavailable", retryAfterUnavailable)
}
