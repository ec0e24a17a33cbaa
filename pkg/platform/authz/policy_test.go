package authz_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
)

const (
	gateway = "spiffe://shopmesh.local/gateway"
	order   = "spiffe://shopmesh.local/order"
	evil    = "spiffe://shopmesh.local/evil"
)

func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	p := authz.DefaultPolicy()
	for _, tc := range []struct {
		id, method string
		want       bool
	}{
		{gateway, "/shopmesh.order.v1.OrderService/CreateOrder", true},
		{gateway, "/shopmesh.order.v1.OrderService/Checkout", true},
		{order, "/shopmesh.order.v1.OrderService/GetOrder", false},
		{order, "/shopmesh.inventory.v1.InventoryService/ReserveStock", true},
		{gateway, "/shopmesh.inventory.v1.InventoryService/ReserveStock", false},
		{gateway, "/shopmesh.inventory.v1.InventoryService/ImportStock", true},
		{order, "/shopmesh.payment.v1.PaymentService/CapturePayment", true},
		{gateway, "/shopmesh.payment.v1.PaymentService/CapturePayment", false},
		{gateway, "/shopmesh.payment.v1.PaymentService/GetAccount", true},
		{evil, "/shopmesh.payment.v1.PaymentService/GetAccount", false},
		{evil, "/grpc.health.v1.Health/Check", true},
		{evil, "/grpc.health.v1.Health/Watch", true},
		{gateway, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false},
		{gateway, "/shopmesh.order.v1.OrderService/Unknown", true}, // service wildcard
		{gateway, "/shopmesh.order.v1.OrderServiceX/GetOrder", false},
		{gateway, "", false},
		{gateway, "/", false},
	} {
		if got := p.Allowed(tc.id, tc.method); got != tc.want {
			t.Errorf("%s → %s: got %v, want %v", tc.id, tc.method, got, tc.want)
		}
	}
	p.AllowReflection = true
	if !p.Allowed(gateway, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") {
		t.Error("reflection not allowed with AllowReflection")
	}
}

func TestParsePolicyRejects(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		"methods:\n  /a.B/C: [spiffe://other.domain/x]\n",
		"methods:\n  /a.B/C: [spiffe://shopmesh.local/X]\n",
		"methods:\n  /a.B/C: [spiffe://shopmesh.local/x/y]\n",
		"methods:\n  /a.B/C: [spiffe://shopmesh.local/x?q=1]\n",
		"methods:\n  a.B/C: [spiffe://shopmesh.local/x]\n",
		"methods:\n  /a.B/C*: [spiffe://shopmesh.local/x]\n",
		"methods:\n  /*/C: [spiffe://shopmesh.local/x]\n",
		"methods:\n  /a.B/C/D: [spiffe://shopmesh.local/x]\n",
		"method:\n  /a.B/C: [spiffe://shopmesh.local/x]\n", // unknown field
		"methods: [",
	} {
		if _, err := authz.ParsePolicy([]byte(doc)); err == nil {
			t.Errorf("accepted %q", doc)
		}
	}
	p, err := authz.ParsePolicy([]byte("methods:\n  /a.B/*: [spiffe://shopmesh.local/x, spiffe://shopmesh.local/x]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Rules()["/a.B/*"]; len(got) != 1 || !p.Allowed("spiffe://shopmesh.local/x", "/a.B/C") {
		t.Errorf("rules %v", got)
	}
}

func TestPolicyWithoutPeerIdentityDenies(t *testing.T) {
	t.Parallel()
	p := authz.DefaultPolicy()
	err := p.Authorize(context.Background(), "/shopmesh.order.v1.OrderService/GetOrder")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no verified peer") {
		t.Errorf("got %v", err)
	}
	if err := p.Authorize(context.Background(), "/grpc.health.v1.Health/Check"); err != nil {
		t.Errorf("health: %v", err)
	}
}

func TestLoadPolicy(t *testing.T) {
	t.Parallel()
	if p, err := authz.LoadPolicy(""); err != nil || len(p.Keys()) == 0 {
		t.Errorf("default: %v", err)
	}
	if _, err := authz.LoadPolicy(t.TempDir() + "/missing.yaml"); err == nil {
		t.Error("missing file accepted")
	}
}
