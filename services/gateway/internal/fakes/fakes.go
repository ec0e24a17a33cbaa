// Package fakes runs test doubles of the order, inventory and payment SERVICES as real gRPC servers on
// loopback: their behaviour is scripted by SKU and customer id, and every call is counted, so gateway
// tests see exactly what reached the other services. Only tests import it.
package fakes

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/validation"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// Serve runs a gRPC server with the health service on 127.0.0.1:0 until the test ends and returns its
// address and health server (to switch it to NOT_SERVING).
func Serve(t testing.TB, register func(*grpc.Server)) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthgrpc.RegisterHealthServer(srv, hs)
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), hs
}

// Backends are the three fakes, served.
type Backends struct {
	Order     *Order
	Inventory *Inventory
	Payment   *Payment
	Addrs     map[string]string
	Health    map[string]*health.Server
}

// Start serves fresh fakes of the three services.
func Start(t testing.TB) *Backends {
	t.Helper()
	b := &Backends{
		Order: NewOrder(), Inventory: NewInventory(), Payment: NewPayment(),
		Addrs: map[string]string{}, Health: map[string]*health.Server{},
	}
	b.Addrs["order"], b.Health["order"] = Serve(t, func(s *grpc.Server) { orderv1.RegisterOrderServiceServer(s, b.Order) })
	b.Addrs["inventory"], b.Health["inventory"] = Serve(t, func(s *grpc.Server) { inventoryv1.RegisterInventoryServiceServer(s, b.Inventory) })
	b.Addrs["payment"], b.Health["payment"] = Serve(t, func(s *grpc.Server) { paymentv1.RegisterPaymentServiceServer(s, b.Payment) })
	return b
}

// calls counts the calls of each method and remembers the x-customer-id each carried.
type calls struct {
	mu        sync.Mutex
	n         map[string]int
	customers []string
}

func (c *calls) enter(ctx context.Context, method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[method]++
	md, _ := metadata.FromIncomingContext(ctx)
	c.customers = append(c.customers, strings.Join(md.Get("x-customer-id"), ","))
}

// Calls returns how many calls of method reached the fake.
func (c *calls) Calls(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

// Customers returns the x-customer-id metadata of every call, in order ("" when absent).
func (c *calls) Customers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.customers)
}

// UnitPrice is the price of every fake order line, in EUR cents.
const UnitPrice = 250

// Order is a fake order service. CreateOrder validates like the real one and is idempotent per
// (customer, key). Outcomes by SKU: "OOS-*" → CANCELLED OUT_OF_STOCK, "GHOST-*" → CANCELLED
// UNKNOWN_PRODUCT, "SLOW-*" → stays PENDING until Confirm, "BOOM" → INTERNAL with a leaky message;
// customers whose id contains "poor" → CANCELLED PAYMENT_DECLINED; everything else CONFIRMED.
type Order struct {
	orderv1.UnimplementedOrderServiceServer
	calls

	mu       sync.Mutex
	orders   map[string]*orderv1.Order
	byKey    map[string]string
	watchers map[string][]chan struct{}
	creates  int // orders actually created (not idempotent replays)
}

// NewOrder returns an empty fake order service.
func NewOrder() *Order {
	return &Order{orders: map[string]*orderv1.Order{}, byKey: map[string]string{}, watchers: map[string][]chan struct{}{}}
}

// Created returns how many distinct orders were created.
func (f *Order) Created() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates
}

// LeakyMessage is the text of the fake's INTERNAL error, which must never reach HTTP clients.
const LeakyMessage = "pq: password authentication failed for user shop at db-7.internal"

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// CreateOrder implements orderv1.OrderServiceServer.
func (f *Order) CreateOrder(ctx context.Context, req *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	f.enter(ctx, "CreateOrder")
	if err := validation.Proto(req); err != nil {
		return nil, validation.ToStatus(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := req.GetCustomerId() + "\x00" + req.GetIdempotencyKey()
	if id, ok := f.byKey[key]; ok && req.GetIdempotencyKey() != "" {
		return &orderv1.CreateOrderResponse{Order: proto.Clone(f.orders[id]).(*orderv1.Order)}, nil
	}
	o := &orderv1.Order{
		Id: newID(), CustomerId: req.GetCustomerId(), Status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
		Currency: "EUR", CreatedAt: timestamppb.New(time.Now().UTC()), Version: 1,
	}
	for _, it := range req.GetItems() {
		switch {
		case it.GetSku() == "BOOM":
			return nil, status.Error(codes.Internal, LeakyMessage)
		case strings.HasPrefix(it.GetSku(), "OOS-"):
			o.Status, o.CancelReason = orderv1.OrderStatus_ORDER_STATUS_CANCELLED, orderv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK
		case strings.HasPrefix(it.GetSku(), "GHOST-"):
			o.Status, o.CancelReason = orderv1.OrderStatus_ORDER_STATUS_CANCELLED, orderv1.CancelReason_CANCEL_REASON_UNKNOWN_PRODUCT
		case strings.HasPrefix(it.GetSku(), "SLOW-") && o.Status == orderv1.OrderStatus_ORDER_STATUS_CONFIRMED:
			o.Status = orderv1.OrderStatus_ORDER_STATUS_PENDING
		}
		total := int64(it.GetQuantity()) * UnitPrice
		o.Items = append(o.Items, &orderv1.OrderLine{Sku: it.GetSku(), Quantity: it.GetQuantity(), UnitPriceCents: UnitPrice, LineTotalCents: total})
		o.TotalCents += total
	}
	if strings.Contains(req.GetCustomerId(), "poor") && o.Status != orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
		o.Status, o.CancelReason = orderv1.OrderStatus_ORDER_STATUS_CANCELLED, orderv1.CancelReason_CANCEL_REASON_PAYMENT_DECLINED
	}
	f.orders[o.GetId()] = o
	f.creates++
	if req.GetIdempotencyKey() != "" {
		f.byKey[key] = o.GetId()
	}
	return &orderv1.CreateOrderResponse{Order: proto.Clone(o).(*orderv1.Order)}, nil
}

func orderNotFound() error {
	return rpcerr.WithReason(codes.NotFound, "ORDER_NOT_FOUND", "order not found", nil)
}

// GetOrder implements orderv1.OrderServiceServer.
func (f *Order) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	f.enter(ctx, "GetOrder")
	if err := validation.Proto(req); err != nil {
		return nil, validation.ToStatus(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[req.GetOrderId()]
	if !ok {
		return nil, orderNotFound()
	}
	return &orderv1.GetOrderResponse{Order: proto.Clone(o).(*orderv1.Order)}, nil
}

// CancelOrder implements orderv1.OrderServiceServer.
func (f *Order) CancelOrder(ctx context.Context, req *orderv1.CancelOrderRequest) (*orderv1.CancelOrderResponse, error) {
	f.enter(ctx, "CancelOrder")
	if err := validation.Proto(req); err != nil {
		return nil, validation.ToStatus(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[req.GetOrderId()]
	if !ok {
		return nil, orderNotFound()
	}
	switch o.GetStatus() {
	case orderv1.OrderStatus_ORDER_STATUS_CONFIRMED:
		return nil, rpcerr.WithReason(codes.FailedPrecondition, "ORDER_CONFIRMED", "order is confirmed and cannot change", nil)
	case orderv1.OrderStatus_ORDER_STATUS_PENDING:
		f.setLocked(o, orderv1.OrderStatus_ORDER_STATUS_CANCELLED, orderv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUESTED)
		o.CancelDetail = req.GetReason()
	}
	return &orderv1.CancelOrderResponse{Order: proto.Clone(o).(*orderv1.Order)}, nil
}

// Confirm moves a PENDING order to CONFIRMED and wakes its watchers.
func (f *Order) Confirm(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o, ok := f.orders[id]; ok {
		f.setLocked(o, orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, orderv1.CancelReason_CANCEL_REASON_UNSPECIFIED)
	}
}

func (f *Order) setLocked(o *orderv1.Order, st orderv1.OrderStatus, reason orderv1.CancelReason) {
	o.Status, o.CancelReason = st, reason
	o.Version++
	for _, ch := range f.watchers[o.GetId()] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Watchers returns how many WatchOrder streams are open on order id.
func (f *Order) Watchers(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers[id])
}

func terminal(o *orderv1.Order) bool {
	return o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING
}

// WatchOrder implements orderv1.OrderServiceServer: the current state first (subscribed before it is
// sent, so no change is missed), then one message per change, ending after a terminal status.
func (f *Order) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	ctx := stream.Context()
	f.enter(ctx, "WatchOrder")
	if err := validation.Proto(req); err != nil {
		return validation.ToStatus(err)
	}
	id := req.GetOrderId()
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	o, ok := f.orders[id]
	if !ok {
		f.mu.Unlock()
		return orderNotFound()
	}
	snap := proto.Clone(o).(*orderv1.Order)
	f.watchers[id] = append(f.watchers[id], ch)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.watchers[id] = slices.DeleteFunc(f.watchers[id], func(c chan struct{}) bool { return c == ch })
	}()
	for {
		if err := stream.Send(&orderv1.WatchOrderResponse{Order: snap}); err != nil {
			return err
		}
		if terminal(snap) {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-ch:
		}
		f.mu.Lock()
		snap = proto.Clone(f.orders[id]).(*orderv1.Order)
		f.mu.Unlock()
	}
}

// Inventory is a fake inventory service with a small catalogue (EUR), paging of at most PageSize
// products, and an ImportStock that validates and applies each line as it arrives.
type Inventory struct {
	inventoryv1.UnimplementedInventoryServiceServer
	calls

	// PageSize caps every ListProducts page, so the gateway has to page.
	PageSize int

	mu       sync.Mutex
	products map[string]*inventoryv1.Product
	received int             // import lines received so far
	imported map[string]bool // import_id + "\x00" + seq of the lines applied
}

// NewInventory returns a fake with five products SKU-1..SKU-5 (10 units each, 100..500 cents).
func NewInventory() *Inventory {
	f := &Inventory{PageSize: 2, products: map[string]*inventoryv1.Product{}, imported: map[string]bool{}}
	for i := 1; i <= 5; i++ {
		sku := fmt.Sprintf("SKU-%d", i)
		f.products[sku] = &inventoryv1.Product{Sku: sku, Name: "Product " + sku, PriceCents: int64(i) * 100,
			Currency: "EUR", OnHand: 10, Available: 10, Version: 1}
	}
	return f
}

// Received returns how many import lines have arrived so far, over all imports.
func (f *Inventory) Received() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.received
}

// OnHand returns the on-hand units of sku (0 if unknown).
func (f *Inventory) OnHand(sku string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.products[sku].GetOnHand()
}

// GetProduct implements inventoryv1.InventoryServiceServer.
func (f *Inventory) GetProduct(ctx context.Context, req *inventoryv1.GetProductRequest) (*inventoryv1.GetProductResponse, error) {
	f.enter(ctx, "GetProduct")
	if err := validation.Proto(req); err != nil {
		return nil, validation.ToStatus(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.products[req.GetSku()]
	if !ok {
		return nil, rpcerr.WithReason(codes.NotFound, "UNKNOWN_PRODUCT", "unknown product "+req.GetSku(), map[string]string{"sku": req.GetSku()})
	}
	return &inventoryv1.GetProductResponse{Product: proto.Clone(p).(*inventoryv1.Product)}, nil
}

// ListProducts implements inventoryv1.InventoryServiceServer; the page token is the last SKU returned.
func (f *Inventory) ListProducts(ctx context.Context, req *inventoryv1.ListProductsRequest) (*inventoryv1.ListProductsResponse, error) {
	f.enter(ctx, "ListProducts")
	if err := validation.Proto(req); err != nil {
		return nil, validation.ToStatus(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	size := int(req.GetPageSize())
	if size == 0 || size > f.PageSize {
		size = f.PageSize
	}
	var skus []string
	for sku := range f.products {
		if sku > req.GetPageToken() {
			skus = append(skus, sku)
		}
	}
	slices.Sort(skus)
	resp := &inventoryv1.ListProductsResponse{}
	for i, sku := range skus {
		if i == size {
			resp.NextPageToken = skus[i-1]
			break
		}
		resp.Products = append(resp.Products, proto.Clone(f.products[sku]).(*inventoryv1.Product))
	}
	return resp, nil
}

// ImportStock implements inventoryv1.InventoryServiceServer like the real one: each line is validated
// and applied as it arrives, at most once per (import_id, seq) (a line applied before is skipped),
// invalid ones are counted and itemised, and a line without a valid import_id or seq ends the stream.
func (f *Inventory) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	f.enter(stream.Context(), "ImportStock")
	sum := &inventoryv1.ImportStockResponse{}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(sum)
		}
		if err != nil {
			return err
		}
		if err := importKey(req); err != nil {
			return err
		}
		sum.ImportId = req.GetImportId()
		f.mu.Lock()
		f.received++
		sum.LinesReceived++
		reject := func(reason string) {
			sum.LinesRejected++
			sum.Errors = append(sum.Errors, &inventoryv1.ImportStockError{Line: sum.LinesReceived, Sku: req.GetSku(), Reason: reason, Seq: req.GetSeq()})
		}
		p, known := f.products[req.GetSku()]
		key := fmt.Sprintf("%s\x00%d", req.GetImportId(), req.GetSeq())
		switch err := validation.Proto(req); {
		case err != nil:
			reject(err.Error())
		case f.imported[key]:
			sum.LinesSkipped++
		case !known && (req.Name == nil || req.PriceCents == nil):
			reject("new product needs name and price_cents")
		default:
			f.imported[key] = true
			if !known {
				p = &inventoryv1.Product{Sku: req.GetSku(), Name: req.GetName(), PriceCents: req.GetPriceCents(), Currency: "EUR"}
				f.products[req.GetSku()] = p
			}
			p.OnHand += req.GetQuantity()
			p.Available += req.GetQuantity()
			p.Version++
			sum.LinesApplied++
			sum.UnitsAdded += req.GetQuantity()
		}
		f.mu.Unlock()
	}
}

// importKey refuses a line whose import_id or seq is invalid, as inventory does, ending the stream.
func importKey(req *inventoryv1.ImportStockRequest) error {
	var vs []rpcerr.FieldViolation
	for _, v := range rpcerr.Violations(validation.ToStatus(validation.Proto(req))) {
		if v.Field == "import_id" || v.Field == "seq" {
			vs = append(vs, v)
		}
	}
	if len(vs) > 0 {
		return rpcerr.InvalidArgument(vs...)
	}
	return nil
}

// Payment is a fake payment service holding one EUR account per customer that asked for GetAccount,
// except customers whose id contains "ghost", which have none.
type Payment struct {
	paymentv1.UnimplementedPaymentServiceServer
	calls
}

// NewPayment returns a fake payment service.
func NewPayment() *Payment { return &Payment{} }

// GetAccount implements paymentv1.PaymentServiceServer.
func (f *Payment) GetAccount(ctx context.Context, req *paymentv1.GetAccountRequest) (*paymentv1.GetAccountResponse, error) {
	f.enter(ctx, "GetAccount")
	if err := validation.Proto(req); err != nil {
		return nil, validation.ToStatus(err)
	}
	if strings.Contains(req.GetCustomerId(), "ghost") {
		return nil, rpcerr.WithReason(codes.NotFound, "ACCOUNT_NOT_FOUND", "account not found", nil)
	}
	return &paymentv1.GetAccountResponse{Account: &paymentv1.Account{
		CustomerId: req.GetCustomerId(), BalanceCents: 100_000, HeldCents: 2_500, AvailableCents: 97_500, Currency: "EUR",
	}}, nil
}
