package validation_test

import (
	"strings"
	"testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"

	"github.com/shopmesh/shopmesh/pkg/platform/validation"
)

// TestNewProtoAgreesWithProto: the cached validator gives the same answer as the plain walk for every
// shopmesh message type, empty (which breaks most rules) and with a valid example, so skipping the types
// it finds rule-free loses nothing.
func TestNewProtoAgreesWithProto(t *testing.T) {
	t.Parallel()
	// Referenced so their files are registered.
	_ = []proto.Message{&eventsv1.OrderCreated{}, &inventoryv1.ReserveStockRequest{}, &orderv1.Order{}, &paymentv1.AuthorizePaymentRequest{}}
	cached := validation.NewProto()
	n, withRules := 0, 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if !strings.HasPrefix(string(mt.Descriptor().FullName()), "shopmesh.") {
			return true
		}
		n++
		m := mt.New().Interface()
		want, got := validation.Proto(m), cached(m)
		if want != nil {
			withRules++
		}
		if (want == nil) != (got == nil) || want != nil && want.Error() != got.Error() {
			t.Errorf("%s: NewProto = %v, Proto = %v", mt.Descriptor().FullName(), got, want)
		}
		return true
	})
	if n < 10 || withRules == 0 {
		t.Fatalf("checked %d shopmesh types (%d with violations when empty): registry not loaded?", n, withRules)
	}
	for _, m := range []proto.Message{validOrder(), &testpb.SimpleRequest{}, nil} {
		if err := cached(m); err != nil {
			t.Errorf("%T: %v, want valid", m, err)
		}
	}
	bad := validOrder()
	bad.Items[1].Quantity = 0
	if err := cached(bad); err == nil || !strings.Contains(err.Error(), "items[1].quantity") {
		t.Errorf("invalid nested item: %v, want a violation on items[1].quantity", err)
	}
}
