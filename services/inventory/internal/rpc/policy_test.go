package rpc_test

import (
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
)

// Every method of the InventoryService has its own rule naming at least one caller, and no rule names a
// method the service does not have: a new RPC fails here until its callers are decided in Policy.
func TestPolicyDecidesEveryMethod(t *testing.T) {
	t.Parallel()
	if err := authz.CheckRules(rpc.Policy(), inventoryv1.InventoryService_ServiceDesc); err != nil {
		t.Error(err)
	}
}
