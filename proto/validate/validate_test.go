package validate_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	validatev1 "github.com/shopmesh/shopmesh/proto/gen/go/validate/v1"
	"github.com/shopmesh/shopmesh/proto/validate"

	_ "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

const orderID = "0b5e2f0c-8d3a-4c1e-9f7b-2a6d4e8c1f03"

func validOrder() *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		CustomerId:     "cust-0001",
		IdempotencyKey: "k-1",
		Items: []*orderv1.OrderItem{
			{Sku: "SKU-1001", Quantity: 2},
			{Sku: "SKU-1002", Quantity: 1},
		},
	}
}

func order(mut func(*orderv1.CreateOrderRequest)) *orderv1.CreateOrderRequest {
	r := validOrder()
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

type v = validate.FieldViolation

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		msg  proto.Message
		want []v // nil means valid
	}{
		{"nil message", nil, nil},
		{"typed nil message", (*orderv1.CreateOrderRequest)(nil), nil},
		{"valid create order", validOrder(), nil},
		{"customer dev account", order(func(r *orderv1.CreateOrderRequest) { r.CustomerId = "cust-broke" }), nil},
		{"empty create order", &orderv1.CreateOrderRequest{}, []v{
			{"customer_id", "must not be empty"},
			{"idempotency_key", "must not be empty"},
			{"items", "must not be empty"},
		}},
		{"customer id pattern", order(func(r *orderv1.CreateOrderRequest) { r.CustomerId = "Cust_1" }), []v{
			{"customer_id", "must match ^[a-z0-9][a-z0-9-]{0,63}$"},
		}},
		{"customer id too long", order(func(r *orderv1.CreateOrderRequest) { r.CustomerId = strings.Repeat("a", 65) }), []v{
			{"customer_id", "must match ^[a-z0-9][a-z0-9-]{0,63}$"},
		}},
		{"idempotency key 128 runes ok", order(func(r *orderv1.CreateOrderRequest) { r.IdempotencyKey = strings.Repeat("é", 128) }), nil},
		{"idempotency key too long", order(func(r *orderv1.CreateOrderRequest) { r.IdempotencyKey = strings.Repeat("k", 129) }), []v{
			{"idempotency_key", "must be at most 128 characters"},
		}},
		{"nested quantity zero", order(func(r *orderv1.CreateOrderRequest) { r.Items[1].Quantity = 0 }), []v{
			{"items[1].quantity", "must be at least 1"},
		}},
		{"nested quantity too big", order(func(r *orderv1.CreateOrderRequest) { r.Items[0].Quantity = 1001 }), []v{
			{"items[0].quantity", "must be at most 1000"},
		}},
		{"nested sku pattern and empty", order(func(r *orderv1.CreateOrderRequest) {
			r.Items[0].Sku = "sku-1"
			r.Items[1].Sku = ""
		}), []v{
			{"items[0].sku", "must match ^[A-Z0-9][A-Z0-9-]{1,31}$"},
			{"items[1].sku", "must not be empty"},
		}},
		{"50 items ok", order(func(r *orderv1.CreateOrderRequest) { r.Items = items(50) }), nil},
		{"51 items", order(func(r *orderv1.CreateOrderRequest) { r.Items = items(51) }), []v{
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
			checkViolations(t, validate.Validate(tt.msg), tt.want)
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
	var ve *validate.Error
	if !errors.As(err, &ve) {
		t.Fatalf("want *validate.Error, got %T %v", err, err)
	}
	if fmt.Sprint(ve.Violations) != fmt.Sprint(want) {
		t.Fatalf("violations:\n got  %v\n want %v", ve.Violations, want)
	}
}

func TestErrorString(t *testing.T) {
	err := validate.Validate(&orderv1.CreateOrderRequest{CustomerId: "cust-1", IdempotencyKey: "k-1", Items: []*orderv1.OrderItem{{Sku: "SKU-1"}}})
	const want = "invalid message: items[0].quantity: must be at least 1"
	if err == nil || err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}

// TestAllShopmeshMessages validates the zero value of every shopmesh message
// type: it proves every rule in the schema is well-formed (Validate returns
// either nil or *validate.Error, never a schema error).
func TestAllShopmeshMessages(t *testing.T) {
	n := 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if !strings.HasPrefix(string(mt.Descriptor().FullName()), "shopmesh.") {
			return true
		}
		n++
		var ve *validate.Error
		if err := validate.Validate(mt.New().Interface()); err != nil && !errors.As(err, &ve) {
			t.Errorf("%s: schema error: %v", mt.Descriptor().FullName(), err)
		}
		return true
	})
	if n < 40 {
		t.Fatalf("only %d shopmesh message types registered", n)
	}
}

// probe builds a dynamic message type exercising rules the shopmesh
// contracts do not use yet (enum rules, required, maps, unsigned ints,
// multi-character min_len, min_items > 1, invalid patterns).
func probe(t *testing.T) (probeMD, badMD protoreflect.MessageDescriptor) {
	t.Helper()
	rules := func(r *validatev1.FieldRules) *descriptorpb.FieldOptions {
		o := &descriptorpb.FieldOptions{}
		proto.SetExtension(o, validatev1.E_Rules, r)
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
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("validate_test/probe.proto"),
		Package:    proto.String("shopmeshtest.validate"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"shopmesh/validate/v1/validate.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Color"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("COLOR_RED"), Number: proto.Int32(1)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Child"), Field: []*descriptorpb.FieldDescriptorProto{
				field("n", 1, descriptorpb.FieldDescriptorProto_TYPE_INT32, opt, "", rules(&validatev1.FieldRules{Int: &validatev1.IntRules{Gte: proto.Int64(1)}})),
			}},
			{Name: proto.String("Probe"), Field: []*descriptorpb.FieldDescriptorProto{
				field("color", 1, descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt, ".shopmeshtest.validate.Color",
					rules(&validatev1.FieldRules{Enum: &validatev1.EnumRules{DefinedOnly: true, NotIn: []int32{0}}})),
				field("colors", 2, descriptorpb.FieldDescriptorProto_TYPE_ENUM, rep, ".shopmeshtest.validate.Color",
					rules(&validatev1.FieldRules{Enum: &validatev1.EnumRules{DefinedOnly: true}, Repeated: &validatev1.RepeatedRules{MinItems: 2}})),
				field("child", 3, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, opt, ".shopmeshtest.validate.Child",
					rules(&validatev1.FieldRules{Required: true})),
				field("kids", 4, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, rep, ".shopmeshtest.validate.Probe.KidsEntry", nil),
				field("big", 5, descriptorpb.FieldDescriptorProto_TYPE_UINT64, opt, "",
					rules(&validatev1.FieldRules{Int: &validatev1.IntRules{Lte: proto.Int64(10)}})),
				field("code", 6, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, "",
					rules(&validatev1.FieldRules{String_: &validatev1.StringRules{MinLen: 3}})),
			}, NestedType: []*descriptorpb.DescriptorProto{{
				Name:    proto.String("KidsEntry"),
				Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				Field: []*descriptorpb.FieldDescriptorProto{
					field("key", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, "", nil),
					field("value", 2, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, opt, ".shopmeshtest.validate.Child", nil),
				},
			}}},
			{Name: proto.String("BadPattern"), Field: []*descriptorpb.FieldDescriptorProto{
				field("s", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, "",
					rules(&validatev1.FieldRules{String_: &validatev1.StringRules{Pattern: "("}})),
			}},
		},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Probe"), fd.Messages().ByName("BadPattern")
}

func TestRulesNotUsedByContracts(t *testing.T) {
	probeMD, badMD := probe(t)
	f := probeMD.Fields()
	childMD := f.ByName("child").Message()
	child := func(n int64) protoreflect.Value {
		c := dynamicpb.NewMessage(childMD)
		c.Set(childMD.Fields().ByName("n"), protoreflect.ValueOfInt32(int32(n)))
		return protoreflect.ValueOfMessage(c)
	}

	empty := dynamicpb.NewMessage(probeMD)
	checkViolations(t, validate.Validate(empty), []v{
		{"color", "must not be COLOR_UNSPECIFIED"},
		{"colors", "must contain at least 2 items"},
		{"child", "is required"},
		{"code", "must be at least 3 characters"},
	})

	m := dynamicpb.NewMessage(probeMD)
	m.Set(f.ByName("color"), protoreflect.ValueOfEnum(7))
	colors := m.Mutable(f.ByName("colors")).List()
	colors.Append(protoreflect.ValueOfEnum(1))
	colors.Append(protoreflect.ValueOfEnum(9))
	m.Set(f.ByName("child"), child(0))
	m.Mutable(f.ByName("kids")).Map().Set(protoreflect.ValueOfString("a").MapKey(), child(0))
	m.Set(f.ByName("big"), protoreflect.ValueOfUint64(1<<63+5))
	m.Set(f.ByName("code"), protoreflect.ValueOfString("abc"))
	checkViolations(t, validate.Validate(m), []v{
		{"color", "must be a defined Color value"},
		{"colors[1]", "must be a defined Color value"},
		{"child.n", "must be at least 1"},
		{`kids["a"].n`, "must be at least 1"},
		{"big", "must be at most 10"},
	})

	err := validate.Validate(dynamicpb.NewMessage(badMD))
	var ve *validate.Error
	if err == nil || errors.As(err, &ve) || !strings.Contains(err.Error(), "invalid pattern") {
		t.Fatalf("want schema error for invalid pattern, got %v", err)
	}
}

func TestConcurrentFirstUse(t *testing.T) {
	// Plans are built lazily; racing first uses must agree (run with -race).
	done := make(chan error)
	for range 8 {
		go func() { done <- validate.Validate(&inventoryv1.ReserveStockRequest{}) }()
	}
	for range 8 {
		if err := <-done; err == nil {
			t.Error("want violations")
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	valid := order(func(r *orderv1.CreateOrderRequest) { r.Items = items(10) })
	invalid := order(func(r *orderv1.CreateOrderRequest) { r.CustomerId = ""; r.Items[0].Quantity = 0 })
	b.Run("valid_10_items", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := validate.Validate(valid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("invalid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := validate.Validate(invalid); err == nil {
				b.Fatal("want error")
			}
		}
	})
}

func FuzzValidate(f *testing.F) {
	for _, m := range []proto.Message{validOrder(), &orderv1.CreateOrderRequest{}, order(func(r *orderv1.CreateOrderRequest) {
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
	f.Fuzz(func(t *testing.T, data []byte) {
		var req orderv1.CreateOrderRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		err := validate.Validate(&req)
		var ve *validate.Error
		if err != nil && (!errors.As(err, &ve) || len(ve.Violations) == 0) {
			t.Fatalf("unexpected error %T: %v", err, err)
		}
	})
}
