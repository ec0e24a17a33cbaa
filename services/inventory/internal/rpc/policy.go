package rpc

import (
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
)

// Policy says who may call each method of the InventoryService (main passes it to platform.WithPolicy;
// deny by default, enforced with mTLS on; <P>_AUTHZ_POLICY_FILE replaces it). A new RPC needs its own
// line here (TestPolicyDecidesEveryMethod).
func Policy() authz.Rules {
	return authz.Rules{
		// Reads: the edge (catalog, stock stream) and order (quotes, prices).
		inventoryv1.InventoryService_GetProduct_FullMethodName:   {authz.Edge, "order"},
		inventoryv1.InventoryService_ListProducts_FullMethodName: {authz.Edge, "order"},
		inventoryv1.InventoryService_WatchStock_FullMethodName:   {authz.Edge, "order"},
		// Stock import is an admin action behind the edge (which checks the admin scope).
		inventoryv1.InventoryService_ImportStock_FullMethodName: {authz.Edge},
		// The order saga.
		inventoryv1.InventoryService_ReserveStock_FullMethodName: {"order"},
		inventoryv1.InventoryService_ReleaseStock_FullMethodName: {"order"},
		inventoryv1.InventoryService_CommitStock_FullMethodName:  {"order"},
	}
}
