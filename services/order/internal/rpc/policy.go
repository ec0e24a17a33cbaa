package rpc

import (
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
)

// Policy says who may call each method of the OrderService (main passes it to platform.WithPolicy;
// deny by default, enforced with mTLS on; <P>_AUTHZ_POLICY_FILE replaces it). Every method is
// customer-facing: only the edge (the gateway), which authenticated the customer, calls them. A new RPC
// needs its own line here (TestPolicyDecidesEveryMethod).
func Policy() authz.Rules {
	return authz.Rules{
		orderv1.OrderService_CreateOrder_FullMethodName: {authz.Edge},
		orderv1.OrderService_GetOrder_FullMethodName:    {authz.Edge},
		orderv1.OrderService_CancelOrder_FullMethodName: {authz.Edge},
		orderv1.OrderService_WatchOrder_FullMethodName:  {authz.Edge},
		orderv1.OrderService_Checkout_FullMethodName:    {authz.Edge},
	}
}
