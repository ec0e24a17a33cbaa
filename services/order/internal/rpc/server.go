// Package rpc is the gRPC edge of the order service: the OrderService server, the mapping of domain
// errors to statuses, and the adapters that call inventory and payment.
package rpc

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
)

// retryDelay is what UNAVAILABLE answers tell clients to wait.
const retryDelay = time.Second

// CustomerFunc decides which customer a request acts for, from the call's context (peer certificate,
// customer in metadata) and the customer_id the request claims ("" when the request has none). It
// returns "" for a call that acts for no particular customer (a trusted service), which may then see
// every order.
type CustomerFunc func(ctx context.Context, claimed string) (string, error)

// TrustClaimed returns the claimed customer id unchecked (tests of the layers below).
func TrustClaimed(_ context.Context, claimed string) (string, error) { return claimed, nil }

// FromGateway is the default CustomerFunc: the customer is the one the gateway authenticated and put in
// the x-customer-id metadata (authz.CustomerFrom believes it only from the gateway's certificate, or
// from anyone when TLS is off in dev and test). A request claiming another customer is
// PERMISSION_DENIED. A call without customer metadata acts for no customer; CreateOrder then keeps its
// claimed customer_id.
func FromGateway(ctx context.Context, claimed string) (string, error) {
	customer, err := authz.CustomerFrom(ctx)
	if err != nil {
		return "", err
	}
	switch {
	case customer == "":
		return claimed, nil
	case claimed != "" && claimed != customer:
		return "", status.Error(codes.PermissionDenied, "permission denied: request is for another customer")
	}
	return customer, nil
}

// Server implements orderv1.OrderServiceServer on the application.
type Server struct {
	orderv1.UnimplementedOrderServiceServer
	app      *app.App
	customer CustomerFunc
}

var _ orderv1.OrderServiceServer = (*Server)(nil)

// NewServer returns the OrderService; customer nil means FromGateway.
func NewServer(a *app.App, customer CustomerFunc) *Server {
	if customer == nil {
		customer = FromGateway
	}
	return &Server{app: a, customer: customer}
}

// CreateOrder implements orderv1.OrderServiceServer.
func (s *Server) CreateOrder(ctx context.Context, req *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	customer, err := s.customer(ctx, req.GetCustomerId())
	if err != nil {
		return nil, err
	}
	lines := make([]domain.Line, len(req.GetItems()))
	for i, it := range req.GetItems() {
		lines[i] = domain.Line{SKU: it.GetSku(), Quantity: it.GetQuantity()}
	}
	o, err := s.app.PlaceOrder(ctx, app.PlaceOrder{CustomerID: customer, IdempotencyKey: req.GetIdempotencyKey(), Lines: lines})
	if err != nil {
		return nil, toStatus(err)
	}
	return &orderv1.CreateOrderResponse{Order: ToProto(o)}, nil
}

// owned reads order id for the call's customer: another customer's order is reported exactly like a
// missing one (NOT_FOUND), so ids cannot be probed.
func (s *Server) owned(ctx context.Context, id string) (domain.Order, error) {
	customer, err := s.customer(ctx, "")
	if err != nil {
		return domain.Order{}, err
	}
	o, err := s.app.Get(ctx, id)
	if err != nil {
		return domain.Order{}, toStatus(err)
	}
	if customer != "" && o.CustomerID != customer {
		return domain.Order{}, toStatus(domain.ErrNotFound)
	}
	return o, nil
}

// GetOrder implements orderv1.OrderServiceServer.
func (s *Server) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	o, err := s.owned(ctx, req.GetOrderId())
	if err != nil {
		return nil, err
	}
	return &orderv1.GetOrderResponse{Order: ToProto(o)}, nil
}

// CancelOrder implements orderv1.OrderServiceServer. Ownership is checked first; it cannot change
// afterwards, since an order's customer never does.
func (s *Server) CancelOrder(ctx context.Context, req *orderv1.CancelOrderRequest) (*orderv1.CancelOrderResponse, error) {
	if _, err := s.owned(ctx, req.GetOrderId()); err != nil {
		return nil, err
	}
	o, err := s.app.CancelOrder(ctx, req.GetOrderId(), req.GetReason())
	if err != nil {
		return nil, toStatus(err)
	}
	return &orderv1.CancelOrderResponse{Order: ToProto(o)}, nil
}

// WatchOrder implements orderv1.OrderServiceServer.
func (s *Server) WatchOrder(req *orderv1.WatchOrderRequest, stream orderv1.OrderService_WatchOrderServer) error {
	if _, err := s.owned(stream.Context(), req.GetOrderId()); err != nil {
		return err
	}
	err := s.app.WatchOrder(stream.Context(), req.GetOrderId(), func(o domain.Order) error {
		return stream.Send(&orderv1.WatchOrderResponse{Order: ToProto(o)})
	})
	return toStatus(err)
}

// Checkout implements orderv1.OrderServiceServer: one quote per edit, in order, until the client
// closes its side.
func (s *Server) Checkout(stream orderv1.OrderService_CheckoutServer) error {
	ctx := stream.Context()
	cart := domain.NewCart()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch e := req.GetEdit().(type) {
		case *orderv1.CheckoutRequest_SetItem:
			if err := cart.Set(e.SetItem.GetSku(), e.SetItem.GetQuantity()); err != nil {
				return toStatus(err)
			}
		case *orderv1.CheckoutRequest_Clear:
			cart.Clear()
		case *orderv1.CheckoutRequest_Refresh:
		default:
			return toStatus(domain.ErrInvalidOrder)
		}
		q, err := s.app.QuoteCart(ctx, cart.Lines())
		if err != nil {
			return toStatus(err)
		}
		if err := stream.Send(&orderv1.CheckoutResponse{Quote: quoteProto(q, cart.Revision)}); err != nil {
			return err
		}
	}
}

// ToProto converts an order to its API form.
func ToProto(o domain.Order) *orderv1.Order {
	return &orderv1.Order{
		Id:           o.ID,
		CustomerId:   o.CustomerID,
		Status:       statusProto(o.Status),
		CancelReason: events.CancelReason(o.CancelReason),
		CancelDetail: o.CancelDetail,
		Items:        events.Lines(o.Lines),
		TotalCents:   o.TotalCents,
		Currency:     o.Currency,
		CreatedAt:    timestamppb.New(o.CreatedAt),
		UpdatedAt:    timestamppb.New(o.UpdatedAt),
		Version:      o.Version,
	}
}

func statusProto(s domain.Status) orderv1.OrderStatus {
	switch s {
	case domain.Pending:
		return orderv1.OrderStatus_ORDER_STATUS_PENDING
	case domain.Confirmed:
		return orderv1.OrderStatus_ORDER_STATUS_CONFIRMED
	case domain.Cancelled:
		return orderv1.OrderStatus_ORDER_STATUS_CANCELLED
	}
	return orderv1.OrderStatus_ORDER_STATUS_UNSPECIFIED
}

func quoteProto(q app.Quote, revision int64) *orderv1.Quote {
	out := &orderv1.Quote{
		TotalCents: q.TotalCents, Currency: q.Currency, Orderable: q.Orderable, Revision: revision,
		QuotedAt: timestamppb.Now(),
	}
	for _, l := range q.Lines {
		st := orderv1.QuoteLineStatus_QUOTE_LINE_STATUS_UNSPECIFIED
		switch l.Status {
		case app.LineAvailable:
			st = orderv1.QuoteLineStatus_QUOTE_LINE_STATUS_AVAILABLE
		case app.LineInsufficientStock:
			st = orderv1.QuoteLineStatus_QUOTE_LINE_STATUS_INSUFFICIENT_STOCK
		case app.LineUnknownProduct:
			st = orderv1.QuoteLineStatus_QUOTE_LINE_STATUS_UNKNOWN_PRODUCT
		}
		out.Lines = append(out.Lines, &orderv1.QuoteLine{
			Sku: l.SKU, Name: l.Name, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents,
			LineTotalCents: l.LineTotalCents, Status: st, AvailableQuantity: l.Available,
		})
	}
	return out
}
