// Package rpc serves shopmesh.payment.v1.PaymentService over gRPC: it converts between the contract and
// the domain and maps domain errors to status codes (errors.go). Request fields are validated by the
// platform's interceptor before a handler runs.
package rpc

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
)

// Payments is what the server needs from the use cases.
type Payments interface {
	Authorize(ctx context.Context, req domain.AuthorizeRequest) (domain.Authorization, error)
	Capture(ctx context.Context, orderID string) (domain.Authorization, error)
	Void(ctx context.Context, orderID string) (domain.Authorization, bool, error)
	GetAccount(ctx context.Context, customerID string) (domain.Account, error)
}

var _ Payments = (*app.App)(nil)

// Server implements paymentv1.PaymentServiceServer.
type Server struct {
	paymentv1.UnimplementedPaymentServiceServer
	uc  Payments
	log *slog.Logger
}

var _ paymentv1.PaymentServiceServer = (*Server)(nil)

// NewServer returns the gRPC handlers over the use cases; log receives errors that clients only see
// as UNAVAILABLE or INTERNAL.
func NewServer(uc Payments, log *slog.Logger) *Server { return &Server{uc: uc, log: log} }

// Register registers the server on r (the service's gRPC server).
func (s *Server) Register(r grpc.ServiceRegistrar) { paymentv1.RegisterPaymentServiceServer(r, s) }

// AuthorizePayment implements paymentv1.PaymentServiceServer. A decline is a normal response.
func (s *Server) AuthorizePayment(ctx context.Context, req *paymentv1.AuthorizePaymentRequest) (*paymentv1.AuthorizePaymentResponse, error) {
	a, err := s.uc.Authorize(ctx, domain.AuthorizeRequest{
		OrderID:    req.GetOrderId(),
		CustomerID: req.GetCustomerId(),
		Amount:     req.GetAmountCents(),
		Currency:   req.GetCurrency(),
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &paymentv1.AuthorizePaymentResponse{Authorization: toProto(a)}, nil
}

// CapturePayment implements paymentv1.PaymentServiceServer.
func (s *Server) CapturePayment(ctx context.Context, req *paymentv1.CapturePaymentRequest) (*paymentv1.CapturePaymentResponse, error) {
	a, err := s.uc.Capture(ctx, req.GetOrderId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &paymentv1.CapturePaymentResponse{Authorization: toProto(a)}, nil
}

// VoidPayment implements paymentv1.PaymentServiceServer. An unknown order is not an error: the
// response simply has no authorization.
func (s *Server) VoidPayment(ctx context.Context, req *paymentv1.VoidPaymentRequest) (*paymentv1.VoidPaymentResponse, error) {
	a, found, err := s.uc.Void(ctx, req.GetOrderId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if !found {
		return &paymentv1.VoidPaymentResponse{}, nil
	}
	return &paymentv1.VoidPaymentResponse{Authorization: toProto(a)}, nil
}

// GetAccount implements paymentv1.PaymentServiceServer. A customer sees only their own account: the
// customer is the one the gateway authenticated (authz.CustomerFrom believes x-customer-id only from
// the gateway's certificate), and another customer's account is NOT_FOUND, the same answer as a
// missing one, so that its existence does not leak. A call acting for no customer (a service the
// authorization policy lets call GetAccount) reads the account it names.
func (s *Server) GetAccount(ctx context.Context, req *paymentv1.GetAccountRequest) (*paymentv1.GetAccountResponse, error) {
	customer, err := authz.CustomerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if customer != "" && customer != req.GetCustomerId() {
		return nil, s.toStatus(ctx, domain.ErrAccountNotFound)
	}
	acct, err := s.uc.GetAccount(ctx, req.GetCustomerId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &paymentv1.GetAccountResponse{Account: &paymentv1.Account{
		CustomerId:     acct.CustomerID,
		BalanceCents:   acct.Balance,
		HeldCents:      acct.Held,
		AvailableCents: acct.Available(),
		Currency:       acct.Currency,
	}}, nil
}

func toProto(a domain.Authorization) *paymentv1.Authorization {
	return &paymentv1.Authorization{
		OrderId:       a.OrderID,
		CustomerId:    a.CustomerID,
		AmountCents:   a.Amount,
		Currency:      a.Currency,
		Status:        statusOf(a.Status),
		DeclineReason: events.DeclineReason(a.DeclineReason),
		CreatedAt:     timestamppb.New(a.CreatedAt),
		UpdatedAt:     timestamppb.New(a.UpdatedAt),
		Version:       a.Version,
	}
}

func statusOf(s domain.Status) paymentv1.AuthorizationStatus {
	switch s {
	case domain.StatusAuthorized:
		return paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED
	case domain.StatusDeclined:
		return paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_DECLINED
	case domain.StatusCaptured:
		return paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED
	case domain.StatusVoided:
		return paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED
	}
	return paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_UNSPECIFIED
}
