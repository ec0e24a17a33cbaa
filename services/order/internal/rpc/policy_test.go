package rpc_test

import (
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
)

// Every method of the OrderService has its own rule naming at least one caller, and no rule names a
// method the service does not have: a new RPC fails here until its callers are decided in Policy.
func TestPolicyDecidesEveryMethod(t *testing.T) {
	t.Parallel()
	if err := authz.CheckRules(rpc.Policy(), orderv1.OrderService_ServiceDesc); err != nil {
		t.Error(err)
	}
}
