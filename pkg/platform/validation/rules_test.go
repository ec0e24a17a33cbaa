package validation_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	bufvalidate "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/validation"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"

	_ "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

const orderID = "0b5e2f0c-8d3a-4c1e-9f7b-2a6d4e8c1f03"

// server is the validator a server chain uses (one protovalidate.Validator of its own).
var server = validation.NewProto()

func createOrder() *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		CustomerId:     "cust-0001",
		IdempotencyKey: "k-1",
		Items: []*orderv1.OrderItem{
			{Sku: "SKU-1001", Quantity: 2},
			{Sku: "SKU-1002", Quantity: 1},
		},
	}
}

func orderWith(mut func(*orderv1.CreateOrderRequest)) *orderv1.CreateOrderRequest {
	r := createOrder()
	mut(r)
	return r
}

func items(n int) []*orderv1.OrderItem {
	out := make([]*orderv1.OrderItem, n)
	for i := range out {
		out[i] = &orderv1.OrderItem{Sku: fmt.Sprintf("SKU-%d", i), Quantity: 1}
	}
	return out
}

func skus(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("SKU-%d", i)
	}
	return out
}

// v is a violation as tests write it; it prints like rpcerr.FieldViolation.
type v struct{ Field, Description string }

// TestProtoRules pins, rule by rule, the field paths and descriptions callers (and, through the gateway,
// HTTP clients) get: they are those of the validator shopmesh had before protovalidate, unchanged.
func TestProtoRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  proto.Message
		want []v // nil means valid
	}{
		{"nil message", nil, nil},
		{"typed nil message", (*orderv1.CreateOrderRequest)(nil), nil},
		{"valid create order", createOrder(), nil},
		{"customer dev account", orderWith(func(r *orderv1.CreateOrderRequest) { r.CustomerId = "cust-broke" }), nil},
		{"empty create order", &orderv1.CreateOrderRequest{}, []v{
			{"customer_id", "must not be empty"},
			{"idempotency_key", "must not be empty"},
			{"items", "must not be empty"},
		}},
		{"customer id pattern", orderWith(func(r *orderv1.CreateOrderRequest) { r.CustomerId = "Cust_1" }), []v{
			{"customer_id", "must match ^[a-z0-9][a-z0-9-]{0,63}$"},
		}},
		{"customer id too long", orderWith(func(r *orderv1.CreateOrderRequest) { r.CustomerId = strings.Repeat("a", 65) }), []v{
			{"customer_id", "must match ^[a-z0-9][a-z0-9-]{0,63}$"},
		}},
		{"idempotency key 128 runes ok", orderWith(func(r *orderv1.CreateOrderRequest) { r.IdempotencyKey = strings.Repeat("é", 128) }), nil},
		{"idempotency key too long", orderWith(func(r *orderv1.CreateOrderRequest) { r.IdempotencyKey = strings.Repeat("k", 129) }), []v{
			{"idempotency_key", "must be at most 128 characters"},
		}},
		{"nested quantity zero", orderWith(func(r *orderv1.CreateOrderRequest) { r.Items[1].Quantity = 0 }), []v{
			{"items[1].quantity", "must be at least 1"},
		}},
		{"nested quantity too big", orderWith(func(r *orderv1.CreateOrderRequest) { r.Items[0].Quantity = 1001 }), []v{
			{"items[0].quantity", "must be at most 1000"},
		}},
		{"nested sku pattern and empty", orderWith(func(r *orderv1.CreateOrderRequest) {
			r.Items[0].Sku = "sku-1"
			r.Items[1].Sku = ""
		}), []v{
			{"items[0].sku", "must match ^[A-Z0-9][A-Z0-9-]{1,31}$"},
			{"items[1].sku", "must not be empty"},
		}},
		{"50 items ok", orderWith(func(r *orderv1.CreateOrderRequest) { r.Items = items(50) }), nil},
		{"51 items", orderWith(func(r *orderv1.CreateOrderRequest) { r.Items = items(51) }), []v{
			{"items", "must contain at most 50 items"},
		}},
		{"order id uuid", &orderv1.GetOrderRequest{OrderId: orderID}, nil},
		{"order id uppercase uuid", &orderv1.GetOrderRequest{OrderId: strings.ToUpper(orderID)}, []v{
			{"order_id", "must match ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
		}},
		{"cancel reason too long", &orderv1.CancelOrderRequest{OrderId: orderID, Reason: strings.Repeat("x", 257)}, []v{
			{"reason", "must be at most 256 characters"},
		}},
		{"checkout without edit", &orderv1.CheckoutRequest{}, []v{
			{"edit", "must set one of: set_item, clear, refresh"},
		}},
		{"checkout clear", &orderv1.CheckoutRequest{Edit: &orderv1.CheckoutRequest_Clear{Clear: &orderv1.CartClear{}}}, nil},
		{"checkout remove item", &orderv1.CheckoutRequest{Edit: &orderv1.CheckoutRequest_SetItem{
			SetItem: &orderv1.CartSetItem{Sku: "SKU-1", Quantity: 0}}}, nil},
		{"checkout bad item", &orderv1.CheckoutRequest{Edit: &orderv1.CheckoutRequest_SetItem{
			SetItem: &orderv1.CartSetItem{Sku: "S", Quantity: -1}}}, []v{
			{"set_item.sku", "must match ^[A-Z0-9][A-Z0-9-]{1,31}$"},
			{"set_item.quantity", "must be at least 0"},
		}},
		{"response messages have no rules", &orderv1.CreateOrderResponse{Order: &orderv1.Order{Items: []*orderv1.OrderLine{{}}}}, nil},
		{"reserve stock", &inventoryv1.ReserveStockRequest{OrderId: orderID, Items: []*inventoryv1.ReservationItem{{Sku: "SKU-1", Quantity: 1001}}}, []v{
			{"items[0].quantity", "must be at most 1000"},
		}},
		{"list products bounds", &inventoryv1.ListProductsRequest{PageSize: 101}, []v{
			{"page_size", "must be at most 100"},
		}},
		{"list products negative", &inventoryv1.ListProductsRequest{PageSize: -1}, []v{
			{"page_size", "must be at least 0"},
		}},
		{"watch all stock", &inventoryv1.WatchStockRequest{}, nil},
		{"watch stock element", &inventoryv1.WatchStockRequest{Skus: []string{"SKU-1", "bad", ""}}, []v{
			{"skus[1]", "must match ^[A-Z0-9][A-Z0-9-]{1,31}$"},
			{"skus[2]", "must not be empty"},
		}},
		{"watch too many", &inventoryv1.WatchStockRequest{Skus: skus(101)}, []v{
			{"skus", "must contain at most 100 items"},
		}},
		{"import existing sku", &inventoryv1.ImportStockRequest{ImportId: "imp-1", Seq: 1, Sku: "SKU-1", Quantity: 1_000_000}, nil},
		{"import new sku", &inventoryv1.ImportStockRequest{ImportId: "0b0e6f2a-5a4e-4f1e-9c1d-2f3a4b5c6d7e", Seq: 2, Sku: "SKU-9", Quantity: 5,
			Name: proto.String("Mug"), PriceCents: proto.Int64(1299), Currency: proto.String("EUR")}, nil},
		{"import without identity", &inventoryv1.ImportStockRequest{Sku: "SKU-1", Quantity: 1}, []v{
			{"import_id", "must not be empty"},
			{"seq", "must be at least 1"},
		}},
		{"import bad identity", &inventoryv1.ImportStockRequest{ImportId: "-x y", Seq: -1, Sku: "SKU-1", Quantity: 1}, []v{
			{"import_id", "must match ^[A-Za-z0-9][A-Za-z0-9._:-]*$"},
			{"seq", "must be at least 1"},
		}},
		{"import id too long", &inventoryv1.ImportStockRequest{ImportId: strings.Repeat("a", 129), Seq: 1, Sku: "SKU-1", Quantity: 1}, []v{
			{"import_id", "must be at most 128 characters"},
		}},
		{"import bad optional fields", &inventoryv1.ImportStockRequest{ImportId: "imp-1", Seq: 3, Sku: "SKU-9", Quantity: 1_000_001,
			Name: proto.String(""), PriceCents: proto.Int64(0), Currency: proto.String("eur")}, []v{
			{"quantity", "must be at most 1000000"},
			{"name", "must not be empty"},
			{"price_cents", "must be greater than 0"},
			{"currency", "must match ^[A-Z]{3}$"},
		}},
		{"authorize ok", &paymentv1.AuthorizePaymentRequest{OrderId: orderID, CustomerId: "cust-0001", AmountCents: 1, Currency: "EUR"}, nil},
		{"authorize zero amount", &paymentv1.AuthorizePaymentRequest{OrderId: orderID, CustomerId: "cust-0001", Currency: "EUR"}, []v{
			{"amount_cents", "must be greater than 0"},
		}},
		{"get account empty", &paymentv1.GetAccountRequest{}, []v{{"customer_id", "must not be empty"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkViolations(t, validation.Proto(tt.msg), tt.want)
			checkViolations(t, server(tt.msg), tt.want)
		})
	}
}

func checkViolations(t *testing.T, err error, want []v) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("want valid, got %v", err)
		}
		return
	}
	var ve *validation.Error
	if !errors.As(err, &ve) {
		t.Fatalf("want *validation.Error, got %T %v", err, err)
	}
	if fmt.Sprint(ve.Violations) != fmt.Sprint(want) {
		t.Fatalf("violations:\n got  %v\n want %v", ve.Violations, want)
	}
	// What a caller receives: INVALID_ARGUMENT with the same violations in a BadRequest.
	st := validation.ToStatus(err)
	if status.Code(st) != codes.InvalidArgument || fmt.Sprint(rpcerr.Violations(st)) != fmt.Sprint(want) {
		t.Fatalf("status %v with violations %v, want INVALID_ARGUMENT with %v", status.Code(st), rpcerr.Violations(st), want)
	}
}

func TestErrorString(t *testing.T) {
	t.Parallel()
	err := validation.Proto(&orderv1.CreateOrderRequest{CustomerId: "cust-1", IdempotencyKey: "k-1", Items: []*orderv1.OrderItem{{Sku: "SKU-1"}}})
	const want = "invalid message: items[0].quantity: must be at least 1"
	if err == nil || err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}

// TestAllShopmeshMessages validates the zero value of every shopmesh message type: it proves every rule
// in the contracts compiles (the validator returns nil or *validation.Error, never a rule error), and
// that every violation got a shopmesh description rather than protovalidate's fallback message.
func TestAllShopmeshMessages(t *testing.T) {
	t.Parallel()
	n := 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if !strings.HasPrefix(string(mt.Descriptor().FullName()), "shopmesh.") {
			return true
		}
		n++
		var ve *validation.Error
		err := server(mt.New().Interface())
		if err != nil && !errors.As(err, &ve) {
			t.Errorf("%s: rule error: %v", mt.Descriptor().FullName(), err)
		}
		for _, fv := range violationsOf(err) {
			if !strings.HasPrefix(fv.Description, "must ") && fv.Description != "is required" {
				t.Errorf("%s: %s: description %q is not shopmesh's", mt.Descriptor().FullName(), fv.Field, fv.Description)
			}
		}
		return true
	})
	if n < 40 {
		t.Fatalf("only %d shopmesh message types registered", n)
	}
}

func violationsOf(err error) []rpcerr.FieldViolation {
	var ve *validation.Error
	if errors.As(err, &ve) {
		return ve.Violations
	}
	return nil
}

// probe builds a dynamic message type exercising rules the shopmesh contracts do not use yet (enum
// rules, required, maps, unsigned ints, multi-character min_len, min_items > 1, a gt/lte range, an
// invalid pattern).
func probe(t *testing.T) (probeMD, badMD, wholeMD protoreflect.MessageDescriptor) {
	t.Helper()
	rules := func(r *bufvalidate.FieldRules) *descriptorpb.FieldOptions {
		o := &descriptorpb.FieldOptions{}
		proto.SetExtension(o, bufvalidate.E_Field, r)
		return o
	}
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, typeName string, o *descriptorpb.FieldOptions) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum(), Options: o}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	const (
		opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	)
	// A message-level rule on a type whose fields have none: it must not be skipped as rule-free.
	wholeRule := &descriptorpb.MessageOptions{}
	proto.SetExtension(wholeRule, bufvalidate.E_Message, bufvalidate.MessageRules_builder{Cel: []*bufvalidate.Rule{
		bufvalidate.Rule_builder{Id: proto.String("a_below_b"), Expression: proto.String("this.a < this.b ? '' : 'a must be below b'")}.Build(),
	}}.Build())
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("validation_test/probe.proto"),
		Package:    proto.String("shopmeshtest.validation"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"buf/validate/validate.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Color"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("COLOR_RED"), Number: proto.Int32(1)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Child"), Field: []*descriptorpb.FieldDescriptorProto{
				field("n", 1, descriptorpb.FieldDescriptorProto_TYPE_INT32, opt, "",
					rules(bufvalidate.FieldRules_builder{Int32: bufvalidate.Int32Rules_builder{Gte: proto.Int32(1)}.Build()}.Build())),
			}},
			{Name: proto.String("Probe"), Field: []*descriptorpb.FieldDescriptorProto{
				field("color", 1, descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt, ".shopmeshtest.validation.Color",
					rules(bufvalidate.FieldRules_builder{Enum: bufvalidate.EnumRules_builder{DefinedOnly: proto.Bool(true), NotIn: []int32{0}}.Build()}.Build())),
				field("colors", 2, descriptorpb.FieldDescriptorProto_TYPE_ENUM, rep, ".shopmeshtest.validation.Color",
					rules(bufvalidate.FieldRules_builder{Repeated: bufvalidate.RepeatedRules_builder{MinItems: proto.Uint64(2),
						Items: bufvalidate.FieldRules_builder{Enum: bufvalidate.EnumRules_builder{DefinedOnly: proto.Bool(true)}.Build()}.Build()}.Build()}.Build())),
				field("child", 3, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, opt, ".shopmeshtest.validation.Child",
					rules(bufvalidate.FieldRules_builder{Required: proto.Bool(true)}.Build())),
				field("kids", 4, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, rep, ".shopmeshtest.validation.Probe.KidsEntry", nil),
				field("big", 5, descriptorpb.FieldDescriptorProto_TYPE_UINT64, opt, "",
					rules(bufvalidate.FieldRules_builder{Uint64: bufvalidate.UInt64Rules_builder{Lte: proto.Uint64(10)}.Build()}.Build())),
				field("code", 6, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, "",
					rules(bufvalidate.FieldRules_builder{String: bufvalidate.StringRules_builder{MinLen: proto.Uint64(3)}.Build()}.Build())),
				field("pct", 7, descriptorpb.FieldDescriptorProto_TYPE_SINT64, opt, "",
					rules(bufvalidate.FieldRules_builder{Sint64: bufvalidate.SInt64Rules_builder{Gt: proto.Int64(0), Lte: proto.Int64(100)}.Build()}.Build())),
			}, NestedType: []*descriptorpb.DescriptorProto{{
				Name:    proto.String("KidsEntry"),
				Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				Field: []*descriptorpb.FieldDescriptorProto{
					field("key", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, "", nil),
					field("value", 2, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, opt, ".shopmeshtest.validation.Child", nil),
				},
			}}},
			{Name: proto.String("Whole"), Options: wholeRule, Field: []*descriptorpb.FieldDescriptorProto{
				field("a", 1, descriptorpb.FieldDescriptorProto_TYPE_INT32, opt, "", nil),
				field("b", 2, descriptorpb.FieldDescriptorProto_TYPE_INT32, opt, "", nil),
			}},
			{Name: proto.String("BadPattern"), Field: []*descriptorpb.FieldDescriptorProto{
				field("s", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, "",
					rules(bufvalidate.FieldRules_builder{String: bufvalidate.StringRules_builder{Pattern: proto.String("(")}.Build()}.Build())),
			}},
		},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Probe"), fd.Messages().ByName("BadPattern"), fd.Messages().ByName("Whole")
}

func TestRulesNotUsedByContracts(t *testing.T) {
	t.Parallel()
	probeMD, badMD, wholeMD := probe(t)
	f := probeMD.Fields()
	childMD := f.ByName("child").Message()
	child := func(n int64) protoreflect.Value {
		c := dynamicpb.NewMessage(childMD)
		c.Set(childMD.Fields().ByName("n"), protoreflect.ValueOfInt32(int32(n)))
		return protoreflect.ValueOfMessage(c)
	}

	empty := dynamicpb.NewMessage(probeMD)
	want := []v{
		{Field: "color", Description: "must not be COLOR_UNSPECIFIED"},
		{Field: "colors", Description: "must contain at least 2 items"},
		{Field: "child", Description: "is required"},
		{Field: "code", Description: "must be at least 3 characters"},
		{Field: "pct", Description: "must be greater than 0"},
	}
	checkViolations(t, validation.Proto(empty), want)
	checkViolations(t, server(empty), want)

	m := dynamicpb.NewMessage(probeMD)
	m.Set(f.ByName("color"), protoreflect.ValueOfEnum(7))
	colors := m.Mutable(f.ByName("colors")).List()
	colors.Append(protoreflect.ValueOfEnum(1))
	colors.Append(protoreflect.ValueOfEnum(9))
	m.Set(f.ByName("child"), child(0))
	m.Mutable(f.ByName("kids")).Map().Set(protoreflect.ValueOfString("a").MapKey(), child(0))
	m.Set(f.ByName("big"), protoreflect.ValueOfUint64(1<<63+5))
	m.Set(f.ByName("code"), protoreflect.ValueOfString("abc"))
	m.Set(f.ByName("pct"), protoreflect.ValueOfInt64(101))
	want = []v{
		{Field: "color", Description: "must be a defined Color value"},
		{Field: "colors[1]", Description: "must be a defined Color value"},
		{Field: "child.n", Description: "must be at least 1"},
		{Field: `kids["a"].n`, Description: "must be at least 1"},
		{Field: "big", Description: "must be at most 10"},
		{Field: "pct", Description: "must be at most 100"},
	}
	checkViolations(t, validation.Proto(m), want)
	checkViolations(t, server(m), want)

	// A rule shopmesh has no description for keeps protovalidate's message; the path is empty for a
	// message-level rule.
	checkViolations(t, server(dynamicpb.NewMessage(wholeMD)), []v{{Field: "", Description: "a must be below b"}})

	// A malformed rule is the server's fault: INTERNAL, and its text stays inside.
	for _, check := range []validation.Func{validation.Proto, server} {
		err := check(dynamicpb.NewMessage(badMD))
		var ve *validation.Error
		if err == nil || errors.As(err, &ve) {
			t.Fatalf("want a rule error for an invalid pattern, got %v", err)
		}
		if st := validation.ToStatus(err); status.Code(st) != codes.Internal {
			t.Fatalf("invalid pattern: %v, want INTERNAL", st)
		}
	}
}

func TestConcurrentFirstUse(t *testing.T) {
	t.Parallel()
	// A fresh validator compiles rules on first use; racing first uses must agree (run with -race).
	check := validation.NewProto()
	done := make(chan error)
	for range 8 {
		go func() { done <- check(&inventoryv1.ReserveStockRequest{}) }()
	}
	for range 8 {
		if err := <-done; len(violationsOf(err)) != 2 {
			t.Errorf("got %v, want 2 violations", err)
		}
	}
}

// FuzzValidate: whatever a client sends, validation answers valid or with field violations, never a
// panic or a rule error.
func FuzzValidate(f *testing.F) {
	for _, m := range []proto.Message{createOrder(), &orderv1.CreateOrderRequest{}, orderWith(func(r *orderv1.CreateOrderRequest) {
		r.CustomerId = "BAD"
		r.Items = items(60)
		r.Items[3].Quantity = -5
	})} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	check := validation.NewProto()
	f.Fuzz(func(t *testing.T, data []byte) {
		var req orderv1.CreateOrderRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		err := check(&req)
		var ve *validation.Error
		if err != nil && (!errors.As(err, &ve) || len(ve.Violations) == 0) {
			t.Fatalf("unexpected error %T: %v", err, err)
		}
	})
}
