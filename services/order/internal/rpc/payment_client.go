package rpc

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// PaymentClient adapts the payment service to the application's port.
type PaymentClient struct {
	c       paymentv1.PaymentServiceClient
	timeout time.Duration
}

var _ app.PaymentAuthorizer = (*PaymentClient)(nil)

// NewPaymentClient returns an adapter whose every call ends within timeout.
func NewPaymentClient(c paymentv1.PaymentServiceClient, timeout time.Duration) *PaymentClient {
	return &PaymentClient{c: c, timeout: timeout}
}

// AuthorizePayment implements app.PaymentAuthorizer. A decline is a normal answer, and so is a customer
// without an account (NOT_FOUND ACCOUNT_NOT_FOUND: declined with that detail). An authorize that lands
// after the order's void (FAILED_PRECONDITION AUTHORIZATION_VOIDED) is domain.ErrPaymentVoided; the other
// permanent refusals (INVALID_ARGUMENT, ALREADY_EXISTS IDEMPOTENCY_CONFLICT, FAILED_PRECONDITION) are
// domain.ErrDependencyRefused; every other error is "unavailable", since a retry of the same order with
// the same amount is idempotent.
func (p *PaymentClient) AuthorizePayment(ctx context.Context, req app.AuthorizeRequest) (app.Authorization, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := p.c.AuthorizePayment(ctx, &paymentv1.AuthorizePaymentRequest{
		OrderId: req.OrderID, CustomerId: req.CustomerID, AmountCents: req.AmountCents, Currency: req.Currency,
	})
	if err != nil {
		st := status.Convert(err)
		switch reason := rpcerr.Reason(err); {
		case st.Code() == codes.FailedPrecondition && reason == paymentReasonVoided:
			return app.Authorization{}, fmt.Errorf("authorize payment: %w: %s", domain.ErrPaymentVoided, st.Message())
		case st.Code() == codes.NotFound && reason == paymentReasonNoAccount:
			return app.Authorization{Detail: paymentReasonNoAccount}, nil
		case st.Code() == codes.InvalidArgument, st.Code() == codes.AlreadyExists, st.Code() == codes.FailedPrecondition:
			return app.Authorization{}, fmt.Errorf("authorize payment: %w: payment: %s", domain.ErrDependencyRefused, st.Message())
		}
		return app.Authorization{}, fmt.Errorf("authorize payment: %w: %s: %s", domain.ErrUnavailable, st.Code(), st.Message())
	}
	a := resp.GetAuthorization()
	switch a.GetStatus() {
	case paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED, paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED:
		return app.Authorization{Approved: true}, nil
	case paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_DECLINED:
		return app.Authorization{Detail: a.GetDeclineReason().String()}, nil
	case paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED:
		return app.Authorization{Voided: true, Detail: "authorization was voided"}, nil
	}
	return app.Authorization{}, fmt.Errorf("authorize payment: %w: unexpected status %s", domain.ErrUnavailable, a.GetStatus())
}

// VoidPayment implements app.PaymentAuthorizer. Voiding a captured payment is refused for good.
func (p *PaymentClient) VoidPayment(ctx context.Context, orderID string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if _, err := p.c.VoidPayment(ctx, &paymentv1.VoidPaymentRequest{OrderId: orderID}); err != nil {
		return fmt.Errorf("void payment: %w", followupError("payment", err))
	}
	return nil
}

// CapturePayment implements app.PaymentAuthorizer. Capturing a voided or declined payment, or one that
// does not exist, is refused for good.
func (p *PaymentClient) CapturePayment(ctx context.Context, orderID string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if _, err := p.c.CapturePayment(ctx, &paymentv1.CapturePaymentRequest{OrderId: orderID}); err != nil {
		return fmt.Errorf("capture payment: %w", followupError("payment", err))
	}
	return nil
}
