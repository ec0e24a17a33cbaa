// Package fakes runs test doubles of the inventory and payment SERVICES as real gRPC servers on
// loopback: their behaviour is scripted (stock levels, declines, outages) and every call is counted, so
// tests can check the saga's effects at the other services. Only tests import it.
package fakes

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// Serve runs a gRPC server with the health service on 127.0.0.1:0 until the test ends and returns
// its address.
func Serve(t testing.TB, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// Product is one fake catalogue entry.
type Product struct {
	Name       string
	PriceCents int64
	OnHand     int64
}

// Inventory is a fake inventory service: all-or-none reservations idempotent per order id, releases
// that succeed for unknown orders, and an outage switch.
type Inventory struct {
	inventoryv1.UnimplementedInventoryServiceServer

	mu       sync.Mutex
	down     bool
	products map[string]*stock
	res      map[string]*reservation
	calls    map[string]int // method → calls that reached the handler
	holds    int            // reservations created
	releases int            // reservations moved HELD → RELEASED
	commits  int            // reservations moved HELD → COMMITTED
	reserved func(orderID string)
}

type stock struct {
	Product
	reserved int64
}

type reservation struct {
	status inventoryv1.ReservationStatus
	lines  []*inventoryv1.ReservationLine
	total  int64
}

// NewInventory returns a fake with the given catalogue (all prices in EUR).
func NewInventory(products map[string]Product) *Inventory {
	f := &Inventory{products: map[string]*stock{}, res: map[string]*reservation{}, calls: map[string]int{}}
	for sku, p := range products {
		f.products[sku] = &stock{Product: p}
	}
	return f
}

// SetDown makes every call fail with UNAVAILABLE (true) or work again (false).
func (f *Inventory) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Calls returns how many calls of method reached the fake (outage answers included).
func (f *Inventory) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// Holds returns how many reservations were created, and how many of them were released.
func (f *Inventory) Holds() (created, released int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holds, f.releases
}

// Commits returns how many reservations were committed (HELD → COMMITTED, repeats not counted).
func (f *Inventory) Commits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.commits
}

// Reservation returns the status of an order's reservation (UNSPECIFIED if none).
func (f *Inventory) Reservation(orderID string) inventoryv1.ReservationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.res[orderID]; ok {
		return r.status
	}
	return inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED
}

// Available returns on_hand - reserved of a SKU.
func (f *Inventory) Available(sku string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.products[sku]
	return p.OnHand - p.reserved
}

func (f *Inventory) enter(method string) error {
	f.calls[method]++
	if f.down {
		return status.Error(codes.Unavailable, "inventory is down (fake)")
	}
	return nil
}

func (r *reservation) proto(orderID string) *inventoryv1.Reservation {
	return &inventoryv1.Reservation{OrderId: orderID, Status: r.status, Lines: r.lines, TotalCents: r.total, Currency: "EUR"}
}

// OnReserved has fn called (outside the fake's lock) after each ReserveStock that answered with a
// reservation, before the answer is sent: a test's way to act while the caller waits for it.
func (f *Inventory) OnReserved(fn func(orderID string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reserved = fn
}

// ReserveStock implements inventoryv1.InventoryServiceServer.
func (f *Inventory) ReserveStock(ctx context.Context, req *inventoryv1.ReserveStockRequest) (*inventoryv1.ReserveStockResponse, error) {
	resp, err := f.reserve(ctx, req)
	f.mu.Lock()
	hook := f.reserved
	f.mu.Unlock()
	if err == nil && hook != nil {
		hook(req.GetOrderId())
	}
	return resp, err
}

func (f *Inventory) reserve(_ context.Context, req *inventoryv1.ReserveStockRequest) (*inventoryv1.ReserveStockResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ReserveStock"); err != nil {
		return nil, err
	}
	if r, ok := f.res[req.GetOrderId()]; ok {
		return &inventoryv1.ReserveStockResponse{Reservation: r.proto(req.GetOrderId())}, nil
	}
	for _, it := range req.GetItems() {
		p, ok := f.products[it.GetSku()]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "unknown SKU %s", it.GetSku())
		}
		if p.OnHand-p.reserved < int64(it.GetQuantity()) {
			return nil, status.Errorf(codes.FailedPrecondition, "%s: requested %d, available %d",
				it.GetSku(), it.GetQuantity(), p.OnHand-p.reserved)
		}
	}
	r := &reservation{status: inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD}
	for _, it := range req.GetItems() {
		p := f.products[it.GetSku()]
		p.reserved += int64(it.GetQuantity())
		total := int64(it.GetQuantity()) * p.PriceCents
		r.lines = append(r.lines, &inventoryv1.ReservationLine{
			Sku: it.GetSku(), Quantity: it.GetQuantity(), UnitPriceCents: p.PriceCents, LineTotalCents: total,
		})
		r.total += total
	}
	f.res[req.GetOrderId()] = r
	f.holds++
	return &inventoryv1.ReserveStockResponse{Reservation: r.proto(req.GetOrderId())}, nil
}

// ReleaseStock implements inventoryv1.InventoryServiceServer.
func (f *Inventory) ReleaseStock(_ context.Context, req *inventoryv1.ReleaseStockRequest) (*inventoryv1.ReleaseStockResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("ReleaseStock"); err != nil {
		return nil, err
	}
	r, ok := f.res[req.GetOrderId()]
	if !ok {
		return &inventoryv1.ReleaseStockResponse{}, nil
	}
	switch r.status {
	case inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD:
		for _, l := range r.lines {
			f.products[l.GetSku()].reserved -= int64(l.GetQuantity())
		}
		r.status = inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
		f.releases++
	case inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED:
		return nil, status.Error(codes.FailedPrecondition, "reservation is committed")
	}
	return &inventoryv1.ReleaseStockResponse{Reservation: r.proto(req.GetOrderId())}, nil
}

// CommitStock implements inventoryv1.InventoryServiceServer: idempotent; a released reservation is
// FAILED_PRECONDITION, a missing one NOT_FOUND, as inventory answers.
func (f *Inventory) CommitStock(_ context.Context, req *inventoryv1.CommitStockRequest) (*inventoryv1.CommitStockResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("CommitStock"); err != nil {
		return nil, err
	}
	r, ok := f.res[req.GetOrderId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "reservation not found")
	}
	switch r.status {
	case inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD:
		for _, l := range r.lines {
			p := f.products[l.GetSku()]
			p.reserved -= int64(l.GetQuantity())
			p.OnHand -= int64(l.GetQuantity())
		}
		r.status = inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
		f.commits++
	case inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED:
		return nil, status.Error(codes.FailedPrecondition, "reservation was released")
	}
	return &inventoryv1.CommitStockResponse{Reservation: r.proto(req.GetOrderId())}, nil
}

// GetProduct implements inventoryv1.InventoryServiceServer.
func (f *Inventory) GetProduct(_ context.Context, req *inventoryv1.GetProductRequest) (*inventoryv1.GetProductResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("GetProduct"); err != nil {
		return nil, err
	}
	p, ok := f.products[req.GetSku()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "unknown SKU %s", req.GetSku())
	}
	return &inventoryv1.GetProductResponse{Product: &inventoryv1.Product{
		Sku: req.GetSku(), Name: p.Name, PriceCents: p.PriceCents, Currency: "EUR",
		OnHand: p.OnHand, Reserved: p.reserved, Available: p.OnHand - p.reserved,
	}}, nil
}

// Payment is a fake payment service: customers whose id contains "poor" are declined, authorizations
// are idempotent per order id, voids succeed for unknown orders, and an outage switch.
type Payment struct {
	paymentv1.UnimplementedPaymentServiceServer

	mu       sync.Mutex
	down     bool
	auths    map[string]*paymentv1.Authorization
	calls    map[string]int
	holds    int // authorizations created AUTHORIZED
	voids    int // authorizations moved AUTHORIZED → VOIDED
	denied   int // authorizations created DECLINED
	captures int // authorizations moved AUTHORIZED → CAPTURED
}

// NewPayment returns a fake payment service.
func NewPayment() *Payment {
	return &Payment{auths: map[string]*paymentv1.Authorization{}, calls: map[string]int{}}
}

// SetDown makes every call fail with UNAVAILABLE (true) or work again (false).
func (f *Payment) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Calls returns how many calls of method reached the fake.
func (f *Payment) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// Counts returns the authorizations created AUTHORIZED, voided, and declined.
func (f *Payment) Counts() (authorized, voided, declined int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holds, f.voids, f.denied
}

// Captures returns how many authorizations were captured (repeats not counted).
func (f *Payment) Captures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.captures
}

// Status returns the status of an order's authorization (UNSPECIFIED if none).
func (f *Payment) Status(orderID string) paymentv1.AuthorizationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.auths[orderID].GetStatus()
}

func (f *Payment) enter(method string) error {
	f.calls[method]++
	if f.down {
		return status.Error(codes.Unavailable, "payment is down (fake)")
	}
	return nil
}

// AuthorizePayment implements paymentv1.PaymentServiceServer.
func (f *Payment) AuthorizePayment(_ context.Context, req *paymentv1.AuthorizePaymentRequest) (*paymentv1.AuthorizePaymentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("AuthorizePayment"); err != nil {
		return nil, err
	}
	if a, ok := f.auths[req.GetOrderId()]; ok {
		if a.GetAmountCents() != req.GetAmountCents() || a.GetCurrency() != req.GetCurrency() {
			return nil, status.Error(codes.AlreadyExists, "authorization exists with other values")
		}
		return &paymentv1.AuthorizePaymentResponse{Authorization: clone(a)}, nil
	}
	a := &paymentv1.Authorization{
		OrderId: req.GetOrderId(), CustomerId: req.GetCustomerId(), AmountCents: req.GetAmountCents(),
		Currency: req.GetCurrency(), Status: paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED, Version: 1,
	}
	if strings.Contains(req.GetCustomerId(), "poor") {
		a.Status = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_DECLINED
		a.DeclineReason = paymentv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS
		f.denied++
	} else {
		f.holds++
	}
	f.auths[req.GetOrderId()] = a
	return &paymentv1.AuthorizePaymentResponse{Authorization: clone(a)}, nil
}

// VoidPayment implements paymentv1.PaymentServiceServer.
func (f *Payment) VoidPayment(_ context.Context, req *paymentv1.VoidPaymentRequest) (*paymentv1.VoidPaymentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("VoidPayment"); err != nil {
		return nil, err
	}
	a, ok := f.auths[req.GetOrderId()]
	if !ok {
		return &paymentv1.VoidPaymentResponse{}, nil
	}
	switch a.GetStatus() {
	case paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED:
		a.Status = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED
		a.Version++
		f.voids++
	case paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED:
		return nil, status.Error(codes.FailedPrecondition, "captured")
	}
	return &paymentv1.VoidPaymentResponse{Authorization: clone(a)}, nil
}

// CapturePayment implements paymentv1.PaymentServiceServer: idempotent; a voided or declined
// authorization is FAILED_PRECONDITION, a missing one NOT_FOUND, as payment answers.
func (f *Payment) CapturePayment(_ context.Context, req *paymentv1.CapturePaymentRequest) (*paymentv1.CapturePaymentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("CapturePayment"); err != nil {
		return nil, err
	}
	a, ok := f.auths[req.GetOrderId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no authorization for this order")
	}
	switch a.GetStatus() {
	case paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED:
		a.Status = paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED
		a.Version++
		f.captures++
	case paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED:
	default:
		return nil, status.Errorf(codes.FailedPrecondition, "authorization is %s", a.GetStatus())
	}
	return &paymentv1.CapturePaymentResponse{Authorization: clone(a)}, nil
}

// clone copies a stored message: gRPC encodes responses after the handler returned and the lock is gone.
func clone(a *paymentv1.Authorization) *paymentv1.Authorization {
	return proto.Clone(a).(*paymentv1.Authorization)
}
