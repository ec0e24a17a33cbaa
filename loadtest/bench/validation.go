package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
)

// ValidationConc is the concurrency of the validation case (the chain goal's).
const ValidationConc = 50

// fixedOrders answers CreateOrder with the same order every time: the handler costs next to nothing, so
// the case measures the chain and its validation stage.
type fixedOrders struct {
	orderv1.UnimplementedOrderServiceServer
	reply *orderv1.CreateOrderResponse
}

func (f fixedOrders) CreateOrder(context.Context, *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	return f.reply, nil
}

var (
	// validOrder passes every rule of CreateOrderRequest (customer id, idempotency key, 3 lines).
	validOrder = &orderv1.CreateOrderRequest{
		CustomerId: "cust-0001", IdempotencyKey: "bench-7f3c2a",
		Items: []*orderv1.OrderItem{
			{Sku: "SKU-0001", Quantity: 1}, {Sku: "SKU-0002", Quantity: 2}, {Sku: "SKU-0003", Quantity: 3},
		},
	}
	// invalidOrder breaks two rules: an empty customer_id (min_len and pattern) and a quantity of 0 (gte 1).
	invalidOrder = &orderv1.CreateOrderRequest{
		IdempotencyKey: "bench-7f3c2a",
		Items: []*orderv1.OrderItem{
			{Sku: "SKU-0001", Quantity: 1}, {Sku: "SKU-0002", Quantity: 0}, {Sku: "SKU-0003", Quantity: 3},
		},
	}
	fixedReply = &orderv1.CreateOrderResponse{Order: &orderv1.Order{
		Id: "ord-0001", CustomerId: "cust-0001", Status: orderv1.OrderStatus_ORDER_STATUS_PENDING,
		Items: []*orderv1.OrderLine{
			{Sku: "SKU-0001", Quantity: 1, UnitPriceCents: 1999, LineTotalCents: 1999},
			{Sku: "SKU-0002", Quantity: 2, UnitPriceCents: 500, LineTotalCents: 1000},
			{Sku: "SKU-0003", Quantity: 3, UnitPriceCents: 250, LineTotalCents: 750},
		},
		TotalCents: 3749, Currency: "USD", Version: 1,
	}}
)

// ValidationCase measures the server chain's validation stage (protovalidate on the contracts' rules) on
// an order-shaped unary call, OrderService/CreateOrder, client and platform server over loopback in this
// process like ChainCases: `off` is the chain without the stage (platform.WithValidator(nil)) sent the
// valid request; `valid` the default chain with the valid request; `invalid` the default chain with a
// request breaking two rules, whose expected outcome is INVALID_ARGUMENT (anything else, OK included,
// counts as an error). The stage's cost is valid's and invalid's CPU per request against off's.
func ValidationCase(ctx context.Context, cl *Cleanup) (Case, error) {
	off, err := platformOrders(ctx, cl, platform.WithValidator(nil))
	if err != nil {
		return Case{}, fmt.Errorf("orders without validation: %w", err)
	}
	on, err := platformOrders(ctx, cl)
	if err != nil {
		return Case{}, fmt.Errorf("orders with validation: %w", err)
	}
	// The variants measure what they claim only if the stage rejects the invalid order when on and
	// lets it through to the handler when off.
	invalid := createOp(on, invalidOrder, codes.InvalidArgument)
	if err := invalid(ctx); err != nil {
		return Case{}, fmt.Errorf("invalid order, validation on: %w", err)
	}
	if err := createOp(off, invalidOrder, codes.OK)(ctx); err != nil {
		return Case{}, fmt.Errorf("invalid order, validation off: %w", err)
	}
	return Case{Name: fmt.Sprintf("Validation/conc=%d", ValidationConc), Conc: ValidationConc, Variants: []Variant{
		{Name: "off", Op: createOp(off, validOrder, codes.OK)},
		{Name: "valid", Op: createOp(on, validOrder, codes.OK)},
		{Name: "invalid", Op: invalid},
	}}, nil
}

// createOp calls CreateOrder with req and a 5 s deadline; the call succeeds (nil) when it ends with want.
func createOp(c orderv1.OrderServiceClient, req *orderv1.CreateOrderRequest, want codes.Code) Op {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.CreateOrder(ctx, req)
		if got := status.Code(err); got != want {
			return fmt.Errorf("CreateOrder ended %v, want %v: %w", got, want, err)
		}
		return nil
	}
}

// platformOrders serves fixedOrders through the platform facade (dev profile, the whole server chain;
// opts go to NewServer) and calls it through a second platform's Dial, as platformEcho does the echo.
func platformOrders(ctx context.Context, cl *Cleanup, opts ...platform.ServerOption) (orderv1.OrderServiceClient, error) {
	logger := slog.New(slog.DiscardHandler)
	scfg := config.Default(config.Dev)
	scfg.Service, scfg.ListenAddr = "order", "127.0.0.1:0"
	sp, err := platform.New(ctx, scfg, logger)
	if err != nil {
		return nil, fmt.Errorf("server platform: %w", err)
	}
	srv := sp.NewServer(opts...)
	orderv1.RegisterOrderServiceServer(srv, fixedOrders{reply: fixedReply})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = sp.Close()
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { _ = sp.Serve(sctx, srv, lis); close(served) }()
	cl.Add(func() { stop(); <-served; _ = sp.Close() })

	ccfg := config.Default(config.Dev)
	ccfg.Service = "bench"
	ccfg.Targets = map[string]config.Target{"order": {Addresses: []string{lis.Addr().String()}}}
	cp, err := platform.New(ctx, ccfg, logger)
	if err != nil {
		return nil, fmt.Errorf("client platform: %w", err)
	}
	cl.Add(func() { _ = cp.Close() })
	conn, err := cp.Dial("order")
	if err != nil {
		return nil, err
	}
	c := orderv1.NewOrderServiceClient(conn)
	return c, waitUp(ctx, createOp(c, validOrder, codes.OK))
}
