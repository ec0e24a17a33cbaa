package rpc

import (
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// Policy says who may call each method of the PaymentService (main passes it to platform.WithPolicy;
// deny by default, enforced with mTLS on; <P>_AUTHZ_POLICY_FILE replaces it). A new RPC needs its own
// line here (TestPolicyDecidesEveryMethod).
func Policy() authz.Rules {
	return authz.Rules{
		// The order saga.
		paymentv1.PaymentService_AuthorizePayment_FullMethodName: {"order"},
		paymentv1.PaymentService_CapturePayment_FullMethodName:   {"order"},
		paymentv1.PaymentService_VoidPayment_FullMethodName:      {"order"},
		// A customer's balance, read through the edge.
		paymentv1.PaymentService_GetAccount_FullMethodName: {authz.Edge},
	}
}
