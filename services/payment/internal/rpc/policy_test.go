package rpc_test

import (
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
)

// Every method of the PaymentService has its own rule naming at least one caller, and no rule names a
// method the service does not have: a new RPC fails here until its callers are decided in Policy.
func TestPolicyDecidesEveryMethod(t *testing.T) {
	t.Parallel()
	if err := authz.CheckRules(rpc.Policy(), paymentv1.PaymentService_ServiceDesc); err != nil {
		t.Error(err)
	}
}
