package dialer_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/shopmesh/shopmesh/pkg/platform/dialer"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// The generated packages register their descriptors; these make sure they are linked in.
var _ = []any{eventsv1.File_shopmesh_events_v1_events_proto, inventoryv1.File_shopmesh_inventory_v1_inventory_proto,
	orderv1.File_shopmesh_order_v1_order_proto, paymentv1.File_shopmesh_payment_v1_payment_proto}

// A method whose proto declares no idempotency_level does its effect, then fails with UNAVAILABLE (a
// replica dying after its commit looks like that): the client must not repeat it. With the old default
// retry policy on every method the server saw 4 attempts, i.e. 4 effects.
func TestRetryNotForMethodsWithoutIdempotencyLevel(t *testing.T) {
	t.Parallel()
	var effects atomic.Int64
	echo := &testserver.Echo{Unary: func(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		effects.Add(1)
		return nil, status.Error(codes.Unavailable, "committed, then the connection broke")
	}}
	addr := testserver.Start(t, grpc.NewServer(), echo)
	client := dial(t, "passthrough:///"+addr, dialer.Options{Target: dialer.Target{Retry: retryPolicy(4)}})
	if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("code = %v", status.Code(err))
	}
	if got := effects.Load(); got != 1 {
		t.Errorf("the non-idempotent method ran %d times, want 1", got)
	}
}

// fakeOrders is an OrderService whose handlers fail the first attempt with UNAVAILABLE after counting it.
type fakeOrders struct {
	orderv1.UnimplementedOrderServiceServer
	create, watch, checkout atomic.Int64
}

func (f *fakeOrders) CreateOrder(context.Context, *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	if f.create.Add(1) == 1 {
		return nil, status.Error(codes.Unavailable, "committed, then the connection broke")
	}
	return &orderv1.CreateOrderResponse{}, nil
}

func (f *fakeOrders) WatchOrder(_ *orderv1.WatchOrderRequest, s grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	if f.watch.Add(1) == 1 {
		return status.Error(codes.Unavailable, "not yet")
	}
	return s.Send(&orderv1.WatchOrderResponse{})
}

func (f *fakeOrders) Checkout(s grpc.BidiStreamingServer[orderv1.CheckoutRequest, orderv1.CheckoutResponse]) error {
	f.checkout.Add(1)
	if _, err := s.Recv(); err != nil {
		return err
	}
	return status.Error(codes.Unavailable, "session lost")
}

// The shopmesh protos decide: CreateOrder (IDEMPOTENT, its key is required) and WatchOrder
// (NO_SIDE_EFFECTS, a stream retried before its headers) are retried; Checkout (bidi, no level) is not.
func TestRetryFollowsIdempotencyLevel(t *testing.T) {
	t.Parallel()
	fake := &fakeOrders{}
	srv := grpc.NewServer()
	orderv1.RegisterOrderServiceServer(srv, fake)
	addr := testserver.Start(t, srv, &testserver.Echo{})
	conn, err := dialer.Dial("passthrough:///"+addr, dialer.Options{Target: dialer.Target{Retry: retryPolicy(4)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := orderv1.NewOrderServiceClient(conn)

	if _, err := c.CreateOrder(t.Context(), &orderv1.CreateOrderRequest{IdempotencyKey: "k-1"}); err != nil {
		t.Errorf("CreateOrder should be retried: %v", err)
	}
	if got := fake.create.Load(); got != 2 {
		t.Errorf("CreateOrder attempts = %d, want 2", got)
	}

	ws, err := c.WatchOrder(t.Context(), &orderv1.WatchOrderRequest{OrderId: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Errorf("WatchOrder should be retried before its headers: %v", err)
	}
	if _, err := ws.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("WatchOrder end: %v", err)
	}
	if got := fake.watch.Load(); got != 2 {
		t.Errorf("WatchOrder attempts = %d, want 2", got)
	}

	cs, err := c.Checkout(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Send(&orderv1.CheckoutRequest{}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if _, err := cs.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Checkout: %v, want UNAVAILABLE", err)
	}
	if got := fake.checkout.Load(); got != 1 {
		t.Errorf("Checkout sessions = %d, want 1: a bidi session is not retried", got)
	}
}

// Every method of the shopmesh protos, with the retry decision taken for it. A new method fails this test
// until someone decides: declare an idempotency_level in the proto (then it is retried) or add it here
// as IDEMPOTENCY_UNKNOWN on purpose (then it never is). A method may stay without a level only when it
// is listed here, so "nobody thought about it" cannot pass.
func TestEveryShopmeshMethodHasARetryDecision(t *testing.T) {
	t.Parallel()
	const (
		none       = descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
		read       = descriptorpb.MethodOptions_NO_SIDE_EFFECTS
		repeatable = descriptorpb.MethodOptions_IDEMPOTENT
	)
	want := map[string]descriptorpb.MethodOptions_IdempotencyLevel{
		"/shopmesh.order.v1.OrderService/CreateOrder":          repeatable, // idempotency_key is required
		"/shopmesh.order.v1.OrderService/GetOrder":             read,
		"/shopmesh.order.v1.OrderService/CancelOrder":          repeatable, // cancelling a cancelled order returns it
		"/shopmesh.order.v1.OrderService/WatchOrder":           read,
		"/shopmesh.order.v1.OrderService/Checkout":             none,       // bidi session: a retry would replay edits into a new one
		"/shopmesh.inventory.v1.InventoryService/ReserveStock": repeatable, // per order_id
		"/shopmesh.inventory.v1.InventoryService/ReleaseStock": repeatable,
		"/shopmesh.inventory.v1.InventoryService/CommitStock":  repeatable,
		"/shopmesh.inventory.v1.InventoryService/GetProduct":   read,
		"/shopmesh.inventory.v1.InventoryService/ListProducts": read,
		"/shopmesh.inventory.v1.InventoryService/WatchStock":   read,
		"/shopmesh.inventory.v1.InventoryService/ImportStock":  repeatable, // per import id + line sequence
		"/shopmesh.payment.v1.PaymentService/AuthorizePayment": repeatable, // per order_id
		"/shopmesh.payment.v1.PaymentService/CapturePayment":   repeatable,
		"/shopmesh.payment.v1.PaymentService/VoidPayment":      repeatable,
		"/shopmesh.payment.v1.PaymentService/GetAccount":       read,
	}
	got := map[string]descriptorpb.MethodOptions_IdempotencyLevel{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "shopmesh.") {
			return true
		}
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				got["/"+string(sd.FullName())+"/"+string(md.Name())] = dialer.IdempotencyLevel(md)
			}
		}
		return true
	})
	for m, level := range got {
		w, ok := want[m]
		switch {
		case !ok:
			t.Errorf("%s (idempotency_level %v) has no retry decision in this table", m, level)
		case w != level:
			t.Errorf("%s: idempotency_level %v, decided %v", m, level, w)
		}
	}
	for m := range want {
		if _, ok := got[m]; !ok {
			t.Errorf("%s is in the table but not in the protos", m)
		}
	}
	// And the service config retries exactly the methods with a level.
	retried := dialer.RetryableMethods(nil)
	for m, level := range got {
		if in := slices.Contains(retried, m); in != (level != none) {
			t.Errorf("%s: retried=%v with idempotency_level %v", m, in, level)
		}
	}
	t.Logf("%d shopmesh methods, %d retried", len(got), len(got)-countNone(got))
}

func countNone(m map[string]descriptorpb.MethodOptions_IdempotencyLevel) int {
	n := 0
	for _, l := range m {
		if l == descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN {
			n++
		}
	}
	return n
}
