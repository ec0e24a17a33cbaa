package validation_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"

	"github.com/shopmesh/shopmesh/pkg/platform/validation"
)

// BenchmarkUnaryInterceptor is the validation stage of the server chain for one request: a message
// without rules (the echo benchmark's), a valid shopmesh request with rules, and the same request with
// two broken rules (the INVALID_ARGUMENT status with its BadRequest included).
func BenchmarkUnaryInterceptor(b *testing.B) {
	handler := func(context.Context, any) (any, error) { return nil, nil }
	info := &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"}
	cases := []struct {
		name string
		req  any
	}{
		{"no-rules", &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 64)}}},
		{"order", validOrder()},
		{"order-invalid", invalidOrder()},
	}
	validators := []struct {
		name string
		f    func() validation.Func
	}{
		{"cached", validation.NewProto},
		{"walk", func() validation.Func { return validation.Proto }},
	}
	for _, c := range cases {
		for _, v := range validators {
			b.Run(c.name+"/"+v.name, func(b *testing.B) {
				in := validation.UnaryServerInterceptor(v.f())
				ctx := context.Background()
				if _, err := in(ctx, c.req, info, handler); (err != nil) != (c.name == "order-invalid") {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					_, _ = in(ctx, c.req, info, handler)
				}
			})
		}
	}
}

func validOrder() *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		CustomerId:     "cust-0001",
		IdempotencyKey: "k-1",
		Items: []*orderv1.OrderItem{
			{Sku: "SKU-0001", Quantity: 2},
			{Sku: "SKU-0002", Quantity: 1},
		},
	}
}

func invalidOrder() *orderv1.CreateOrderRequest {
	r := validOrder()
	r.CustomerId = ""
	r.Items[1].Quantity = 0
	return r
}
